-- depends_on: {{ ref('int_owned_day_orders') }}, {{ ref('run_window_days') }}
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='append_new_columns',
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
-- --full-refresh, reads the whole history up to run_date. A measure added to
-- customer_measures gets its column on the next night (on_schema_change), empty in the
-- days kept from before: the reprocessing that the deployment of the change starts (a
-- full refresh) fills it, and nights go on meanwhile.
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

-- Each order's measures (macros/customer_measures.sql), shared with daily_sales_summary:
-- a macro, as macros/order_totals.sql says why.
order_totals as (
    {{ select_order_totals('counted_orders', 'order_items') }}
),

final as (
    select
        customer_id,
        {%- for measure in customer_measures() %}
            cast(sum({{ measure.name }}) as {{ measure.type }}) as {{ measure.name }},
        {%- endfor %}
        sales_date as order_date
    from order_totals
    group by
        customer_id,
        sales_date
)

select * from final
