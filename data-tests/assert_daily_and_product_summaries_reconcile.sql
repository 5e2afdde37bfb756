-- Per business day, the product view and the region view of the same orders must
-- add up to the same revenue and units. Returns the days where they do not.
-- After a night's load (run_date set, on the analytics database) only the days that
-- night wrote; a full `dbt test` reconciles every day.
with

daily_sales as (
    select * from {{ ref('daily_sales_summary') }}
    where {{ loaded_days_filter('sales_date') }}
),

product_sales as (
    select * from {{ ref('product_sales_summary') }}
    where {{ loaded_days_filter('sales_date') }}
),

daily_totals as (
    select
        sales_date,
        sum(revenue) as revenue,
        sum(units_sold) as units_sold
    from daily_sales
    group by sales_date
),

product_totals as (
    select
        sales_date,
        sum(revenue) as revenue,
        sum(units_sold) as units_sold
    from product_sales
    group by sales_date
),

final as (
    select
        coalesce(daily_totals.sales_date, product_totals.sales_date) as sales_date,
        daily_totals.revenue as daily_revenue,
        product_totals.revenue as product_revenue,
        daily_totals.units_sold as daily_units_sold,
        product_totals.units_sold as product_units_sold
    from daily_totals
    full outer join product_totals
        on daily_totals.sales_date = product_totals.sales_date
    -- A day can hold orders without lines: zero on one side, no row on the other.
    where
        coalesce(daily_totals.revenue, 0) != coalesce(product_totals.revenue, 0)
        or coalesce(daily_totals.units_sold, 0) != coalesce(product_totals.units_sold, 0)
)

select * from final
