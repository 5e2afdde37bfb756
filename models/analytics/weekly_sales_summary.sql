-- Sales per ISO week (Monday to Sunday) with the change against the week before.
-- Weekly distinct customers cannot be derived from daily distinct counts, so the
-- view reports the average number of distinct customers per day instead.
with

daily_sales as (
    select * from {{ ref('daily_sales_summary') }}
),

sales_day_bounds as (
    select
        min(sales_date) as first_sales_date,
        max(sales_date) as last_sales_date
    from daily_sales
),

weekly_totals as (
    select
        cast(date_trunc('week', sales_date) as date) as week_start,
        cast(sum(order_count) as bigint) as order_count,
        cast(sum(customer_count) as bigint) as customer_days,
        cast(sum(units_sold) as bigint) as units_sold,
        count(distinct sales_date) as days_with_sales,
        sum(revenue) as revenue
    from daily_sales
    group by cast(date_trunc('week', sales_date) as date)
),

weeks_with_previous as (
    select
        weekly_totals.week_start,
        weekly_totals.days_with_sales,
        weekly_totals.order_count,
        weekly_totals.units_sold,
        weekly_totals.revenue,
        previous_week.order_count as previous_week_order_count,
        previous_week.revenue as previous_week_revenue,
        weekly_totals.week_start + 6 as week_end,
        weekly_totals.week_start < sales_day_bounds.first_sales_date
        or weekly_totals.week_start + 6 > sales_day_bounds.last_sales_date as is_partial_week,
        round(weekly_totals.revenue / nullif(weekly_totals.order_count, 0), 2) as avg_order_value,
        round(
            1.0 * weekly_totals.customer_days / weekly_totals.days_with_sales, 1
        ) as avg_daily_customer_count
    from weekly_totals
    cross join sales_day_bounds
    left join weekly_totals as previous_week
        on weekly_totals.week_start - 7 = previous_week.week_start
),

final as (
    select
        week_start,
        week_end,
        days_with_sales,
        is_partial_week,
        order_count,
        units_sold,
        revenue,
        avg_order_value,
        avg_daily_customer_count,
        previous_week_revenue,
        revenue - previous_week_revenue as revenue_change,
        round(
            100 * (revenue - previous_week_revenue) / nullif(previous_week_revenue, 0), 2
        ) as revenue_change_pct,
        order_count - previous_week_order_count as order_count_change,
        round(
            100.0 * (order_count - previous_week_order_count)
            / nullif(previous_week_order_count, 0),
            2
        ) as order_count_change_pct
    from weeks_with_previous
)

select * from final
