"""Run one measured task in a fresh Python process and report its time and peak memory.

Peak memory is the child's own high-water mark (``VmHWM``). Its ``ru_maxrss`` (from
``wait4``) is read too, but on Linux exec carries the parent's resident size at
spawn into it, so it is only used where ``/proc`` is missing.

Usage inside the child: ``python -m bench.child TASK PARAMS_JSON RESULT_PATH``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        env.setdefault("ETL_WORK_DIR", str(Path(scratch) / "work"))
        env.setdefault("DO_NOT_TRACK", "1")
        env.update(child_env or {})
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.child", task, json.dumps(params), str(result_path)],
            cwd=ROOT,
            env=env,
        )
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0 or not result_path.exists():
            raise ChildFailed(f"benchmark task {task} failed (exit {process.returncode})")
        result = json.loads(result_path.read_text())
    peak_kb = result.pop("peak_kb") or usage.ru_maxrss
    result["ru_maxrss_mb"] = usage.ru_maxrss / 1024
    return Measurement(
        task=task,
        rows=int(result.pop("rows")),
        seconds=float(result.pop("seconds")),
        peak_mb=peak_kb / 1024,
        extra=result,
    )


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
    sys.exit(main(sys.argv[1:]))
