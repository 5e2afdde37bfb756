"""What a dbt invocation came to: its failures and warnings, node by node, and the
error the pipeline raises for them (a refused login, a lost connection, or the data's
own failure)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from dbt_project.errors import DatabaseUnavailable, DataTestsFailed, LoginRefused, brief
from dbt_project.postgres.connection import CREDENTIALS_REFUSED, TLS_FIX, TLS_REFUSED


@dataclass(frozen=True)
class NodeFailure:
    unique_id: str
    status: str
    message: str
    # Rows a data test returned (its failures), when it is a test that ran.
    rows: int | None = None

    def __str__(self) -> str:
        name = (
            self.unique_id.split(".", 2)[-1] if self.unique_id.count(".") >= 2 else self.unique_id
        )
        return (
            f"{name} ({self.status}: {self.message})" if self.message else f"{name} ({self.status})"
        )


@dataclass
class DbtRun:
    success: bool
    invocation_id: str | None
    target_path: Path
    failures: list[NodeFailure] = field(default_factory=list)
    models: int = 0  # models that ran (hooks and tests not counted)
    # Tests of severity warn that found rows: reported, never a failure.
    warnings: list[NodeFailure] = field(default_factory=list)

    @property
    def run_results(self) -> Path:
        return self.target_path / "run_results.json"

    @property
    def manifest(self) -> Path:
        return self.target_path / "manifest.json"


class ErrorEvents:
    """dbt's own error lines, which --quiet keeps from the console: the reason of a
    failure that no node result carries (a catalog that could not be read)."""

    # Logged as a warning, yet the command fails because of it.
    _FAILING_WARNINGS = frozenset({"CatalogGenerationError"})

    # Events below warnings skip it (event_messages.fire_only_heard_events).
    reads_warnings_and_errors_only = True

    def __init__(self) -> None:
        self.messages: list[str] = []

    # The exception the invocation returns anyway.
    _REPEATS_THE_EXCEPTION = frozenset({"MainEncounteredError", "MainStackTrace"})

    def __call__(self, event) -> None:
        info = event.info
        if info.name in self._REPEATS_THE_EXCEPTION:
            return
        if info.level == "error" or info.name in self._FAILING_WARNINGS:
            self.messages.append(info.msg)


def summarise(result, target_path: Path, errors: list[str] = ()) -> DbtRun:
    nodes: list[NodeFailure] = []
    warnings: list[NodeFailure] = []
    models = 0
    for node_result in getattr(result.result, "results", None) or []:
        models += node_result.node.unique_id.startswith("model.")
        status = str(getattr(node_result.status, "value", node_result.status))
        found = NodeFailure(
            node_result.node.unique_id,
            status,
            brief(node_result.message or ""),
            getattr(node_result, "failures", None),
        )
        if status in ("error", "fail", "runtime error"):
            nodes.append(found)
        elif status == "warn":
            warnings.append(found)
    failures: list[NodeFailure] = []
    # The first reason dbt logged, when no node carries one: it comes before what it caused.
    if not nodes and not result.success and errors:
        failures.append(NodeFailure("dbt", "error", brief(errors[0])))
    if result.exception is not None:
        failures.append(NodeFailure("dbt", "error", brief(str(result.exception))))
    failures += nodes
    invocation_id = None
    run_results = target_path / "run_results.json"
    if run_results.exists():
        invocation_id = json.loads(run_results.read_text())["metadata"].get("invocation_id")
    return DbtRun(
        success=bool(result.success) and not failures,
        invocation_id=invocation_id,
        target_path=target_path,
        failures=failures,
        models=models,
        warnings=warnings,
    )


# Messages of a lost or refused connection: the data is not at fault, a re-run is the fix.
_CONNECTION_LOST = (
    "server closed the connection",
    "could not connect to server",
    "connection refused",
    "terminating connection",
    "connection to server",
    "the database system is starting up",
    "the database system is shutting down",
)


def _any_failure(run: DbtRun, patterns) -> bool:
    return any(p in f.message.lower() for f in run.failures for p in patterns)


def credentials_refused(run: DbtRun) -> bool:
    """One of dbt's connections had its credentials refused (a password rotated while
    the pipeline's own session stayed open, an expired IAM token)."""
    return _any_failure(run, CREDENTIALS_REFUSED)


def connection_failed(run: DbtRun) -> bool:
    """dbt could not log in, was refused by TLS, or lost its connection: not the data's
    fault, nor the project's."""
    return _any_failure(run, (*CREDENTIALS_REFUSED, *TLS_REFUSED, *_CONNECTION_LOST))


def raise_for_failures(run: DbtRun, what: str) -> None:
    if run.success:
        return
    names = "; ".join(str(f) for f in run.failures) or "dbt reported failure"
    if credentials_refused(run):
        raise LoginRefused(
            f"{what} could not log in, nothing was unloaded or loaded: {names}. Check the "
            "login's password or secret (it may have been rotated), then re-run the same day"
        )
    if _any_failure(run, TLS_REFUSED):
        raise LoginRefused(
            f"{what} failed the TLS check, nothing was unloaded or loaded: {names}; {TLS_FIX}"
        )
    if _any_failure(run, _CONNECTION_LOST):
        raise DatabaseUnavailable(
            f"{what} lost its database connection, nothing was unloaded or loaded: {names}. "
            "Re-run the same day once the database is reachable"
        )
    raise DataTestsFailed(
        f"{what} failed, nothing was unloaded or loaded: {names}. Fix the data or the model, "
        "then re-run the same day",
        failures=[f.unique_id for f in run.failures],
    )
