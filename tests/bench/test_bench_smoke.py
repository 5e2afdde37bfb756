"""The benchmark suite's machinery at a tiny size, so that it cannot silently rot.

No timing is asserted: at this size the numbers mean nothing. What is asserted is
that every case still runs against the project's code, yields its rows, and that
each judged row has the ratio (or figure) its target is checked on. The children that
import dbt are forked from a process that has imported it (``child.forking``), the
others start afresh as at every size: both ways of running a child are exercised.
"""

from __future__ import annotations

import re

import pytest

from bench import child
from bench.report import COLUMNS, table
from bench.suite import CASES, TINY, run

CASE_NUMBERS = {
    "load": "1 ",
    "unload": "2 ",
    "memory": "3 ",
    "history": "4 ",
    "dbt": "5 ",
    "night": "6 ",
    "queries": "7 ",
    "cold": "8 ",
    "reprocess": "9 ",
}
# The dbt case times calls only, the tests row of the queries case runs tests.
MOVES_ROWS = ("load", "unload", "memory", "history", "night", "queries", "cold", "reprocess")
# Rows that are an extrapolation, not a run of their own.
EXTRAPOLATED = "night by night (extrapolated)"
# The cold case measures, it judges nothing.
UNJUDGED = ("cold",)


# Two or three cases per test, each test a unit of its own under xdist, so that the
# two workers share the suite's children (each imports dbt and parses the project).
BATCHES = (
    ("history", "load", "unload"),
    ("night", "memory"),
    ("queries",),
    ("dbt", "cold"),
    ("reprocess",),
)


def test_a_forked_task_that_fails_is_reported_and_the_next_one_still_runs(tmp_path):
    # given a task asked for a day that does not exist, run in forks
    params = {
        "source": "postgresql://nobody@127.0.0.1:1/nothing",
        "stage": str(tmp_path / "stage"),
        "days": ["2026-02-30"],
        "lookback_days": 2,
    }
    with child.forking():
        for _ in range(2):
            # then each failure is the task's own (exit 1), not the server's end
            with pytest.raises(child.ChildFailed, match=r"task extract_calls failed \(exit 1\)"):
                child.run("extract_calls", **params)


def test_the_batches_cover_every_case():
    assert sorted(case for batch in BATCHES for case in batch) == sorted(CASES)


@pytest.mark.slow
@pytest.mark.parametrize(
    "cases",
    [
        pytest.param(b, id="-".join(b), marks=pytest.mark.xdist_group(f"bench-{b[0]}"))
        for b in BATCHES
    ],
)
def test_every_case_runs_and_reports_its_ratios(pg_server, cases):
    rows = run(TINY, cases=cases, server_url=pg_server.url)

    for case in cases:
        mine = [row for row in rows if row.case.startswith(CASE_NUMBERS[case])]
        assert mine, f"the {case} case produced no rows"
        assert any(row.ratio is not None for row in mine), f"the {case} case computed no ratio"
        if case not in UNJUDGED:
            assert any(row.target is not None for row in mine), f"the {case} case judges nothing"
        if case in MOVES_ROWS:
            moving = [
                row
                for row in mine
                if "tests alone" not in row.case and EXTRAPOLATED not in row.case
            ]
            assert all(row.rows and row.rows > 0 for row in moving), (
                f"the {case} case moved no rows"
            )
    if "queries" in cases:  # each example query at both sizes, with the plan's top nodes
        queries = [row for row in rows if row.case.startswith("7 query")]
        assert len(queries) == 8 and all("plan: " in row.note for row in queries)
    if "reprocess" in cases:  # the history load in chunks, none over a quarter of it
        (chunked,) = [
            row for row in rows if row.case.startswith("9 history") and "chunks" in row.case
        ]
        largest = re.search(r"(\d+) chunks, the largest (\d+)% of the orders", chunked.note)
        assert int(largest[1]) >= 4 and int(largest[2]) <= 25, chunked.note
    if "cold" in cases:
        cold = [row for row in rows if row.case.startswith("8 ")]
        assert "import" in cold[0].note and "parse" in cold[0].note
        assert "cold penalty" in cold[1].note
    for row in rows:
        if row.target is not None:
            assert row.seconds is not None and row.seconds > 0
            if row.target.text.startswith(("≥", "time")):
                assert row.ratio is not None and row.ratio > 0, row.case

    # The printed table: a header, a rule, then one line per row with every column,
    # each judged row showing its verdict (the verdict itself means nothing at this size).
    lines = table(rows).splitlines()
    assert len(lines) == len(rows) + 2

    def cells(line: str) -> list[str]:
        return [cell.strip() for cell in line.strip().strip("|").split(" | ")]

    assert cells(lines[0]) == list(COLUMNS)
    for line, row in zip(lines[2:], rows, strict=True):
        printed = cells(line)
        assert len(printed) == len(COLUMNS) and printed[0] == row.case, line
        verdict = printed[COLUMNS.index("result")]
        assert verdict == ("" if row.target is None else {True: "pass", False: "MISS"}[row.passed])
