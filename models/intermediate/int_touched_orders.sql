-- The orders this build's window touches, from which run_window_days and
-- run_window_customers take what the night owns. A view, rebuilt by every build for
-- its window: PostgreSQL plans it inside each reader's query, so the window's bounds
-- still reach the orders(ordered_at) and orders(updated_at) indexes. Not ephemeral:
-- see int_owned_day_orders.
with

orders as (
    select * from {{ ref('stg_shop__orders') }}
),

touched_orders as (
    select
        order_id,
        customer_id,
        {{ business_date('ordered_at') }} as business_date
    from orders
    {%- if run_window().run_date is not none %}
        where
            (
                ordered_at >= {{ window_start() }}
                and ordered_at < {{ window_end() }}
            )
            -- A late change (a cancellation) makes the order's day owned again,
            -- unless the order belongs to a day after run_date.
            or (
                updated_at >= {{ window_start() }}
                and updated_at < {{ window_end() }}
                and ordered_at < {{ window_end() }}
            )
    {%- endif %}
)

select * from touched_orders
