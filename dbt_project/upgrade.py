"""A change to the models, shipped: what `etl init` and every deployment do to the
analytics database, and which marts they must reprocess.

Two questions, one answer each, both printed by `etl plan` and logged by the
deployment before it applies anything:

* the tables: the DDL that brings them to the contracts, or why it cannot
  (``postgres/schema_plan.py``);
* the logic: the marts whose SQL, or a model or macro they read from, changed since
  the models recorded at the last deployment (``dbt_runner/lineage.py``). Their whole
  loaded history must be computed again. The deployment records a request and starts
  ``REPROCESS_PAYLOAD`` on the reprocess state machine (a full refresh in chunks); the
  load that restates every customer settles the request and its run report names the
  marts and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from dbt_project.contract.ownership import marts
from dbt_project.dbt_runner import lineage
from dbt_project.postgres import deployments
from dbt_project.postgres.schema_plan import SchemaPlan

# How a deployment reprocesses the history: a full refresh, in chunks, that rebuilds
# the incremental state and restates every day and customer.
REPROCESS_PAYLOAD = {"full_refresh": True}
REPROCESS_BY_HAND = "etl backfill --full-refresh"


@dataclass(frozen=True)
class Reprocess:
    """Reprocessing a change of logic asks for: the marts with why, over which days."""

    marts: dict[str, str]
    first: date
    last: date

    def line(self) -> str:
        why = "; ".join(f"{mart} ({reason})" for mart, reason in self.marts.items())
        return f"reprocess needed from {self.first} to {self.last} for marts {why}"

    def as_dict(self) -> dict:
        return {"marts": self.marts, "from": self.first.isoformat(), "to": self.last.isoformat()}


@dataclass
class ModelChanges:
    """The marts whose logic differs from the last recorded deployment's."""

    marts: dict[str, str] = field(default_factory=dict)
    # No deployment was recorded before: nothing to compare, these become the record.
    baseline: bool = False
    history: tuple[date, date] | None = None
    # Requests of earlier deployments that no reprocessing night has settled yet.
    pending: list[dict] = field(default_factory=list)

    @property
    def reprocess(self) -> Reprocess | None:
        """None when no mart changed, or nothing was loaded yet (nothing to redo)."""
        if not self.marts or self.history is None:
            return None
        return Reprocess(dict(self.marts), *self.history)


def _package(manifest) -> str:
    return manifest.metadata.project_name


def model_changes(cur, manifest) -> ModelChanges:
    """Compare the project's models with the ones the analytics database recorded."""
    package = _package(manifest)
    recorded = deployments.recorded_models(cur)
    changed = lineage.changed_marts(
        recorded,
        lineage.fingerprints(manifest, package),
        lineage.upstream(manifest, package),
        marts(),
    )
    return ModelChanges(
        marts=changed,
        baseline=not recorded,
        history=deployments.loaded_history(cur),
        pending=deployments.pending_requests(cur),
    )


def record_deployment(cur, manifest, *, started: str) -> ModelChanges:
    """Record the deployed models; when a mart's logic changed over a loaded history,
    record the reprocessing it asks for, and how it is (or is not) being started."""
    changes = model_changes(cur, manifest)
    if changes.reprocess is not None:
        needed = changes.reprocess
        deployments.request_reprocess(cur, needed.marts, needed.first, needed.last, started)
    models = lineage.fingerprints(manifest, _package(manifest)).values()
    deployments.record_models(cur, [(m.name, m.checksum, m.logic) for m in models])
    return changes


@dataclass
class UpgradePlan:
    """What the next `etl init` or deployment would do: `etl plan`'s answer."""

    tables: SchemaPlan
    models: ModelChanges

    def as_dict(self, conn) -> dict:
        reprocess = self.models.reprocess
        return {
            "analytics_tables": self.tables.as_dict(conn),
            "changed_marts": dict(self.models.marts),
            "reprocess": reprocess.as_dict() if reprocess else None,
            "baseline": self.models.baseline,
            "pending_reprocessing": [
                {
                    "requested_at": p["requested_at"].isoformat(),
                    "from": p["first"].isoformat() if p["first"] else None,
                    "to": p["last"].isoformat() if p["last"] else None,
                    "marts": p["marts"],
                    "started": p["started"],
                }
                for p in self.models.pending
            ],
        }

    def lines(self, conn) -> list[str]:
        """The plan for a person: DDL, refusals, marts to reprocess."""
        out = [f"analytics tables ({self.tables.schema}):"]
        for change in self.tables.changes:
            where = ".".join(p for p in (change.table, change.column) if p) or self.tables.schema
            out.append(f"  {where}: {change.summary}")
            out += [f"    {s.as_string(conn)};" for s in change.statements]
        out += [f"  REFUSED: {r.message}" for r in self.tables.refusals]
        out += [f"  note: {n}" for n in self.tables.notes]
        if not (self.tables.changes or self.tables.refusals):
            out.append("  up to date")
        out.append("marts whose logic changed since the last deployment:")
        if self.models.baseline:
            out.append("  none recorded yet: the next `etl init` records these models")
        out += [f"  {mart}: {why}" for mart, why in self.models.marts.items()]
        if not self.models.marts and not self.models.baseline:
            out.append("  none")
        reprocess = self.models.reprocess
        if reprocess:
            out.append(reprocess.line())
        out += [
            f"not yet reprocessed (asked {p['requested_at']:%Y-%m-%d %H:%M}): "
            + ", ".join(p["marts"])
            for p in self.models.pending
        ]
        return out
