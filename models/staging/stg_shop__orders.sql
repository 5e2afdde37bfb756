-- Cast only. A plain select on purpose (no CTEs): PostgreSQL flattens such a view
-- into the query that reads it, so the marts' filters and joins on ordered_at,
-- updated_at, customer_id and order_id use the source indexes. A view with a WITH
-- clause stays an opaque subquery that join conditions cannot reach. Casts to the
-- types the columns already have are no-ops and do not hide the columns.
select
    cast(order_id as bigint) as order_id,
    cast(customer_id as bigint) as customer_id,
    cast(ordered_at as timestamptz) as ordered_at,
    cast(status as text) as status,
    cast(updated_at as timestamptz) as updated_at
from {{ source('shop', 'orders') }}
