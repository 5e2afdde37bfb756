"""The source changes under the models: a column they read is gone.

Before a night builds anything, the columns each model reads from a source table (the
source's declared columns that appear in the model's SQL) are looked up in the source
database's catalog. A dropped or renamed one stops the night with one line naming the
model and the column; a column the source gained changes nothing (no model reads it).
A model that reads an undeclared column is caught when dbt runs it: its "column ...
does not exist" becomes the same kind of line.
"""

from __future__ import annotations

import re

from dbt_project.errors import SourceColumnsChanged

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MISSING = re.compile(r'column "?([\w.]+)"? does not exist')


def _sources_read(manifest) -> list[tuple[str, object]]:
    """(model name, source node) for each source table a model selects from."""
    pairs = []
    for node in manifest.nodes.values():
        if str(getattr(node.resource_type, "value", node.resource_type)) != "model":
            continue
        for parent in node.depends_on.nodes:
            if parent in manifest.sources:
                pairs.append((node, manifest.sources[parent]))
    return pairs


def columns_read(manifest) -> list[tuple[str, str, str, str]]:
    """(model, schema, table, column): the declared source columns each model's SQL names."""
    found = []
    for node, source in _sources_read(manifest):
        words = {w.lower() for w in _WORD.findall(node.raw_code or "")}
        table = source.identifier or source.name
        found += [
            (node.name, source.schema, table, column)
            for column in sorted(source.columns)
            if column.lower() in words
        ]
    return found


def missing_columns(conn, manifest) -> list[tuple[str, str, str, str]]:
    """The columns a model reads that the source database does not have."""
    wanted = columns_read(manifest)
    schemas = sorted({schema for _, schema, _, _ in wanted})
    with conn.cursor() as cur:
        cur.execute(
            "select table_schema, table_name, column_name from information_schema.columns "
            "where table_schema = any(%s)",
            (schemas,),
        )
        present = {tuple(row) for row in cur.fetchall()}
    conn.rollback()
    return [w for w in wanted if (w[1], w[2], w[3]) not in present]


def check(conn, manifest) -> None:
    """Stop the night, before anything is built, when a column a model reads is gone."""
    missing = missing_columns(conn, manifest)
    if not missing:
        return
    model, schema, table, column = missing[0]
    more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
    raise SourceColumnsChanged(
        f"model {model} reads column {column} of {schema}.{table}, which the source no longer "
        f"has (dropped or renamed){more}: restore the column, or change the model (and its "
        "source's YAML) to read the new name and deploy it; nothing was built or unloaded",
        failures=[m[0] for m in missing],
    )


def raise_for_missing_column(failures) -> None:
    """dbt's failures of a build: a model that met a column its input lacks, as one line."""
    for failure in failures:
        found = _MISSING.search(failure.message)
        if found and failure.unique_id.startswith("model."):
            model = failure.unique_id.split(".")[-1]
            raise SourceColumnsChanged(
                f"model {model} reads column {found.group(1)}, which its input no longer has "
                "(dropped or renamed): restore the column, or change the model to read the new "
                "name and deploy it; nothing was unloaded",
                failures=[failure.unique_id],
            )
