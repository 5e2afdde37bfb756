with

orders as (
    select * from {{ ref('stg_shop__orders') }}
),

touched_orders as (
    {{ select_touched_orders('orders') }}
),

owned_days as (
    {{ select_owned_days('touched_orders') }}
),

final as (
    select sales_date
    from owned_days
)

select * from final
