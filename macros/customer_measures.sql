{#-
    The additive measures of a customer, in one list: int_customer_days sums them per
    day, int_customer_settled per customer before settled_before, customer_analytics
    over the customer's lifetime. A new measure is an entry here and its column in
    customer_analytics' contract (models/marts/_marts__models.yml).
-#}

{% macro customer_measures() %}
    {#- Each measure:
        name       its column in int_customer_days and int_customer_settled
        total      its column in customer_analytics
        per_order  its value for one order, over the order's lines ({lines}, left
                   joined: an order without lines has null sums); the days sum it
        type       the type of every sum of it -#}
    {{ return([
        {'name': 'order_count', 'total': 'total_orders', 'per_order': '1', 'type': 'bigint'},
        {
            'name': 'item_count',
            'total': 'total_items',
            'per_order': 'coalesce(sum({lines}.quantity), 0)',
            'type': 'bigint',
        },
        {
            'name': 'revenue',
            'total': 'total_revenue',
            'per_order': 'coalesce(sum({lines}.quantity * {lines}.unit_price), 0)',
            'type': 'numeric(14, 2)',
        },
    ]) }}
{% endmacro %}
