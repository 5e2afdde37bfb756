-- Product categories ranked by revenue over the whole history, with the last
-- 30 days set against the 30 days before them.
with

product_sales as (
    select * from {{ ref('product_sales_summary') }}
),

latest_sales_day as (
    select max(sales_date) as sales_date
    from product_sales
),

product_sales_periods as (
    select
        product_sales.category,
        product_sales.product_id,
        product_sales.sales_date,
        product_sales.units_sold,
        product_sales.revenue,
        product_sales.sales_date > latest_sales_day.sales_date - 30 as is_last_30_days,
        product_sales.sales_date <= latest_sales_day.sales_date - 30
        and product_sales.sales_date > latest_sales_day.sales_date - 60 as is_previous_30_days
    from product_sales
    cross join latest_sales_day
),

category_totals as (
    select
        category,
        cast(sum(units_sold) as bigint) as units_sold,
        count(distinct product_id) as product_count,
        sum(revenue) as revenue,
        coalesce(sum(revenue) filter (where is_last_30_days), 0) as revenue_last_30_days,
        coalesce(sum(revenue) filter (where is_previous_30_days), 0) as revenue_previous_30_days,
        min(sales_date) as first_sales_date,
        max(sales_date) as last_sales_date
    from product_sales_periods
    group by category
),

category_ranks as (
    select
        category,
        product_count,
        units_sold,
        revenue,
        revenue_last_30_days,
        revenue_previous_30_days,
        first_sales_date,
        last_sales_date,
        rank() over (order by revenue desc) as revenue_rank,
        sum(revenue) over () as revenue_of_all_categories
    from category_totals
),

final as (
    select
        revenue_rank,
        category,
        product_count,
        units_sold,
        revenue,
        revenue_last_30_days,
        revenue_previous_30_days,
        first_sales_date,
        last_sales_date,
        round(100 * revenue / nullif(revenue_of_all_categories, 0), 2) as revenue_share_pct,
        round(revenue / nullif(units_sold, 0), 2) as avg_unit_price,
        round(
            100 * (revenue_last_30_days - revenue_previous_30_days)
            / nullif(revenue_previous_30_days, 0),
            2
        ) as revenue_change_pct_30_days
    from category_ranks
    order by revenue_rank asc, category asc
)

select * from final
