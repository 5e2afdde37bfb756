{#-
    Business days and the run window's bounds as SQL expressions.

    A business day is a date in var('business_timezone'): an order's business day is
    its ordered_at there. Bounds on timestamps are timestamptz values, so that a
    range on ordered_at or updated_at is served by that column's index. Without
    run_date (a full-history build) the filters let every row through; window_start
    and window_end exist only with run_date.
-#}

{% macro business_date(timestamp_column) -%}
    ({{ timestamp_column }} at time zone '{{ run_window().timezone }}')::date
{%- endmacro %}


{% macro business_day_start(date_expression) -%}
    ({{ date_expression }})::timestamp at time zone '{{ run_window().timezone }}'
{%- endmacro %}


{% macro window_start() -%}
    {{ business_day_start("date '" ~ run_window().first_date ~ "'") }}
{%- endmacro %}


{% macro window_end() -%}
    {{ business_day_start("date '" ~ run_window().run_date ~ "' + 1") }}
{%- endmacro %}


{% macro ordered_through_run_date(ordered_at) -%}
    {#- Orders of business days after run_date never count in a windowed build.
        A timestamptz range, so that the orders(ordered_at) index serves it. -#}
    {%- if run_window().run_date is none -%}
        true
    {%- else -%}
        {{ ordered_at }} < {{ window_end() }}
    {%- endif -%}
{%- endmacro %}


{% macro on_or_before_run_date(date_column) -%}
    {%- if run_window().run_date is none -%}
        true
    {%- else -%}
        {{ date_column }} <= date '{{ run_window().run_date }}'
    {%- endif -%}
{%- endmacro %}


{% macro as_of_date(orders) -%}
    {#- run_date, or the latest business day of any order in a full-history build. -#}
    {%- if run_window().run_date is none -%}
        (select {{ business_date('max(ordered_at)') }} from {{ orders }})
    {%- else -%}
        date '{{ run_window().run_date }}'
    {%- endif -%}
{%- endmacro %}
