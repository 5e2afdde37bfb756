with

orders as (
    select * from {{ ref('stg_shop__orders') }}
),

touched_orders as (
    {{ select_touched_orders('orders') }}
),

final as (
    select distinct customer_id
    from touched_orders
)

select * from final
