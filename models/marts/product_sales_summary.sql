with

owned_day_orders as (
    select * from {{ ref('int_owned_day_orders') }}
),

order_items as (
    select * from {{ ref('stg_shop__order_items') }}
),

products as (
    select * from {{ ref('stg_shop__products') }}
),

product_day_totals as (
    select
        owned_day_orders.sales_date,
        order_items.product_id,
        count(distinct owned_day_orders.order_id) as order_count,
        sum(order_items.quantity) as units_sold,
        sum(order_items.quantity * order_items.unit_price) as revenue
    from owned_day_orders
    inner join order_items
        on owned_day_orders.order_id = order_items.order_id
    group by
        owned_day_orders.sales_date,
        order_items.product_id
),

final as (
    select
        product_day_totals.sales_date,
        product_day_totals.product_id,
        products.product_name,
        products.category,
        product_day_totals.order_count,
        cast(product_day_totals.units_sold as bigint) as units_sold,
        cast(product_day_totals.revenue as numeric(14, 2)) as revenue
    from product_day_totals
    inner join products
        on product_day_totals.product_id = products.product_id
)

select * from final
