{#-
    Data tests of a nightly (windowed) build look at the rows the night reads.

    dbt wraps the model of every generic test in get_where_subquery, which
    dispatches in the `dbt` namespace; dbt_project.yml's `dispatch` searches this
    project first, so on PostgreSQL this replaces dbt's default__get_where_subquery.
    Without run_date it behaves as dbt's own (the `where` config, if any). With it, the
    tests on the orders and order lines (source tables and staging views) see only
    the run window's orders and their lines, so a night's tests cost what its day
    costs, not what the history costs; a full-history `dbt build` still tests
    every row. Parents of relationships tests are not filtered: a line of a new
    order must still find its product, an order its customer.
-#}

{% macro postgres__get_where_subquery(relation) -%}
    {%- set where = config.get('where') -%}
    {%- set window_filter = run_window_test_filter(relation) -%}
    {%- set conditions = [] -%}
    {%- if where -%}{%- do conditions.append('(' ~ where ~ ')') -%}{%- endif -%}
    {%- if window_filter -%}{%- do conditions.append(window_filter) -%}{%- endif -%}
    {%- if conditions -%}
        {%- set filtered -%}
            (select * from {{ relation }} where {{ conditions | join(' and ') }}) dbt_subquery
        {%- endset -%}
        {%- do return(filtered) -%}
    {%- else -%}
        {%- do return(relation) -%}
    {%- endif -%}
{%- endmacro %}


{% macro run_window_test_filter(relation) -%}
    {#- The window predicate for the orders and order-line relations, else none. -#}
    {%- if run_window().run_date is none or relation.identifier is none -%}
        {%- do return(none) -%}
    {%- endif -%}
    {%- set name = relation.identifier | lower -%}
    {%- set orders_of = {
        'orders': 'orders',
        'stg_shop__orders': 'stg_shop__orders',
        'order_items': 'orders',
        'stg_shop__order_items': 'stg_shop__orders',
    } -%}
    {%- if name not in orders_of -%}
        {%- do return(none) -%}
    {%- endif -%}
    {%- set touched -%}
        ((ordered_at >= {{ window_start() }} and ordered_at < {{ window_end() }})
        or (updated_at >= {{ window_start() }} and updated_at < {{ window_end() }}))
    {%- endset -%}
    {%- if name in ('orders', 'stg_shop__orders') -%}
        {%- do return(touched) -%}
    {%- endif -%}
    {%- set orders = relation.incorporate(path={'identifier': orders_of[name]}) -%}
    {#- An array of the window's order ids, not `in (select ...)`: the planner could
        turn that semi-join around and scan every order line for the test's own
        condition (unit_price < 0 looks selective), which grows with the history. -#}
    {%- do return(
        'order_id = any(array(select order_id from ' ~ orders ~ ' where ' ~ touched ~ '))'
    ) -%}
{%- endmacro %}
