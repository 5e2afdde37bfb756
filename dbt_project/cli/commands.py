"""What each ``etl`` command does: it builds a request and the pipeline's parts from
its flags, calls one method of the pipeline, and prints what came of it."""

from __future__ import annotations

import json
import sys

import psycopg2

from dbt_project.cli.lines import night_line
from dbt_project.errors import ConfigError, brief
from dbt_project.facts import business_calendar
from dbt_project.facts.stage_layout import DATA_PREFIX, MANIFEST_NAME
from dbt_project.request import BackfillRequest, NightRequest, check_budget, parse_date
from dbt_project.settings import Settings

# Which parts of the pipeline a command reaches (flags and variables name them).
_NEEDS_ANALYTICS = {"init", "run", "load", "backfill", "docs", "runs", "plan"}
_NEEDS_SOURCE = {"init", "run", "extract", "backfill", "ci"}
_NEEDS_STAGE = {"run", "extract", "backfill", "ci"}


def _database(settings: Settings, url: str | None, flag: str, env: str):
    from dbt_project.postgres.connection import Database, PgSettings

    if not url:
        raise ConfigError(
            f"no database given: pass {flag} postgresql://user:pass@host/db or set {env}"
        )
    given = PgSettings.from_url(url)
    if not given.password and settings.pg_password:
        # libpq reads PGPASSWORD for the pipeline's own sessions, but dbt's profile
        # passes a password, empty or not: both get this one.
        given = given.with_credentials(given.user, settings.pg_password)
    return Database.from_settings(
        given,
        limits=settings.limits,
        connect_wait_seconds=settings.connect_wait_seconds,
    )


def _open_stage(args, uri: str | None):
    from dbt_project.stage import open_stage

    return open_stage(uri, s3_max_attempts=args.settings.s3_max_attempts)


def pipeline(args, *, stage_uri: str | None = None):
    """The parts this command uses, each checked before any connection is made."""
    from dbt_project.dbt_runner import DbtProject
    from dbt_project.pipeline import Pipeline

    settings, command = args.settings, args.command
    parts = Pipeline(dbt=DbtProject(settings=settings), gzip_level=settings.gzip_level)
    if command in _NEEDS_SOURCE:
        parts.source = _database(settings, args.source_url, "--source-url", "ETL_SOURCE_URL")
    if command in _NEEDS_ANALYTICS:
        parts.analytics = _database(
            settings, args.analytics_url, "--analytics-url", "ETL_ANALYTICS_URL"
        )
    if command in _NEEDS_STAGE or stage_uri:
        parts.stage = _open_stage(args, stage_uri or args.stage)
    return parts


def night_request(args) -> NightRequest:
    """The checked night of ``--date`` (default: the latest finished business day, as
    scheduled), before any connection: the same rules as the Lambda's events."""
    return NightRequest.of(
        args.date,
        lookback_days=args.lookback_days,
        skip_freshness=args.skip_freshness,
        full_refresh=getattr(args, "full_refresh", False),
        what="--date",
    )


def say(args, text: str) -> None:
    """A line for a person: on stdout, or on stderr when stdout carries ``--json``'s
    one JSON document (so that `etl run --json | jq` reads only JSON)."""
    print(text, file=sys.stderr if getattr(args, "json", False) else sys.stdout)


def emit_json(document) -> None:
    print(json.dumps(document, ensure_ascii=False, default=str))


def split_manifest_uri(uri: str) -> tuple[str, str]:
    """``<stage>/etl-data/D/_manifest.json`` -> (stage URI, key)."""
    marker = uri.rfind(DATA_PREFIX)
    if marker < 0 or not uri.endswith(MANIFEST_NAME):
        raise ConfigError(
            f"{uri!r} is not a manifest: give the path or s3:// URI ending in "
            f"{DATA_PREFIX}YYYY-MM-DD/{MANIFEST_NAME}"
        )
    return uri[:marker] or ".", uri[marker:]


def _sample_end_date(args):
    return parse_date(args.sample_end_date, "--sample-end-date") if args.sample_end_date else None


