{#-
    Which customers a build owns (var owned_customers), validated like the run
    window's vars: window (the customers of the orders its window touches, every
    night), none (a chunk of a history rebuilt in chunks, before its last: it builds
    the state and the days only), all (that last chunk: every customer with a day in
    int_customer_days up to run_date, each counted once).
-#}

{% macro owned_customers_scope() %}
    {%- set scope = var('owned_customers') -%}
    {%- if scope not in ('window', 'none', 'all') -%}
        {{ exceptions.raise_compiler_error(
            "Invalid var owned_customers=\"" ~ scope ~ "\""
            ~ ": it must be window, none or all (which customers a build owns)."
            ~ " Fix: pass --vars '{owned_customers: window}'."
        ) }}
    {%- endif -%}
    {{ return(scope) }}
{% endmacro %}


{% macro select_owned_customers(touched_orders) -%}
    {#- The customers a build owns, by owned_customers_scope(). -#}
    {%- set scope = owned_customers_scope() -%}
    {%- if scope == 'all' -%}
    select distinct customer_id
    from {{ ref('int_customer_days') }}
    where {{ on_or_before_run_date('order_date') }}
    {%- else -%}
    select distinct customer_id
    from {{ touched_orders }}
    {%- if scope == 'none' %}
    where false
    {%- endif -%}
    {%- endif -%}
{%- endmacro %}
