"""The database roles and logins the pipeline uses, by name: one definition for the
initializer that creates them, the functions that log in as them, and the CDK app
that lets each function's IAM role connect as exactly its own login.
"""

# Privilege sets (NOLOGIN), granted to the logins below and to people.
LOADER_ROLE = "etl_loader"  # analytics: read and upsert the marts, write the ledger
READER_ROLE = "etl_reader"  # analytics: read the tables and views

# Logins of the deployed functions. Only the initializer holds a master secret.
EXTRACT_LOGIN = "etl_extract"  # source: read the operational tables, build in its own schema
LOAD_LOGIN = "etl_load"  # analytics: member of etl_loader