def cmd_dev_db(args) -> int:
    from dbt_project.local import devdb

    if args.action == "stop":
        stopped = devdb.stop(args.settings)
        print("local PostgreSQL stopped" if stopped else "the local PostgreSQL was not running")
        return 0
    result = devdb.prepare(args.settings, sample_end_date=_sample_end_date(args))
    inserted = ", ".join(f"{table} +{count}" for table, count in result.inserted.items())
    print(f"source database ready: {result.source.display} ({inserted})")
    print(f"analytics database:    {result.analytics.display}")
    if not result.server.embedded:
        print("an external server is in use: point dbt at it with")
        for key, value in devdb.dbt_exports(result).items():
            print(f"  export {key}={value}")
        if result.source.password:
            print("  and its password in DBT_ENV_SECRET_PG_PASSWORD (dbt keeps it out of its logs)")
    print("next: dbt build")
    return 0


def cmd_init(args) -> int:
    from dbt_project.upgrade import REPROCESS_BY_HAND

    today = business_calendar.business_date(business_calendar.utc_now())
    result = pipeline(args).init(
        sample_data=args.sample_data,
        sample_end_date=_sample_end_date(args) or today,
    )
    if result.sample_rows is not None:
        print("sample data: " + ", ".join(f"{t} +{n}" for t, n in result.sample_rows.items()))
    if result.sample_note:
        print(result.sample_note)
    for change in result.upgrade.changes if result.upgrade else ():
        where = ".".join(p for p in (result.upgrade.schema, change.table, change.column) if p)
        print(f"analytics table upgraded: {where}: {change.summary}")
    if result.removed:
        from dbt_project.pipeline import REMOVED_FROM_BUILD_SCHEMA

        print(
            f"etl: warning: {REMOVED_FROM_BUILD_SCHEMA}: {'; '.join(result.removed)}",
            file=sys.stderr,
        )
    print(
        f"source tables ready; analytics tables, ledger, roles and {result.views_built} views ready"
    )
    reprocess = result.models.reprocess if result.models else None
    if reprocess:
        print(f"{reprocess.line()}: run `{REPROCESS_BY_HAND}` (with your URLs and stage)")
    return 0


def cmd_plan(args) -> int:
    """What `etl init` (or the next deployment) would change; exits non-zero on a refusal."""
    planned = pipeline(args).upgrade_plan()
    if args.json:
        emit_json(planned.document)
    else:
        print("\n".join(planned.lines))
    planned.plan.tables.raise_if_refused()
    return 0


def cmd_extract(args) -> int:
    request = night_request(args)
    parts = pipeline(args)
    result = parts.extract(request)
    print(
        f"{result.run_date}: {result.rows_extracted} rows in {result.seconds:.1f}s; "
        f"manifest {parts.stage.describe(result.manifest_key)}"
    )
    return 0


def cmd_load(args) -> int:
    from dbt_project.load import LoadStatus
    from dbt_project.pipeline import raise_for_analytics

    stage_uri, key = split_manifest_uri(args.manifest)
    parts = pipeline(args, stage_uri=stage_uri)
    result = parts.load(key)
    print(
        f"{result.run_date}: {result.status}, {result.rows_loaded} rows changed "
        f"in {result.seconds:.1f}s"
    )
    if result.status is LoadStatus.LOADED and not args.skip_tests:
        raise_for_analytics(parts.test_analytics([result]))
    return 0


def cmd_run(args) -> int:
    from dbt_project.load import LoadStatus
    from dbt_project.load import report as reports
    from dbt_project.pipeline import raise_for_analytics

    request = night_request(args)
    parts = pipeline(args)
    night = parts.run_night(request, run_tests=not args.skip_tests)
    say(args, night_line(night))
    if night.load.status is LoadStatus.LOADED:
        report = reports.build(night.load, night.tests)
        try:
            reports.record(parts.analytics.connection(), report)
        except psycopg2.Error as exc:  # the night is committed: as the load function does
            print(
                f"etl: warning: the run report was not kept in ledger.run_reports "
                f"({brief(exc)}); the night's load stands",
                file=sys.stderr,
            )
        if args.json:
            emit_json(report)
        else:
            print(reports.as_text(report))
    elif args.json:  # a duplicate delivery has no report of its own
        emit_json(
            {"run_date": night.run_date, "status": night.load.status, "run_id": night.load.run_id}
        )
    raise_for_analytics(night.tests)
    return 0


