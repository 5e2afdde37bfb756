-- The non-cancelled orders of the business days this build owns (run_window_days):
-- what the two day marts aggregate, and what int_customer_days recomputes when it
-- extends its table. A view, which PostgreSQL plans inside each reader's query, so its
-- filters still reach orders through the ordered_at index. Not ephemeral: the
-- pipeline reuses one parsed manifest across nights, and dbt 1.11 then neither
-- re-injects an ephemeral CTE nor re-renders it for a new run_date.
with

orders as (
    select * from {{ ref('stg_shop__orders') }}
),

owned_days as (
    select sales_date from {{ ref('run_window_days') }}
),

-- One range scan of the orders(ordered_at) index from the first owned day to the end
-- of the window, rather than a join on per-day ranges, whose row estimates mislead the
-- planner into scanning the whole table.
owned_day_orders as (
    select
        order_id,
        customer_id,
        {{ business_date('ordered_at') }} as sales_date
    from orders
    where
        status != 'cancelled'
        and ordered_at >= (
            select {{ business_day_start('min(owned_days.sales_date)') }} from owned_days
        )
        and {{ ordered_through_run_date('ordered_at') }}
        and {{ business_date('ordered_at') }} in (select owned_days.sales_date from owned_days)
)

select * from owned_day_orders
