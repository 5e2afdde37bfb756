-- depends_on: {{ ref('int_owned_day_orders') }}, {{ ref('run_window_days') }}
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        indexes=[
            {'columns': ['customer_id', 'order_date'], 'unique': true},
            {'columns': ['order_date']},
        ],
        pre_hook="{{ delete_owned_customer_days() }}",
    )
}}

-- What each customer bought on each business day. A night recomputes only the days
-- it owns (run_window_days), so customer_analytics sums a customer's days instead of
-- re-reading every order line of that customer's history. A first build, or
-- --full-refresh, reads the whole history up to run_date.
with

orders as (
    select * from {{ ref('stg_shop__orders') }}
),

order_items as (
    select * from {{ ref('stg_shop__order_items') }}
),

-- Extending the table: the orders of the owned days (int_owned_day_orders, read only
-- then, so referenced in place; the depends_on line above declares it to dbt, which
-- parses with is_incremental() false, and run_window_days, which the pre-hook reads).
-- Building it whole: every non-cancelled order up to run_date (a history rebuilt in
-- chunks builds its first chunk from nothing, and the chunks after it extend the table).
counted_orders as (
    {%- if is_incremental() %}
        select
            order_id,
            customer_id,
            sales_date
        from {{ ref('int_owned_day_orders') }}
    {%- else %}
        select
            order_id,
            customer_id,
            {{ business_date('ordered_at') }} as sales_date
        from orders
        where
            status != 'cancelled'
            and {{ ordered_through_run_date('ordered_at') }}
    {%- endif %}
),

-- Shared with daily_sales_summary: a macro, as macros/order_totals.sql says why.
order_totals as (
    {{ select_order_totals('counted_orders', 'order_items') }}
),

final as (
    select
        customer_id,
        sales_date as order_date,
        cast(sum(item_count) as bigint) as item_count,
        cast(sum(revenue) as numeric(14, 2)) as revenue,
        count(order_id) as order_count
    from order_totals
    group by
        customer_id,
        sales_date
)

select * from final
