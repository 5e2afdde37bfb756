"""Fault 5: the S3 stage fails: errors, throttling and dropped connections on some calls
(retried with backoff, the night completes), or for good (nothing half-done is left).

The fault proxy sits between botocore and moto; each rule names the calls it breaks.
"""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from dbt_project.pipeline import Pipeline
from dbt_project.request import NightRequest
from tests.faults import harness
from tests.pipeline_helpers import snapshot

# ETL_S3_MAX_ATTEMPTS counts every try, the first included.
TRIES = 4
# (action, method, file, times, status): the first `times` matching calls fail.
EXTRACT_FAULTS = [
    ("error", "PUT", "customer_analytics.tsv.gz", 2, 503),
    ("error", "PUT", "product_sales_summary.tsv.gz", 1, 500),
    ("drop_upload", "PUT", "daily_sales_summary.tsv.gz", 1, None),
    ("drop_upload", "PUT", "run_window_days.tsv.gz", 1, None),
    ("error", "PUT", "run_window_days.tsv.gz", 1, 503),
    ("error", "PUT", "_dbt/run_results.json", 1, 503),
    ("error", "PUT", "_manifest.json", 1, 500),
    ("drop_upload", "PUT", "_manifest.json", 1, None),
]
LOAD_FAULTS = [
    ("error", "GET", "_manifest.json", 1, 503),
    ("drop_download", "GET", "customer_analytics.tsv.gz", 1, None),
    ("error", "GET", "product_sales_summary.tsv.gz", 2, 500),
    ("drop_download", "GET", "daily_sales_summary.tsv.gz", 2, None),
    ("error", "GET", "run_window_days.tsv.gz", 1, 503),
    ("error", "GET", "run_window_removed_customers.tsv.gz", 1, 503),
]


def _describe(faults) -> str:
    names = {"drop_upload": "reset mid-upload", "drop_download": "connection cut mid-download"}
    parts = []
    for action, method, name, times, status in faults:
        what = {500: "500 InternalError", 503: "503 SlowDown"}.get(status) or names[action]
        parts.append(f"{method} {name}: {what} x{times}")
    return "; ".join(parts)


def _inject(proxy, faults) -> None:
    for action, method, name, times, status in faults:
        kwargs = {"status": status} if status else {}
        proxy.add(action, method=method, path=f"/{name}$", times=times, **kwargs)


def _tries(proxy, method: str, name: str) -> int:
    return len(proxy.requests(method, f"/{name}$"))


def _bucket_objects(bucket: str) -> dict[str, bytes]:
    stage = harness.stage_for(bucket)
    return {key: stage.get_bytes(key) for key in stage.list("etl-data/")}


@pytest.fixture
def source(nights):
    database = harness.extract_database(nights.source)
    yield database
    database.close()


def test_the_extract_survives_transient_stage_faults_and_a_permanent_one_leaves_no_manifest(
    fault, nights, dbt, proxy, source, monkeypatch
):
    day, golden = nights.days[-1], nights.keys[-1]
    record = fault(
        "5. stage faults during the extract",
        "PUT run_window_days.tsv.gz: 500 on every try (ETL_S3_MAX_ATTEMPTS=4); then a re-run "
        "with " + _describe(EXTRACT_FAULTS),
    )
    bucket = harness.new_bucket()

    # given a stage that refuses one file for good
    monkeypatch.setenv("ETL_S3_MAX_ATTEMPTS", str(TRIES))
    proxy.add("error", method="PUT", path="/run_window_days.tsv.gz$", times=None, status=500)
    with pytest.raises(ClientError, match="InternalError") as failed:
        Pipeline(dbt=dbt, source=source, stage=harness.stage_for(bucket, proxy.url)).extract(
            NightRequest(day)
        )
    assert _tries(proxy, "PUT", "run_window_days.tsv.gz") == TRIES
    left = harness.stage_for(bucket).list("etl-data/")
    assert not [k for k in left if k.endswith("_manifest.json") or "/_dbt/" in k], left
    record.check(
        f"permanent: {TRIES} tries, then {type(failed.value).__name__}; no manifest, no dbt "
        f"artifacts ({len(left)} orphan data files, no manifest names them)"
    )

    # when the night is re-run through transient faults
    proxy.clear()
    monkeypatch.delenv("ETL_S3_MAX_ATTEMPTS")
    _inject(proxy, EXTRACT_FAULTS)
    result = Pipeline(dbt=dbt, source=source, stage=harness.stage_for(bucket, proxy.url)).extract(
        NightRequest(day)
    )

    # then every faulty call was retried and the night is the clean one
    for _, method, name, _, _ in EXTRACT_FAULTS:
        faults = sum(f[3] for f in EXTRACT_FAULTS if f[2] == name)
        assert _tries(proxy, method, name) >= faults + 1, (name, proxy.requests(method, name))
    record.check("transient: every failed PUT retried until it succeeded")
    objects = _bucket_objects(bucket)
    assert nights.rows(result.manifest_key, objects) == nights.rows(golden)
    record.check("the re-run's files hold exactly the rows of the clean night")


def test_the_load_survives_transient_stage_faults_and_a_permanent_one_changes_nothing(
    fault, nights, new_target, proxy
):
    record = fault(
        "5. stage faults during the load",
        "`etl load` with GET daily_sales_summary.tsv.gz: 503 on every try "
        "(ETL_S3_MAX_ATTEMPTS=4); then re-delivered with " + _describe(LOAD_FAULTS),
    )
    target = new_target()
    bucket = nights.bucket()
    nights.seed(target, bucket, 2)
    key = nights.keys[2]
    args = harness.load_args(bucket, key, target)

    proxy.add("error", method="GET", path="/daily_sales_summary.tsv.gz$", times=None, status=503)
    code, out, err = harness.etl(
        *args, env=harness.cli_env(proxy.url, ETL_S3_MAX_ATTEMPTS=str(TRIES))
    )
    assert code == 5, (out, err)
    assert "SlowDown" in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert _tries(proxy, "GET", "daily_sales_summary.tsv.gz") == TRIES
    assert snapshot(target) == nights.clean[2]
    record.check(
        f"permanent: {TRIES} tries, exit {code}, target and ledger unchanged; "
        f"one line: {harness.said(err, 90)}"
    )

    proxy.clear()
    _inject(proxy, LOAD_FAULTS)
    code, out, err = harness.etl(*args, env=harness.cli_env(proxy.url))
    assert code == 0 and ": loaded," in out, err
    for _, method, name, _, _ in LOAD_FAULTS:
        faults = sum(f[3] for f in LOAD_FAULTS if f[2] == name)
        assert _tries(proxy, method, name) >= faults + 1, name
    resumed = [r for r in proxy.requests("GET") if r.range]
    assert {r.path.rsplit("/", 1)[1] for r in resumed} >= {
        "customer_analytics.tsv.gz",
        "daily_sales_summary.tsv.gz",
    }
    record.check(
        f"transient: every failed GET retried; {len(resumed)} downloads resumed with a Range"
    )
    assert snapshot(target) == nights.clean[3]
    harness.load_all(target, harness.stage_for(bucket), nights.fault_keys[3:])
    assert snapshot(target) == nights.final
    record.check("target equals the clean run")
