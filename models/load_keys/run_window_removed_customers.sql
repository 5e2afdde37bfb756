-- The owned customers this build has no customer_analytics row for. The loader
-- deletes their rows and remembers the removal, so the load needs only these few
-- keys, not the whole owned list.
with

owned_customers as (
    select * from {{ ref('run_window_customers') }}
),

customer_analytics as (
    select * from {{ ref('customer_analytics') }}
),

final as (
    select owned_customers.customer_id
    from owned_customers
    left join customer_analytics
        on owned_customers.customer_id = customer_analytics.customer_id
    where customer_analytics.customer_id is null
)

select * from final