def cmd_runs(args) -> int:
    from dbt_project.load import run_history

    since = parse_date(args.since, "--since") if args.since else None
    if args.limit < 1:
        raise ConfigError(f"--limit {args.limit} must be a whole number of nights, at least 1")
    conn = pipeline(args).analytics.connection()
    reports = run_history.recent_reports(
        conn, since=since, failed_only=args.failed, limit=args.limit
    )
    if args.json:
        emit_json(reports)
    else:
        print(run_history.as_text(reports))
    return 0


def backfill_request(args) -> BackfillRequest:
    """The checked range of ``--start``/``--end`` or ``--full-refresh``, before any
    connection: the same rules as the state machine's input."""
    budget = check_budget(args.budget_minutes, "--budget-minutes")
    if args.full_refresh:
        if args.start:
            raise ConfigError(
                "--full-refresh rebuilds the whole history from its first day: drop --start"
            )
        return BackfillRequest.refresh(args.end, budget_minutes=budget, what="--end")
    if not (args.start and args.end):
        raise ConfigError(
            "give --start and --end (YYYY-MM-DD), or --full-refresh for the whole history"
        )
    return BackfillRequest.of(args.start, args.end, budget_minutes=budget, what="--end")


def cmd_backfill(args) -> int:
    from dbt_project.cli.progress import ChunkProgress
    from dbt_project.pipeline import raise_for_analytics

    request = backfill_request(args)
    parts = pipeline(args)
    plan = parts.plan(request)
    print(plan.describe())
    last = None
    with ChunkProgress(plan) as progress:
        for chunk, night in parts.run_plan(plan, run_tests=not args.skip_tests):
            progress.done(chunk, night)
            last = night
    raise_for_analytics(last.tests if last else None)
    print(f"backfilled {plan.days} days, {plan.first}..{plan.last}, in {len(plan.chunks)} chunks")
    return 0


def cmd_docs(args) -> int:
    from dbt_project.dbt_runner.docs import write_docs
    from dbt_project.load import run_history

    parts = pipeline(args)
    page = write_docs(analytics=parts.analytics, dbt=parts.dbt, out=args.out)
    runs = run_history.write_page(
        parts.analytics.connection(),
        page.with_name(run_history.PAGE_NAME),
        business_calendar.utc_now(),
    )
    print(f"docs site written: {page.resolve().as_uri()}")
    print(f"run history:       {runs.resolve().as_uri()}")
    return 0


def cmd_ci(args) -> int:
    from dbt_project.dbt_runner import raise_for_failures, slim_ci
    from dbt_project.facts.names import SOURCE_TARGET
    from dbt_project.postgres.logins import run_as_extract_login

    parts = pipeline(args)
    if args.dbt_target == SOURCE_TARGET:  # the build schema: etl_extract's alone
        run_as_extract_login(parts.source)
    result = slim_ci.build_changed(
        parts.dbt,
        parts.source.settings,
        parts.stage,
        target=args.dbt_target,
        state_key=args.state_key,
    )
    say(args, f"compared with the deployed project: {parts.stage.describe(result.state_key)}")
    for unique_id in result.built:
        say(args, f"  {unique_id}")
    say(args, f"{len(result.built)} nodes built and tested" if result.built else "nothing changed")
    if args.json:
        emit_json({"state": result.state_key, "built": result.built, "success": result.run.success})
    raise_for_failures(result.run, "the slim CI build")
    return 0


def cmd_demo(args) -> int:
    from dbt_project.local.demo import run_demo

    return run_demo(args.settings)
