{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='customer_id',
        indexes=[{'columns': ['customer_id'], 'unique': true}],
    )
}}

-- Each owned customer's totals over its days before settled_before, the first day this
-- build owns: days that a later night recomputes only if it owns them again.
-- customer_analytics adds the days from settled_before on, so a night reads a few days
-- per customer, however long its history. An earlier row is carried forward while it
-- was settled no later than this build's first owned day; otherwise (a late change to
-- an old order, a backfill of an earlier day) the customer's days are summed again.
with

owned_customers as (
    select customer_id from {{ ref('run_window_customers') }}
),

owned_days as (
    select sales_date from {{ ref('run_window_days') }}
),

customer_days as (
    select * from {{ ref('int_customer_days') }}
),

settle as (
    select min(sales_date) as settled_before
    from owned_days
),

earlier as (
    {%- if is_incremental() %}
    select
        settled.customer_id,
        settled.settled_before,
        settled.order_count,
        settled.item_count,
        settled.revenue,
        settled.first_order_date,
        settled.last_order_date
    from {{ this }} as settled
    cross join settle
    where
        settled.customer_id = any(array(select customer_id from owned_customers))
        and settled.settled_before <= settle.settled_before
    {%- else %}
        select
            cast(null as bigint) as customer_id,
            cast(null as date) as settled_before,
            cast(null as bigint) as order_count,
            cast(null as bigint) as item_count,
            cast(null as numeric(14, 2)) as revenue,
            cast(null as date) as first_order_date,
            cast(null as date) as last_order_date
        where false
    {%- endif %}
),

final as (
    select
        owned_customers.customer_id,
        settle.settled_before,
        cast(coalesce(earlier.order_count, 0) + coalesce(added.order_count, 0) as bigint)
            as order_count,
        cast(coalesce(earlier.item_count, 0) + coalesce(added.item_count, 0) as bigint)
            as item_count,
        cast(coalesce(earlier.revenue, 0) + coalesce(added.revenue, 0) as numeric(14, 2))
            as revenue,
        least(earlier.first_order_date, added.first_order_date) as first_order_date,
        greatest(earlier.last_order_date, added.last_order_date) as last_order_date
    from owned_customers
    cross join settle
    left join earlier
        on owned_customers.customer_id = earlier.customer_id
    -- One index range per customer: its days between the earlier row and this build.
    cross join lateral (
        select {{ customer_day_totals('customer_days') }}
        from customer_days
        where
            customer_days.customer_id = owned_customers.customer_id
            and customer_days.order_date < settle.settled_before
            and customer_days.order_date >= coalesce(earlier.settled_before, date '-infinity')
    ) as added
)

select * from final
