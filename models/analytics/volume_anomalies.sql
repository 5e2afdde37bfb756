-- Each region's day whose orders or revenue left the band around the same weekday of
-- the trailing weeks (var volume_band_weeks, default 4; the band is their average
-- +/- var volume_band_tolerance, default 50 %). A day with no order in a region counts
-- as 0, so a collapse to nothing is seen too. Only regions that usually take at least
-- var volume_band_min_orders orders that weekday are judged: below that, a day's
-- count moves by half from chance alone (the sample data's regions take 1 to 20).
-- A warning for a person to look at (its test has severity warn): it never stops a
-- night.
with

daily_sales as (
    select * from {{ ref('daily_sales_summary') }}
),

calendar as (
    select cast(sales_day as date) as sales_date
    from
        generate_series(
            (select min(sales_date) from daily_sales),
            (select max(sales_date) from daily_sales),
            interval '1 day'
        ) as sales_day
),

regions as (
    select distinct region from daily_sales
),

region_days as (
    select
        calendar.sales_date,
        regions.region,
        coalesce(daily_sales.order_count, 0) as order_count,
        coalesce(daily_sales.revenue, 0) as revenue
    from calendar
    cross join regions
    left join daily_sales
        on
            calendar.sales_date = daily_sales.sales_date
            and regions.region = daily_sales.region
),

-- The same weekday of the trailing weeks: the calendar is dense (every day a row), so
-- in a region's rows of one weekday the row before is the week before. One ordered
-- pass; a join of each day with every earlier one grew with the square of the
-- history, and a night's tests with it.
trailing_weeks as (
    select
        sales_date,
        region,
        order_count,
        revenue,
        count(*) over earlier_weeks as weeks_compared,
        avg(order_count) over earlier_weeks as usual_order_count,
        avg(revenue) over earlier_weeks as usual_revenue
    from region_days
    window earlier_weeks as (
        partition by region, extract(isodow from sales_date)
        order by sales_date
        rows between {{ var('volume_band_weeks') }} preceding and 1 preceding
    )
),

measures as (
    select
        sales_date,
        region,
        'order_count' as measure,
        cast(order_count as numeric(14, 2)) as actual_value,
        usual_order_count as usual_value,
        usual_order_count as usual_orders,
        weeks_compared
    from trailing_weeks
    union all
    select
        sales_date,
        region,
        'revenue' as measure,
        cast(revenue as numeric(14, 2)) as actual_value,
        usual_revenue as usual_value,
        usual_order_count as usual_orders,
        weeks_compared
    from trailing_weeks
),

banded as (
    select
        sales_date,
        region,
        measure,
        actual_value,
        cast(round(usual_value, 2) as numeric(14, 2)) as usual_value,
        cast(
            round(usual_value * (1 - {{ var('volume_band_tolerance') }}), 2) as numeric(14, 2)
        ) as band_low,
        cast(
            round(usual_value * (1 + {{ var('volume_band_tolerance') }}), 2) as numeric(14, 2)
        ) as band_high,
        usual_orders,
        weeks_compared
    from measures
),

final as (
    select
        sales_date,
        region,
        measure,
        actual_value,
        usual_value,
        band_low,
        band_high
    from banded
    -- Only days with every trailing week behind them: the history's first weeks have
    -- no usual day to compare with.
    where
        weeks_compared = {{ var('volume_band_weeks') }}
        and usual_orders >= {{ var('volume_band_min_orders') }}
        and (actual_value < band_low or actual_value > band_high)
)

select * from final
