-- Lifetime totals of the owned customers: what int_customer_settled holds for their
-- days before the first owned day, plus their days from then up to run_date in
-- int_customer_days. A night reads a few days per customer it touches, not the
-- customer's whole history.
with

customers as (
    select * from {{ ref('stg_shop__customers') }}
),

orders as (
    select * from {{ ref('stg_shop__orders') }}
),

customer_days as (
    select * from {{ ref('int_customer_days') }}
),

settled as (
    select * from {{ ref('int_customer_settled') }}
),

-- The same owned customers whose earlier days int_customer_settled has just settled.
owned_customers as (
    select * from {{ ref('run_window_customers') }}
),

customer_totals as (
    select
        settled.customer_id,
        {%- for measure in customer_measures() %}
            settled.{{ measure.name }} + coalesce(later.{{ measure.name }}, 0)
                as {{ measure.total }},
        {%- endfor %}
        coalesce(settled.first_order_date, later.first_order_date) as first_order_date,
        coalesce(later.last_order_date, settled.last_order_date) as last_order_date
    from settled
    -- One index range per customer: its days from settled_before up to run_date.
    cross join
        lateral (
            select {{ customer_day_totals('customer_days') }}
            from customer_days
            where
                customer_days.customer_id = settled.customer_id
                and customer_days.order_date >= settled.settled_before
                and {{ on_or_before_run_date('customer_days.order_date') }}
        ) as later
    where {{ owned_customer_filter('settled.customer_id', 'owned_customers') }}
),

final as (
    select
        customer_totals.customer_id,
        customers.customer_name,
        customers.region,
        {%- for measure in customer_measures() %}
            cast(customer_totals.{{ measure.total }} as {{ measure.type }})
                as {{ measure.total }},
        {%- endfor %}
        cast(
            round(customer_totals.total_revenue / customer_totals.total_orders, 2)
            as numeric(14, 2)
        ) as avg_order_value,
        customer_totals.first_order_date,
        customer_totals.last_order_date,
        {{ as_of_date('orders') }} as as_of_date
    from customer_totals
    inner join customers
        on customer_totals.customer_id = customers.customer_id
    where customer_totals.total_orders > 0
)

select * from final
