{#- Every row the model holds is a finding: the model itself says what to look at. -#}
{% test is_empty(model) %}
    select * from {{ model }}
{% endtest %}
