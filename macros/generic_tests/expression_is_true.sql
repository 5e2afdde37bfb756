{% test expression_is_true(model, expression, column_name=none) %}
    {#- Rows for which a boolean expression does not hold. On a column, the
        expression continues the column name (expression: ">= 1"). -#}
    select *
    from {{ model }}
    where not ({% if column_name %}{{ column_name }} {% endif %}{{ expression }})
{% endtest %}
