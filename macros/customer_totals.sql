{#-
    A customer's totals over its days in int_customer_days: one select list, so that
    int_customer_settled and customer_analytics sum alike.
-#}

{% macro customer_day_totals(customer_days) -%}
    {#- A customer's totals over the rows of int_customer_days that ``customer_days``
        (its alias in the query) reads: the columns of customer_analytics' sums. -#}
    cast(sum({{ customer_days }}.order_count) as bigint) as order_count,
    cast(sum({{ customer_days }}.item_count) as bigint) as item_count,
    sum({{ customer_days }}.revenue) as revenue,
    min({{ customer_days }}.order_date) as first_order_date,
    max({{ customer_days }}.order_date) as last_order_date
{%- endmacro %}
