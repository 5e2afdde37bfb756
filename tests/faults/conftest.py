"""Fixtures of the fault-injection suite, and its report: one line per fault.

The expensive part, real dbt extracts of a generated shop, runs once per session
(``nights``): four nights written to a moto S3 bucket, and the target's exact
contents after each of them loaded in order (the clean run every fault is held to).
Each test copies those stage objects to a bucket of its own and loads into a
database of its own, so a test can damage what it likes.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import date, timedelta

import pytest
from psycopg2 import sql

from dbt_project.dbt_runner.runner import DbtProject
from dbt_project.facts.stage_layout import day_prefix
from dbt_project.pipeline import Pipeline
from dbt_project.postgres.connection import PgSettings, connect
from dbt_project.postgres.logins import create_extract_login
from dbt_project.postgres.source_schema import create_source_tables
from dbt_project.request import NightRequest
from tests import reference
from tests.datagen import Shop
from tests.faults import harness
from tests.faults.proxy import FaultProxy
from tests.pipeline_helpers import snapshot

FIRST = date(2026, 4, 26)
HISTORY_END = date(2026, 5, 10)
FAULT_NIGHTS = 4  # the history night and three nights of traffic


# -- the report ----------------------------------------------------------------------


@dataclass
class FaultRecord:
    fault: str
    injected: str
    checks: list[str] = field(default_factory=list)
    outcome: str = "not run"
    seconds: float = 0.0
    error: str = ""

    def check(self, what: str) -> None:
        """Call after the assertions of ``what`` passed."""
        self.checks.append(what)

    def line(self) -> str:
        verdict = "PASS" if self.outcome == "passed" else "FAIL"
        checks = "; ".join(self.checks) or "none"
        tail = f" | FAILED: {self.error}" if self.error else ""
        return (
            f"{verdict} | {self.fault} | injected: {self.injected} | checked: {checks}{tail} "
            f"| {self.seconds:.1f}s"
        )


_RECORDS = pytest.StashKey[list]()


def pytest_configure(config):
    config.stash[_RECORDS] = []
    # The moto server logs every request; the proxy's log is the one the tests read.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    record = getattr(item, "fault_record", None)
    if record is not None and report.when == "call":
        record.outcome = report.outcome
        record.seconds = report.duration
        if report.failed:
            message = str(call.excinfo.value).strip().splitlines()
            record.error = message[0][:300] if message else call.excinfo.typename
    elif record is not None and report.failed and record.outcome == "not run":
        record.outcome = "failed"
        record.error = f"{report.when} failed"
    return report


@pytest.fixture
def fault(request) -> FaultRecord:
    """Describe the fault a test injects; its checks and outcome go to the report."""
    records = request.config.stash[_RECORDS]

    def describe(name: str, injected: str) -> FaultRecord:
        record = FaultRecord(name, injected)
        request.node.fault_record = record
        records.append(record)
        return record

    return describe


def report_lines(records: list[FaultRecord]) -> list[str]:
    passed = sum(r.outcome == "passed" for r in records)
    tally = f"faults: {passed} passed, {len(records) - passed} failed"
    return [record.line() for record in records] + [tally] if records else []


def pytest_terminal_summary(terminalreporter, config):
    lines = report_lines(config.stash.get(_RECORDS, []))
    if lines:
        terminalreporter.section("fault injection report")
        for line in lines:
            terminalreporter.write_line(line)


def pytest_sessionfinish(session):
    # On an xdist worker: hand the report to the controller, which prints it
    # (tests/conftest.py), since a worker's terminal output is not shown.
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["fault_report"] = report_lines(session.config.stash.get(_RECORDS, []))


# -- environment -----------------------------------------------------------------------


@pytest.fixture(scope="package", autouse=True)
def private_work_dir(tmp_path_factory):
    """dbt's target and log folders of this suite, apart from any other run in the tree."""
    saved = os.environ.get("ETL_WORK_DIR")
    path = tmp_path_factory.mktemp("faults-work")
    os.environ["ETL_WORK_DIR"] = str(path)
    yield path
    if saved is None:
        os.environ.pop("ETL_WORK_DIR", None)
    else:
        os.environ["ETL_WORK_DIR"] = saved


@pytest.fixture(scope="package")
def dbt() -> DbtProject:
    return DbtProject()


@pytest.fixture
def proxy(moto_endpoint):
    with FaultProxy(moto_endpoint) as running:
        yield running


@pytest.fixture
def databases(new_database):
    """A factory of databases on the test server, dropped after the test. Their names
    are reused from test to test, and so is dbt's parse, which names the database."""
    return new_database


@pytest.fixture
def new_target(databases):
    return lambda: harness.prepare_target(databases("tgt"))


# -- the clean run ---------------------------------------------------------------------


