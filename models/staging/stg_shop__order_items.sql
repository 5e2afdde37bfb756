-- Cast only. A plain select on purpose (no CTEs): PostgreSQL flattens such a view
-- into the query that reads it, so the marts' joins on order_id use the
-- order_items(order_id) index. A view with a WITH clause stays an opaque subquery
-- that join conditions cannot reach.
select
    cast(order_item_id as bigint) as order_item_id,
    cast(order_id as bigint) as order_id,
    cast(product_id as bigint) as product_id,
    cast(quantity as integer) as quantity,
    cast(unit_price as numeric(12, 2)) as unit_price
from {{ source('shop', 'order_items') }}
