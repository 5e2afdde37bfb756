-- Customers ranked by lifetime revenue; ordered by rank so that
-- `select * from top_customers limit 10` returns the top ten.
--
-- Written so that a LIMIT reads only the rows it returns: the ranking's order is
-- the index customer_analytics_revenue_rank_idx (total_revenue desc, customer_id),
-- the window functions need no look-ahead (rank, a running sum), and the two
-- figures over all customers come from one row, not from a scan of every customer.
with

customer_analytics as (
    select * from {{ ref('customer_analytics') }}
),

customer_totals as (
    {#- On the analytics database the load keeps these figures in customer_totals,
        in the same transaction as the rows (`etl init` creates the table). Where the
        marts are built by dbt (a local `dbt build`), they are aggregated here. #}
    {%- if target.name == 'analytics' %}
        select
            revenue_of_all_customers,
            latest_as_of_date
        from {{ adapter.quote(this.schema) }}.customer_totals
    {%- else %}
        select
            sum(total_revenue) as revenue_of_all_customers,
            max(as_of_date) as latest_as_of_date
        from customer_analytics
    {%- endif %}
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
        sum(total_revenue) over (
            order by total_revenue desc, customer_id asc
            rows between unbounded preceding and current row
        ) as cumulative_revenue
    from customer_analytics
),

final as (
    select
        customer_revenue_ranks.revenue_rank,
        customer_revenue_ranks.customer_id,
        customer_revenue_ranks.customer_name,
        customer_revenue_ranks.region,
        customer_revenue_ranks.total_orders,
        customer_revenue_ranks.total_items,
        customer_revenue_ranks.total_revenue,
        customer_revenue_ranks.avg_order_value,
        customer_revenue_ranks.first_order_date,
        customer_revenue_ranks.last_order_date,
        customer_revenue_ranks.as_of_date,
        round(
            100 * customer_revenue_ranks.total_revenue
            / nullif((select customer_totals.revenue_of_all_customers from customer_totals), 0),
            2
        ) as revenue_share_pct,
        round(
            100 * customer_revenue_ranks.cumulative_revenue
            / nullif((select customer_totals.revenue_of_all_customers from customer_totals), 0),
            2
        ) as cumulative_revenue_share_pct,
        (select customer_totals.latest_as_of_date from customer_totals)
        - customer_revenue_ranks.last_order_date as days_since_last_order
    from customer_revenue_ranks
    -- The rank's own order (rank ascending is total_revenue descending), so that the
    -- index serves it and no sort of every customer comes first.
    order by customer_revenue_ranks.total_revenue desc, customer_revenue_ranks.customer_id asc
)

select * from final
