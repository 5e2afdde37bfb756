-- Lifetime totals of the owned customers, from their days in int_customer_days:
-- what a night reads grows with the customers it touches and the days they bought
-- on, not with every order line of their history.
with

customers as (
    select * from {{ ref('stg_shop__customers') }}
),

orders as (
    select * from {{ ref('stg_shop__orders') }}
),

customer_days as (
    select * from {{ ref('int_customer_days') }}
),

touched_orders as (
    {{ select_touched_orders('orders') }}
),

owned_customers as (
    select distinct customer_id
    from touched_orders
),

customer_totals as (
    select
        customer_id,
        cast(sum(order_count) as bigint) as total_orders,
        sum(item_count) as total_items,
        sum(revenue) as total_revenue,
        min(order_date) as first_order_date,
        max(order_date) as last_order_date
    from customer_days
    where
        {{ owned_customer_filter('customer_id', 'owned_customers') }}
        and {{ on_or_before_run_date('order_date') }}
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
