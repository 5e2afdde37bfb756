-- depends_on: {{ ref('int_customer_days') }}
-- The customers this build owns: those its window touches, none, or every customer of the
-- history int_customer_days holds up to run_date (select_owned_customers).
with

touched_orders as (
    select * from {{ ref('int_touched_orders') }}
),

final as (
    {{ select_owned_customers('touched_orders') }}
)

select * from final
