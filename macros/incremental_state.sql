{#-
    The state kept between nights (int_customer_days, int_customer_settled): how a
    build rewrites the days it owns and reads back the rows of the customers it owns.
-#}

{% macro delete_owned_customer_days() -%}
    {#- Pre-hook of int_customer_days: before an incremental build appends the owned
        days, remove what it held for them (a day whose orders were all cancelled
        must lose its rows too). A full-history build owns every day. -#}
    {%- if is_incremental() -%}
        {%- if run_window().run_date is none -%}
            delete from {{ this }}
        {%- else -%}
            {#- An array, so that the order_date index serves the delete: a semi-join
                on the (unanalyzed) window table plans as a scan of every day. -#}
            delete from {{ this }}
            where order_date = any(array(select sales_date from {{ ref('run_window_days') }}))
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}


{% macro owned_customer_filter(customer_id, owned_customers) -%}
    {#- Rows of the owned customers. A windowed build owns a small share of them:
        an array of their ids lets the customer_id index fetch just their rows, where
        a join reads every stored row. A full build owns them all: a plain semi-join. -#}
    {%- if run_window().run_date is none -%}
        {{ customer_id }} in (select customer_id from {{ owned_customers }})
    {%- else -%}
        {{ customer_id }} = any(array(select customer_id from {{ owned_customers }}))
    {%- endif -%}
{%- endmacro %}
