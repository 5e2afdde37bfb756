{#-
    The run window: which part of the history a build computes, from the vars
    run_date, lookback_days and business_timezone.

    The vars are rendered into SQL, so they are validated before any SQL is
    produced: an invalid value stops dbt while it parses the project, before it
    connects or creates anything. Every other macro reads them through run_window().
-#}

{% macro run_window() %}
    {#- The validated vars as a dict:
        run_date     'YYYY-MM-DD' or none (full history)
        first_date   'YYYY-MM-DD', first business day of the lookback (none without run_date)
        lookback_days, timezone -#}
    {%- set timezone = var('business_timezone') -%}
    {%- if timezone is not string or timezone not in modules.pytz.all_timezones_set -%}
        {{ exceptions.raise_compiler_error(
            "Invalid var business_timezone=\"" ~ timezone ~ "\""
            ~ ": it must be an IANA time zone name such as Asia/Tokyo."
            ~ " Fix it in dbt_project.yml or pass --vars '{business_timezone: Asia/Tokyo}'."
        ) }}
    {%- endif -%}

    {%- set lookback = var('lookback_days') -%}
    {%- if lookback is string and modules.re.fullmatch('[0-9]{1,4}', lookback) -%}
        {%- set lookback = lookback | int -%}
    {%- endif -%}
    {%- if lookback is not integer or lookback < 1 -%}
        {{ exceptions.raise_compiler_error(
            "Invalid var lookback_days=\"" ~ lookback ~ "\""
            ~ ": it must be a positive integer (the number of business days up to and"
            ~ " including run_date that a build recomputes). Fix: pass --vars '{lookback_days: 2}'."
        ) }}
    {%- endif -%}

    {%- set raw_run_date = var('run_date') -%}
    {%- if raw_run_date is none -%}
        {{ return({
            'run_date': none,
            'first_date': none,
            'lookback_days': lookback,
            'timezone': timezone,
        }) }}
    {%- endif -%}

    {#- A YAML date (--vars '{run_date: 2026-11-25}') renders as YYYY-MM-DD too. -#}
    {%- set text = raw_run_date | string -%}
    {%- set parts = modules.re.fullmatch('([0-9]{4})-([0-9]{2})-([0-9]{2})', text) -%}
    {%- set ns = namespace(valid=false) -%}
    {%- if parts -%}
        {%- set year = parts.group(1) | int -%}
        {%- set month = parts.group(2) | int -%}
        {%- set day = parts.group(3) | int -%}
        {%- if year >= 1 and 1 <= month <= 12 and day >= 1 -%}
            {%- if month == 12 -%}
                {%- set days_in_month = 31 -%}
            {%- else -%}
                {%- set days_in_month = (
                    modules.datetime.date(year, month + 1, 1) - modules.datetime.timedelta(days=1)
                ).day -%}
            {%- endif -%}
            {%- set ns.valid = day <= days_in_month -%}
        {%- endif -%}
    {%- endif -%}
    {%- if not ns.valid -%}
        {{ exceptions.raise_compiler_error(
            "Invalid var run_date=\"" ~ text ~ "\""
            ~ ": it must be a real calendar date written YYYY-MM-DD (the business day to load,"
            ~ " for example 2026-11-25), or null for a full-history build."
            ~ " Fix: pass --vars '{run_date: 2026-11-25}'."
        ) }}
    {%- endif -%}

    {%- set run_date = modules.datetime.date(year, month, day) -%}
    {%- if lookback > (run_date - modules.datetime.date(1, 1, 1)).days + 1 -%}
        {{ exceptions.raise_compiler_error(
            "Invalid var lookback_days=\"" ~ lookback ~ "\": the window would start before"
            ~ " the year 1. Fix: pass a lookback_days of a few days, such as --vars '{lookback_days: 2}'."
        ) }}
    {%- endif -%}
    {%- set first_date = run_date - modules.datetime.timedelta(days=lookback - 1) -%}
    {{ return({
        'run_date': run_date.isoformat(),
        'first_date': first_date.isoformat(),
        'lookback_days': lookback,
        'timezone': timezone,
    }) }}
{% endmacro %}


{% macro validate_run_vars() %}
    {#- on-run-start: fail before anything runs when a var is invalid. -#}
    {%- do run_window() -%}
    {{ return('') }}
{% endmacro %}
