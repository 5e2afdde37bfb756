-- One row per region and calendar day between the first and the latest sales day,
-- days without orders included (as zeros), so that moving averages and
-- same-weekday comparisons count calendar days, not days with sales.
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

calendar_days as (
    select sales_day_bounds.first_sales_date + calendar.day_number as sales_date
    from sales_day_bounds
    cross join generate_series(
        0, sales_day_bounds.last_sales_date - sales_day_bounds.first_sales_date
    ) as calendar (day_number)
),

regions as (
    select distinct region
    from daily_sales
),

region_days as (
    select
        calendar_days.sales_date,
        regions.region,
        daily_sales.avg_order_value,
        coalesce(daily_sales.order_count, 0) as order_count,
        coalesce(daily_sales.customer_count, 0) as customer_count,
        coalesce(daily_sales.units_sold, 0) as units_sold,
        coalesce(daily_sales.revenue, 0) as revenue
    from calendar_days
    cross join regions
    left join daily_sales
        on
            calendar_days.sales_date = daily_sales.sales_date
            and regions.region = daily_sales.region
),

region_day_trends as (
    select
        sales_date,
        region,
        order_count,
        customer_count,
        units_sold,
        revenue,
        avg_order_value,
        round(
            100 * revenue / nullif(sum(revenue) over (partition by sales_date), 0), 2
        ) as revenue_share_of_day_pct,
        case
            when count(*) over last_7_days = 7
                then round(avg(revenue) over last_7_days, 2)
        end as revenue_7_day_moving_average,
        case
            when count(*) over last_7_days = 7
                then round(avg(order_count) over last_7_days, 2)
        end as order_count_7_day_moving_average,
        lag(revenue, 7) over region_by_day as revenue_same_weekday_last_week
    from region_days
    window
        region_by_day as (partition by region order by sales_date),
        last_7_days as (region_by_day rows between 6 preceding and current row)
),

final as (
    select
        sales_date as date, -- noqa: RF04
        region,
        order_count,
        customer_count,
        units_sold,
        revenue,
        avg_order_value,
        revenue_share_of_day_pct,
        revenue_7_day_moving_average,
        order_count_7_day_moving_average,
        revenue_same_weekday_last_week,
        round(
            100 * (revenue - revenue_same_weekday_last_week)
            / nullif(revenue_same_weekday_last_week, 0),
            2
        ) as revenue_change_pct_vs_last_week
    from region_day_trends
)

select * from final
