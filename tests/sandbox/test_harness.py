"""The sandbox itself: it must look like Lambda where dbt notices the difference."""

from __future__ import annotations

import sysconfig
from pathlib import Path

from .lambda_sandbox import run_python

DBT_ENVIRONMENT = {
    "ETL_DBT_PROJECT_DIR": "/opt/dbt",
    "DBT_TARGET_PATH": "/tmp/dbt/target",  # noqa: S108 - Lambda's writable folder
    "DBT_LOG_PATH": "/tmp/dbt/logs",  # noqa: S108
    "DO_NOT_TRACK": "1",
}
# Sandboxed code reports with say(): dbt prints to stdout too.
SAY = "def say(*words):\n    print('@', *words, flush=True)\n"
PARSE = """
from dbt.cli.main import dbtRunner
version = dbtRunner().invoke(["--version"])
parse = dbtRunner().invoke(["parse", "--project-dir", "/opt/dbt", "--profiles-dir", "/opt/dbt"])
say("version", version.success)
say("parse", parse.success, type(parse.exception).__name__ if parse.exception else "-")
"""


def outcome(completed) -> dict[str, str]:
    """What the sandboxed code reported with ``say(key, value...)``."""
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = (line[2:] for line in completed.stdout.splitlines() if line.startswith("@ "))
    return dict(line.split(" ", 1) for line in lines)


def test_only_tmp_is_writable_there_is_no_shm_and_no_network(bare_function):
    # A host folder outside /tmp (the checkout may live under /tmp, which the sandbox
    # replaces): the interpreter's own standard library.
    host_file = Path(sysconfig.get_paths()["stdlib"]) / "sandbox-write-probe"
    completed = run_python(
        bare_function,
        SAY
        + f"""
import errno, multiprocessing, os, socket
say("shm", os.path.exists("/dev/shm"))
for name, path in (("task", "/var/task/x"), ("opt", "/opt/x"), ("host", {str(host_file)!r}),
                   ("tmp", "/tmp/x")):
    try:
        with open(path, "w") as handle:
            handle.write("x")
        say(name, "writable")
    except OSError as error:
        say(name, errno.errorcode[error.errno])
try:
    multiprocessing.Lock()
    say("mp-lock", "works")
except OSError as error:
    say("mp-lock", errno.errorcode[error.errno])
try:
    socket.create_connection(("192.0.2.1", 443), timeout=3)
    say("internet", "reachable")
except OSError:
    say("internet", "unreachable")
server = socket.create_server(("127.0.0.1", 0))
socket.create_connection(server.getsockname(), timeout=3).close()
say("loopback", "works")
""",
    )
    seen = outcome(completed)
    assert not host_file.exists()
    assert seen == {
        "shm": "False",
        "task": "EROFS",
        "opt": "EROFS",
        "host": "EROFS",
        "tmp": "writable",
        "mp-lock": "ENOENT",
        "internet": "unreachable",
        "loopback": "works",
    }


def test_dbt_fails_there_without_the_lock_patch(bare_function):
    """The sandbox reproduces Lambda's failure: dbt's multiprocessing locks need /dev/shm."""
    seen = outcome(run_python(bare_function, SAY + PARSE, env=DBT_ENVIRONMENT))
    assert seen["version"] == "True"
    assert seen["parse"].startswith("False")


def test_dbt_parses_the_project_from_the_layers_with_the_lock_patch(bare_function):
    """As deployed: the package and the project from the common layer, dbt from the other."""
    code = SAY + "import dbt_project.dbt_runner\n" + PARSE
    seen = outcome(run_python(bare_function, code, env=DBT_ENVIRONMENT))
    assert seen == {"version": "True", "parse": "True -"}
