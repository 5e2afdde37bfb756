with

customers as (
    select * from {{ ref('stg_shop__customers') }}
),

owned_day_orders as (
    select * from {{ ref('int_owned_day_orders') }}
),

order_items as (
    select * from {{ ref('stg_shop__order_items') }}
),

-- Shared with int_customer_days: a macro, as macros/order_totals.sql says why.
order_totals as (
    {{ select_order_totals('owned_day_orders', 'order_items') }}
),

region_day_totals as (
    select
        order_totals.sales_date,
        customers.region,
        count(*) as order_count,
        count(distinct order_totals.customer_id) as customer_count,
        sum(order_totals.item_count) as units_sold,
        sum(order_totals.revenue) as revenue
    from order_totals
    inner join customers
        on order_totals.customer_id = customers.customer_id
    group by
        order_totals.sales_date,
        customers.region
),

final as (
    select
        sales_date,
        region,
        order_count,
        customer_count,
        cast(units_sold as bigint) as units_sold,
        cast(revenue as numeric(14, 2)) as revenue,
        cast(round(revenue / order_count, 2) as numeric(14, 2)) as avg_order_value
    from region_day_totals
)

select * from final
