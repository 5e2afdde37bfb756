-- The non-cancelled orders of the business days this build owns: what the two day
-- marts aggregate. A view, which PostgreSQL plans inside each mart's query, so its
-- filters still reach orders through the ordered_at index. Not ephemeral: the
-- pipeline reuses one parsed manifest across nights, and dbt 1.11 then neither
-- re-injects an ephemeral CTE nor re-renders it for a new run_date.
-- `not materialized`: orders is read twice, and a materialized CTE would scan the
-- whole source table instead of using its indexes.
with

orders as not materialized (
    select * from {{ ref('stg_shop__orders') }}
),

touched_orders as (
    {{ select_touched_orders('orders') }}
),

owned_days as (
    {{ select_owned_days('touched_orders') }}
),

owned_day_orders as (
    {{ select_owned_day_orders('orders', 'owned_days') }}
)

select * from owned_day_orders