@dataclass
class Nights:
    """Real nights on the stage: a history night, then a night per day of traffic.

    The faults use the first ``FAULT_NIGHTS`` of them; ``clean[k]`` is the target's
    exact contents after the first k of those, loaded in order. The soak uses all.
    """

    source: PgSettings
    days: list[date]
    keys: list[str]
    run_ids: list[str]
    objects: dict[str, bytes]
    clean: list[dict]
    seconds: float
    lookbacks: list[int] = field(default_factory=list)  # each night's lookback_days
    # Orders counted by an earlier night and cancelled on a day after their own day left
    # the night's lookback window: the late-update path.
    late_cancelled: list[int] = field(default_factory=list)

    @property
    def final(self) -> dict:
        return self.clean[FAULT_NIGHTS]

    @property
    def fault_keys(self) -> list[str]:
        return self.keys[:FAULT_NIGHTS]

    def bucket(self, every_night: bool = False) -> str:
        """A new bucket holding the files and manifests of the fault nights (or all)."""
        days = self.days if every_night else self.days[:FAULT_NIGHTS]
        prefixes = tuple(day_prefix(day) for day in days)
        return harness.new_bucket({k: v for k, v in self.objects.items() if k.startswith(prefixes)})

    def seed(self, target: PgSettings, bucket: str, count: int) -> None:
        """Load the first ``count`` nights, as a clean run would."""
        harness.load_all(target, harness.stage_for(bucket), self.keys[:count])
        assert snapshot(target) == self.clean[count]

    def rows(self, key: str, objects: dict[str, bytes] | None = None) -> dict[str, list[bytes]]:
        """Each file's rows (sorted) of the manifest ``key``: what a night carries."""
        objects = objects if objects is not None else self.objects
        manifest = json.loads(objects[key])
        return {
            entry["table"]: sorted(gzip.decompress(objects[entry["key"]]).splitlines())
            for entry in manifest["files"]
        }


def shop_night(shop: Shop, day: date, orders: int = 12, changes: int = 5) -> None:
    """One business day of traffic: new orders, late changes to old ones, and a few
    orders of the next day that are already in the source when the night runs."""
    shop.orders_on(day, orders)
    shop.late_changes(day, changes)
    shop.orders_on(day + timedelta(days=1), 2)


@pytest.fixture(scope="package")
def nights(pg_server, moto_endpoint, dbt, private_work_dir) -> Nights:
    """The real extracts of a generated shop, once for the whole suite."""
    started = time.perf_counter()
    source = harness.create_database(pg_server, "faultsrc")
    conn = connect(source)
    with conn:
        create_source_tables(conn)
        create_extract_login(conn, source.dbname)
    shop = Shop(conn, seed=20260510)
    shop.history(FIRST, HISTORY_END)
    bucket = harness.new_bucket()
    stage = harness.stage_for(bucket)
    database = harness.extract_database(source)
    days, keys, run_ids, lookbacks, late_cancelled = [], [], [], [], []
    for index in range(max(harness.soak_nights(), FAULT_NIGHTS) + 1):
        day = HISTORY_END + timedelta(days=index)
        lookback = (HISTORY_END - FIRST).days + 1 if index == 0 else 2
        if index:
            before = reference.order_states(source)
            shop_night(shop, day)
            after = reference.order_states(source)
            late_cancelled += reference.late_cancellations(before, after, day, lookback)
        result = Pipeline(dbt=dbt, source=database, stage=stage).extract(
            NightRequest(day, lookback)
        )
        days.append(day)
        lookbacks.append(lookback)
        keys.append(result.manifest_key)
        run_ids.append(result.run_id)
    database.close()
    conn.close()
    seconds = time.perf_counter() - started
    objects = {key: stage.get_bytes(key) for key in stage.list("etl-data/") if "/_dbt/" not in key}
    target = harness.prepare_target(harness.create_database(pg_server, "faultclean"))
    clean = [snapshot(target)]
    for key in keys[:FAULT_NIGHTS]:
        harness.load_all(target, stage, [key])
        clean.append(snapshot(target))
    harness.drop_databases(pg_server, [target.dbname])
    yield Nights(source, days, keys, run_ids, objects, clean, seconds, lookbacks, late_cancelled)
    harness.drop_databases(pg_server, [source.dbname])


@pytest.fixture
def source_copy(nights, pg_server, databases):
    """A copy of the generated shop's source database, to damage at will."""

    def make() -> PgSettings:
        copy = databases("srccopy")
        conn = harness.admin(pg_server.with_database("postgres"))
        with conn.cursor() as cur:
            cur.execute(sql.SQL("drop database {}").format(sql.Identifier(copy.dbname)))
            cur.execute(
                sql.SQL("create database {} template {}").format(
                    sql.Identifier(copy.dbname), sql.Identifier(nights.source.dbname)
                )
            )
        conn.close()
        return copy

    return make
