{#-
    A customer's totals over its days in int_customer_days: one select list, so that
    int_customer_settled and customer_analytics sum alike.
-#}

{% macro customer_day_totals(customer_days) -%}
    {#- A customer's totals over the rows of int_customer_days that ``customer_days``
        (its alias in the query) reads: each measure's sum, and the first and last day. -#}
    {%- for measure in customer_measures() %}
    cast(sum({{ customer_days }}.{{ measure.name }}) as {{ measure.type }}) as {{ measure.name }},
    {%- endfor %}
    min({{ customer_days }}.order_date) as first_order_date,
    max({{ customer_days }}.order_date) as last_order_date
{%- endmacro %}
