-- Customers ranked by lifetime revenue; ordered by rank so that
-- `select * from top_customers limit 10` returns the top ten.
with

customer_analytics as (
    select * from {{ ref('customer_analytics') }}
),

customer_revenue_ranks as (
    select
        customer_id,
        customer_name,
        region,
        total_orders,
        total_items,
        total_revenue,
        avg_order_value,
        first_order_date,
        last_order_date,
        as_of_date,
        rank() over (order by total_revenue desc) as revenue_rank,
        sum(total_revenue) over () as revenue_of_all_customers,
        sum(total_revenue) over (
            order by total_revenue desc, customer_id asc
            rows between unbounded preceding and current row
        ) as cumulative_revenue,
        max(as_of_date) over () as latest_as_of_date
    from customer_analytics
),

final as (
    select
        revenue_rank,
        customer_id,
        customer_name,
        region,
        total_orders,
        total_items,
        total_revenue,
        avg_order_value,
        first_order_date,
        last_order_date,
        as_of_date,
        round(100 * total_revenue / nullif(revenue_of_all_customers, 0), 2) as revenue_share_pct,
        round(
            100 * cumulative_revenue / nullif(revenue_of_all_customers, 0), 2
        ) as cumulative_revenue_share_pct,
        latest_as_of_date - last_order_date as days_since_last_order
    from customer_revenue_ranks
    order by revenue_rank asc, customer_id asc
)

select * from final
