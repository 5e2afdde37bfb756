"""The laptop: the embedded PostgreSQL server, the development databases (``etl
dev-db``) and the whole demo (``etl demo``)."""
