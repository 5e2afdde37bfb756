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

    On the analytics database (target `analytics`), run_date and lookback_days name
    the nights whose days the tests look at (loaded_days_filter below): the loaded
    day marts and the views keyed by day see only those days.
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
    {%- if target.name == 'analytics' -%}
        {%- do return(loaded_day_test_filter(name)) -%}
    {%- endif -%}
    {%- if name not in ('orders', 'stg_shop__orders', 'order_items', 'stg_shop__order_items') -%}
        {%- do return(none) -%}
    {%- endif -%}
    {%- set touched -%}
        ((ordered_at >= {{ window_start() }} and ordered_at < {{ window_end() }})
        or (updated_at >= {{ window_start() }} and updated_at < {{ window_end() }}))
    {%- endset -%}
    {%- if name in ('orders', 'stg_shop__orders') -%}
        {%- do return(touched) -%}
    {%- endif -%}
    {#- The lines' orders are read from the source table, which no build replaces. A test
        depends only on the model it tests: reading stg_shop__orders, it could run
        before that view exists (`dbt build --select stg_shop__order_items` on a fresh
        schema failed every test of the lines so) or while it is being replaced. -#}
    {%- set orders = source('shop', 'orders') -%}
    {#- An array of the window's order ids, not `in (select ...)`: the planner could
        turn that semi-join around and scan every order line for the test's own
        condition (unit_price < 0 looks selective), which grows with the history. -#}
    {%- do return(
        'order_id = any(array(select order_id from ' ~ orders ~ ' where ' ~ touched ~ '))'
    ) -%}
{%- endmacro %}


{% macro loaded_day_test_filter(name) -%}
    {#- On the analytics database: the rows of the tested nights' days, for the loaded
        day marts and the views keyed by day; none for any other relation. -#}
    {%- set day_columns = {
        'regional_sales_trend': adapter.quote('date'),
        'volume_anomalies': 'sales_date',
    } -%}
    {%- set mart_day = owned_day_column(name) -%}
    {%- if mart_day -%}
        {%- do return(loaded_days_filter(mart_day)) -%}
    {%- elif name in day_columns -%}
        {%- do return(loaded_days_filter(day_columns[name])) -%}
    {%- elif name == 'weekly_sales_summary' -%}
        {%- do return(loaded_days_filter("week_start", "cast(date_trunc('week', sales_date) as date)")) -%}
    {%- endif -%}
    {%- do return(none) -%}
{%- endmacro %}


{% macro owned_day_column(name) -%}
    {#- The day column of a mart owned by days (its YAML's config.meta.night_owns),
        so that a new day mart is tested by its nights' days with no change here. -#}
    {%- if execute -%}
        {%- for node in graph.nodes.values() if node.resource_type == 'model' and node.name == name -%}
            {%- set owns = node.config.meta.get('night_owns') or {} -%}
            {%- if owns.get('days') -%}
                {%- do return(owns['days']) -%}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
    {%- do return(none) -%}
{%- endmacro %}


{% macro loaded_days_filter(column, of_day='sales_date') -%}
    {#- On the analytics database with run_date: `column` is one of the days written by
        the nights run_date - lookback_days + 1 .. run_date and not rewritten since
        (ledger.day_versions records the night of each owned day, late-change days
        included), passed through `of_day`. The pipeline passes a night's own run_date
        and lookback_days 1, or a backfill's first and last nights.
        Anywhere else `true`: a windowed build's marts hold only its window already,
        and without run_date every row is tested. -#}
    {%- set window = run_window() -%}
    {%- if target.name != 'analytics' or window.run_date is none -%}
        {%- do return('true') -%}
    {%- endif -%}
    {#- The ledger's schema, dbt_project.facts.names.LEDGER_SCHEMA. An array, so that
        the day's index serves the lookup rather than a semi-join planned as a scan. -#}
    {%- do return(
        column ~ ' = any(array(select distinct ' ~ of_day ~ ' from ledger.day_versions'
        ~ " where as_of_date between date '" ~ window.first_date ~ "'"
        ~ " and date '" ~ window.run_date ~ "'))"
    ) -%}
{%- endmacro %}
