-- Rename and cast only. A plain select on purpose (no CTEs): PostgreSQL flattens
-- such a view into the query that reads it, so the marts' joins on customer_id use
-- the source's primary key. A view with a WITH clause stays an opaque subquery.
select
    cast(customer_id as bigint) as customer_id,
    cast(name as text) as customer_name,
    cast(email as text) as email,
    cast(region as text) as region,
    cast(created_at as timestamptz) as created_at
from {{ source('shop', 'customers') }}
