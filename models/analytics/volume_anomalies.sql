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

trailing_weeks as (
    select
        today.sales_date,
        today.region,
        today.order_count,
        today.revenue,
        count(*) as weeks_compared,
        avg(earlier.order_count) as usual_order_count,
        avg(earlier.revenue) as usual_revenue
    from region_days as today
    inner join region_days as earlier
        on
            today.region = earlier.region
            and (today.sales_date - earlier.sales_date) % 7 = 0
            and today.sales_date - earlier.sales_date
            between 7 and 7 * {{ var('volume_band_weeks') }}
    group by
        today.sales_date,
        today.region,
        today.order_count,
        today.revenue
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
