with

touched_orders as (
    select * from {{ ref('int_touched_orders') }}
),

-- The lookback days (even without orders) and the days of the touched orders; every
-- day with an order in a full-history build.
owned_days as (
    {%- if run_window().run_date is not none %}
        select date '{{ run_window().first_date }}' + lookback_days.day_number as sales_date
        from generate_series(0, {{ run_window().lookback_days - 1 }}) as lookback_days (day_number)
        union
        select business_date as sales_date
        from touched_orders
    {%- else %}
        select distinct business_date as sales_date
        from touched_orders
    {%- endif %}
),

final as (
    select sales_date
    from owned_days
)

select * from final
