-- `not materialized`: orders is read twice, and a materialized CTE would scan the
-- whole source table instead of using its indexes.
with

customers as (
    select * from {{ ref('stg_shop__customers') }}
),

orders as not materialized (
    select * from {{ ref('stg_shop__orders') }}
),

order_items as (
    select * from {{ ref('stg_shop__order_items') }}
),

touched_orders as (
    {{ select_touched_orders('orders') }}
),

owned_customers as (
    select distinct customer_id
    from touched_orders
),

counted_orders as (
    select
        orders.order_id,
        orders.customer_id,
        {{ business_date('orders.ordered_at') }} as order_date
    from owned_customers
    inner join orders
        on owned_customers.customer_id = orders.customer_id
    where
        orders.status != 'cancelled'
        and {{ ordered_through_run_date('orders.ordered_at') }}
),

order_totals as (
    select
        counted_orders.order_id,
        counted_orders.customer_id,
        counted_orders.order_date,
        coalesce(sum(order_items.quantity), 0) as item_count,
        coalesce(sum(order_items.quantity * order_items.unit_price), 0) as revenue
    from counted_orders
    left join order_items
        on counted_orders.order_id = order_items.order_id
    group by
        counted_orders.order_id,
        counted_orders.customer_id,
        counted_orders.order_date
),

customer_totals as (
    select
        customer_id,
        count(*) as total_orders,
        sum(item_count) as total_items,
        sum(revenue) as total_revenue,
        min(order_date) as first_order_date,
        max(order_date) as last_order_date
    from order_totals
    group by customer_id
),

final as (
    select
        customer_totals.customer_id,
        customers.customer_name,
        customers.region,
        customer_totals.total_orders,
        cast(customer_totals.total_items as bigint) as total_items,
        cast(customer_totals.total_revenue as numeric(14, 2)) as total_revenue,
        cast(
            round(customer_totals.total_revenue / customer_totals.total_orders, 2)
            as numeric(14, 2)
        ) as avg_order_value,
        customer_totals.first_order_date,
        customer_totals.last_order_date,
        {{ as_of_date('orders') }} as as_of_date
    from customer_totals
    inner join customers
        on customer_totals.customer_id = customers.customer_id
)

select * from final
