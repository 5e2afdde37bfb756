with

touched_orders as (
    select * from {{ ref('int_touched_orders') }}
),

final as (
    select distinct customer_id
    from touched_orders
)

select * from final
