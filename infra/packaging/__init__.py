"""Building what the stack deploys: the two Lambda layers (with the RDS CA bundle and
dbt's parse of the project) and their bytecode. Runs before synthesis, without the CDK;
the only part of infra/ that may import beyond ``dbt_project.facts``, since it packs
the package itself."""
