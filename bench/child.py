"""Run one measured task in a fresh Python process and report its time and peak memory.

Peak memory is the child's own high-water mark (``VmHWM``). Its ``ru_maxrss`` (from
``wait4``) is read too, but on Linux exec carries the parent's resident size at
spawn into it, so it is only used where ``/proc`` is missing.

Usage inside the child: ``python -m bench.child TASK PARAMS_JSON RESULT_PATH``.

Inside ``forking()`` (the smoke test's tiny size, where nothing is timed) the tasks
that import dbt run in a process forked from one that has imported it already
(``python -m bench.child --fork-server``): there a fresh import of dbt took some
2.5 s, most of each such child's time. The other tasks still start afresh.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The tasks that import dbt (bench/tasks.py and the modules it re-exports).
DBT_TASKS = frozenset(
    {
        "extract_calls",
        "nights",
        "analytics_side",
        "cold_night",
        "ship_project",
        "backfill_year",
        "history_load",
    }
)


@dataclass
class Measurement:
    task: str
    rows: int
    seconds: float
    peak_mb: float
    extra: dict = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


class ChildFailed(RuntimeError):
    pass


def run(task: str, *, child_env: dict[str, str] | None = None, **params) -> Measurement:
    """Run ``task`` (a function of ``bench.tasks``) with ``params`` in a new process,
    with ``child_env`` added to its environment."""
    with tempfile.TemporaryDirectory(prefix="etlbench-child-") as scratch:
        result_path = Path(scratch) / "result.json"
        env = _environment()
        env.setdefault("ETL_WORK_DIR", str(Path(scratch) / "work"))
        env.update(child_env or {})
        argv = [task, json.dumps(params), str(result_path)]
        if _fork_server is not None and task in DBT_TASKS:
            returncode, maxrss_kb = _fork_server.run(argv, env)
        else:
            process = subprocess.Popen(
                [sys.executable, "-m", "bench.child", *argv], cwd=ROOT, env=env
            )
            _, status, usage = os.wait4(process.pid, 0)
            returncode, maxrss_kb = os.waitstatus_to_exitcode(status), usage.ru_maxrss
        if returncode != 0 or not result_path.exists():
            raise ChildFailed(f"benchmark task {task} failed (exit {returncode})")
        result = json.loads(result_path.read_text())
    peak_kb = result.pop("peak_kb") or maxrss_kb
    result["ru_maxrss_mb"] = maxrss_kb / 1024
    return Measurement(
        task=task,
        rows=int(result.pop("rows")),
        seconds=float(result.pop("seconds")),
        peak_mb=peak_kb / 1024,
        extra=result,
    )


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.setdefault("DO_NOT_TRACK", "1")
    return env


class _ForkServer:
    """``python -m bench.child --fork-server``: one request line in, one reply line out."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.child", "--fork-server"],
            cwd=ROOT,
            env=_environment(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(self, argv: list[str], env: dict[str, str]) -> tuple[int, int]:
        """(exit code, peak resident kB) of ``main(argv)`` in a fork, under ``env``."""
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(json.dumps({"argv": argv, "env": env}) + "\n")
        self.process.stdin.flush()
        reply = self.process.stdout.readline()
        if not reply:
            raise ChildFailed(f"the fork server ended (exit {self.process.wait()})")
        done = json.loads(reply)
        return done["exit"], done["maxrss_kb"]

    def close(self) -> None:
        """End the server: it stops at the end of its input."""
        assert self.process.stdin and self.process.stdout
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()


_fork_server: _ForkServer | None = None


@contextmanager
def forking() -> Iterator[None]:
    """Within the block, the tasks that import dbt run forked from a warm process."""
    global _fork_server
    _fork_server = _ForkServer()
    try:
        yield
    finally:
        server, _fork_server = _fork_server, None
        server.close()


def _serve() -> int:
    """Import dbt and the tasks, then fork one child per request read from stdin."""
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # what the children print (dbt does) must not reach the replies
    # What every task that runs dbt imports (during a run dbt imports a few modules more).
    import dbt.adapters.postgres  # noqa: F401
    import dbt.cli.main  # noqa: F401

    import dbt_project.dbt_runner.runner  # noqa: F401 - its process-wide settings
    import dbt_project.pipeline  # noqa: F401
    from bench import tasks  # noqa: F401

    # Out of the collector's reach: its passes in every fork would walk, and so copy,
    # the pages of all that the imports made.
    gc.collect()
    gc.freeze()
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _forked(request)
        _, status, usage = os.wait4(pid, 0)
        exit_code = os.waitstatus_to_exitcode(status)
        replies.write(json.dumps({"exit": exit_code, "maxrss_kb": usage.ru_maxrss}) + "\n")
        replies.flush()
    return 0


def _forked(request: dict) -> None:
    code = 1
    try:
        os.environ.clear()
        os.environ.update(request["env"])
        code = main(request["argv"])
    except BaseException:  # noqa: BLE001 - reported, then the fork ends as a failure
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _peak_kb() -> int | None:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


def main(argv: list[str]) -> int:
    task, params, result_path = argv
    from bench import tasks

    result = dict(getattr(tasks, task)(**json.loads(params)))
    result["peak_kb"] = _peak_kb()
    Path(result_path).write_text(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(_serve() if sys.argv[1:] == ["--fork-server"] else main(sys.argv[1:]))
