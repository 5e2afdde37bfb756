-- Rename and cast only. A plain select on purpose (no CTEs): PostgreSQL flattens
-- such a view into the query that reads it, so the marts' joins on product_id use
-- the source's primary key. A view with a WITH clause stays an opaque subquery.
select
    cast(product_id as bigint) as product_id,
    cast(name as text) as product_name,
    cast(category as text) as category,
    cast(price as numeric(12, 2)) as price
from {{ source('shop', 'products') }}
