"""dbt's files of each node's SQL (``compiled/`` and ``run/`` in its target folder),
written only when dbt's output is asked for (``ETL_DBT_VERBOSE=1``).

At every call dbt writes each node's compiled SQL, then the SQL it ran, to a file of
their own. Nothing reads them back: the run results keep each node's compiled SQL, and
in Lambda the target folder is in a /tmp that nobody reads. Writing them cost a tenth
of a warm extract's CPU (three warm extracts, best of three: 2.23 s against 1.96 s without).
"""

from __future__ import annotations

from functools import cache

_written = {"on": True}


def write(on: bool) -> None:
    """Whether dbt's next calls in this process write the files (one call at a time:
    the runner's lock)."""
    _written["on"] = on


@cache  # installed once per process
def write_only_when_asked() -> None:
    from dbt.contracts.graph.nodes import ParsedNode

    write_node = ParsedNode.write_node

    def write_node_when_asked(self, project_root, compiled_path, compiled_code):
        if _written["on"]:
            write_node(self, project_root, compiled_path, compiled_code)

    ParsedNode.write_node = write_node_when_asked
