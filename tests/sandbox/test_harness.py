"""The sandbox itself: it must look like Lambda where dbt notices the difference."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import sysconfig
import tempfile
from pathlib import Path

from infra.packaging.layers import REPO_ROOT

from .lambda_sandbox import SANDBOX_GID, SANDBOX_UID, WRITABLE_MOUNTS, run_python

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


def test_the_code_runs_unprivileged_and_cannot_remount(bare_function):
    completed = run_python(
        bare_function,
        SAY
        + """
import errno, os, subprocess
say("ids", os.getuid(), os.geteuid(), os.getgid(), os.getegid(), os.getgroups())
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
say("caps", *(status[name].strip() for name in ("CapPrm", "CapEff", "CapBnd", "CapAmb")))
for point in ("/var", "/opt", "/"):
    remount = subprocess.run(["mount", "-o", "remount,bind,rw", point], capture_output=True)
    say("remount" + point, remount.returncode)
for path in ("/var/task/x", "/opt/x"):
    try:
        open(path, "w").close()
        say("write" + path, "writable")
    except OSError as error:
        say("write" + path, errno.errorcode[error.errno])
""",
    )
    seen = outcome(completed)
    assert seen.pop("ids") == f"{SANDBOX_UID} {SANDBOX_UID} {SANDBOX_GID} {SANDBOX_GID} []"
    no_capabilities = "0000000000000000"
    assert seen.pop("caps") == " ".join([no_capabilities] * 4)
    # mount(8) exits 32 when the mount call fails (here: EPERM without CAP_SYS_ADMIN).
    assert seen == {
        "remount/var": "32",
        "remount/opt": "32",
        "remount/": "32",
        "write/var/task/x": "EROFS",
        "write/opt/x": "EROFS",
    }


def test_every_mount_but_tmp_proc_and_dev_is_read_only_and_none_is_the_host_s(bare_function):
    completed = run_python(
        bare_function,
        SAY + "say('mountinfo', open('/proc/self/mountinfo').read().replace(chr(10), '|'))\n",
    )
    mounts = {
        fields[4]: fields[5].split(",")
        for fields in (line.split() for line in outcome(completed)["mountinfo"].split("|") if line)
    }

    def exempt(point: str) -> bool:
        return any(point == top or point.startswith(top + "/") for top in WRITABLE_MOUNTS)

    writable = sorted(
        point for point, options in mounts.items() if not exempt(point) and "ro" not in options
    )
    assert not writable, f"writable mounts in the sandbox: {writable}"
    assert "rw" in mounts["/tmp"]  # noqa: S108 - the sandbox's own /tmp
    # The minimal root: the runtime (/usr, the interpreter), the function, /tmp, /proc,
    # /dev; no other host folder (the checkout, /run, /work) is mounted.
    interpreter_prefix = str(Path(sysconfig.get_paths()["stdlib"]).resolve().parent.parent)
    assert {point for point in mounts if not point.startswith("/dev/")} == {
        "/", "/usr", interpreter_prefix, "/var", "/opt", "/dev", "/proc", "/tmp",  # noqa: S108
    }  # fmt: skip


def test_the_network_is_loopback_only_and_the_host_s_loopback_is_out_of_reach(bare_function):
    # given a TCP listener on the host's loopback and an abstract Unix socket (both
    # live in the host's network namespace), each reachable from the host
    host_listener = socket.create_server(("127.0.0.1", 0))
    abstract_name = f"\0shop-etl-sandbox-probe-{secrets.token_hex(4)}"
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract.bind(abstract_name)
    abstract.listen()
    port = host_listener.getsockname()[1]
    with host_listener, abstract:
        socket.create_connection(("127.0.0.1", port), timeout=3).close()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(abstract_name)
        # when the sandboxed code tries them
        completed = run_python(
            bare_function,
            SAY
            + f"""
import errno, socket
say("interfaces", *sorted(name for _, name in socket.if_nameindex()))
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=3).close()
    say("host-loopback", "reachable")
except OSError as error:
    say("host-loopback", errno.errorcode.get(error.errno, error))
try:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect({abstract_name!r})
    say("host-abstract", "reachable")
except OSError as error:
    say("host-abstract", errno.errorcode.get(error.errno, error))
""",
        )
    # then only its own loopback exists, and nothing of the host's answers there
    assert outcome(completed) == {
        "interfaces": "lo",
        "host-loopback": "ECONNREFUSED",
        "host-abstract": "ECONNREFUSED",
    }


def test_a_host_unix_socket_is_out_of_reach(bare_function):
    # given a socket anyone may connect to, in a folder of the checkout (where the
    # local PostgreSQL keeps its socket), reachable from the host
    folder = Path(tempfile.mkdtemp(prefix=".sandbox-probe-", dir=REPO_ROOT))
    try:
        folder.chmod(0o755)
        path = folder / "s"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        listener.listen()
        # open to every user: only the sandbox's root can keep it out of reach
        os.chmod(path, 0o777)  # noqa: S103
        with listener:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.connect(str(path))
            # when the sandboxed code tries it
            completed = run_python(
                bare_function,
                SAY
                + f"""
import errno, os, socket
say("exists", os.path.exists({str(path)!r}))
try:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect({str(path)!r})
    say("connect", "reachable")
except OSError as error:
    say("connect", errno.errorcode.get(error.errno, error))
""",
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    # then the host path is not there at all
    assert outcome(completed) == {"exists": "False", "connect": "ENOENT"}


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
