{#-
    dbt's relationships test, reading the parent through its key in a windowed build.

    dbt dispatches test_relationships in the `dbt` namespace, and the dispatch search
    order in dbt_project.yml puts this project first. The child side holds only the run
    window's rows (postgres__get_where_subquery), but dbt's anti-join reads the whole
    parent: the plan of the order lines' test was a hash join over every order of the
    history, each night. With run_date the parent is read for the child's values only,
    through an array (so that its primary key index serves them); an anti-join needs
    no other parent row, so the result is the same. Without run_date it is dbt's own.
-#}
{% macro postgres__test_relationships(model, column_name, to, field) %}
    {%- if run_window().run_date is none -%}
        {{ return(dbt.default__test_relationships(model, column_name, to, field)) }}
    {%- endif %}
with child as (
    select {{ column_name }} as from_field
    from {{ model }}
    where {{ column_name }} is not null
),

parent as (
    select {{ field }} as to_field
    from {{ to }}
    where {{ field }} = any(array(select from_field from child))
)

select child.from_field
from child
left join parent
    on child.from_field = parent.to_field
where parent.to_field is null
{% endmacro %}
