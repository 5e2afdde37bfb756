{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='customer_id',
        on_schema_change='append_new_columns',
        indexes=[{'columns': ['customer_id'], 'unique': true}],
    )
}}

-- Each owned customer's totals over its days before settled_before, the first day this
-- build owns: days that a later night recomputes only if it owns them again.
-- customer_analytics adds the days from settled_before on, so a night reads a few days
-- per customer, however long its history. An earlier row is carried forward while it
-- was settled no later than this build's first owned day; otherwise (a late change to
-- an old order, a backfill of an earlier day) the customer's days are summed again.
-- A new measure's column is added as in int_customer_days (on_schema_change).
{#- The measures this table has: a measure added since it was built has no column yet,
    and reads as null until the reprocessing fills it (dbt adds the column after this
    query). A unit test's `this` is its given rows, with no relation behind it: every
    measure is read. #}
{%- set stored = [] %}
{%- if is_incremental() and this is not string %}
    {%- set stored = adapter.get_columns_in_relation(this) | map(attribute='name') | list %}
{%- endif %}
{%- set stored_measures = [] %}
{%- for measure in customer_measures() %}
    {%- if measure.name in stored or not stored %}
        {%- do stored_measures.append('settled.' ~ measure.name) %}
    {%- else %}
        {%- do stored_measures.append('cast(null as ' ~ measure.type ~ ') as ' ~ measure.name) %}
    {%- endif %}
{%- endfor %}
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
        {%- for stored_measure in stored_measures %}
            {{ stored_measure }},
        {%- endfor %}
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
            {%- for measure in customer_measures() %}
                cast(null as {{ measure.type }}) as {{ measure.name }},
            {%- endfor %}
            cast(null as date) as first_order_date,
            cast(null as date) as last_order_date
        where false
    {%- endif %}
),

final as (
    select
        owned_customers.customer_id,
        settle.settled_before,
        {%- for measure in customer_measures() %}
            cast(
                coalesce(earlier.{{ measure.name }}, 0) + coalesce(added.{{ measure.name }}, 0)
                as {{ measure.type }}
            ) as {{ measure.name }},
        {%- endfor %}
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
