{#-
    Per-order totals: each customer measure of each order (macros/customer_measures.sql),
    from its lines; the units (item_count) and revenue among them.

    int_customer_days and daily_sales_summary both sum orders this way, over
    different orders: int_customer_days over every non-cancelled order when it
    builds its table whole, over int_owned_day_orders when it extends it;
    daily_sales_summary over int_owned_day_orders. A macro, not a model, because
    neither form of a shared view over every order kept both plans (EXPLAIN ANALYZE,
    300 days, 1.2M orders, a two-day window): grouped (as here), a reader's join on
    the owned days' order ids cannot reach inside it, so it totals all 1.16M orders
    (2.8 s against 0.1 s); as a lateral sum per order, the window keeps its index
    paths but a full build probes order_items once per order (3.1-4.4 s against
    2.1 s grouped).
-#}

{% macro select_order_totals(orders, order_items) -%}
    {#- One row per order of ``orders`` (order_id, customer_id, sales_date) with each
        measure's value over its lines in ``order_items``: zero for an order without
        lines. Both are names of relations or CTEs in the calling query; ``{lines}`` in
        a measure's expression stands for ``order_items``. -#}
    select
        {{ orders }}.sales_date,
        {{ orders }}.order_id,
        {%- for measure in customer_measures() %}
        {{ measure.per_order | replace('{lines}', order_items) }} as {{ measure.name }},
        {%- endfor %}
        {{ orders }}.customer_id
    from {{ orders }}
    left join {{ order_items }}
        on {{ orders }}.order_id = {{ order_items }}.order_id
    group by
        {{ orders }}.sales_date,
        {{ orders }}.order_id,
        {{ orders }}.customer_id
{%- endmacro %}
