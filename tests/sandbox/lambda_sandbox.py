"""Run a function's code as deployed, in a Lambda-like sandbox, without Docker or the RIE.

Lambda runs the handler from ``/var/task`` with its layers merged into ``/opt``; the
whole file system is read-only except ``/tmp``, there is no ``/dev/shm`` (so
multiprocessing locks fail), and a function in a VPC without NAT reaches nothing
outside it. This module reproduces that with Linux mount and network namespaces
(``unshare -m -n``, needs root):

* ``/dev`` is a fresh tmpfs holding null, zero, random, urandom, full and tty only;
* ``/var`` shows the assembled ``var/`` (``/var/task`` the code, ``/var/runtime`` any
  packages the Lambda runtime would provide) and ``/opt`` the merged layers;
* every mount is remounted read-only, then a fresh tmpfs goes on ``/tmp``;
* the network namespace has loopback only (for moto or a local PostgreSQL, reached
  through a Unix socket or a port opened inside).

Use::

    function = assemble_function(handler_dir, [deps_layer, common_layer], tmp_path / "fn")
    result = run_python(function, "import dbt_project", env={...})
    outcome = invoke(function, {"run_date": "2026-11-26"}, env={...})

The layers must be built for this machine's Python (``build_layers.py --platform
manylinux2014_x86_64 --python-version 3.11``); the interpreter is this one, run
with ``-S`` so that nothing of the host's site-packages leaks in.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULT_MARKER = "\x1esandbox-result:"
DEFAULT_REGION = "ap-northeast-1"

# Runs as root inside the new namespaces; "$1" is the assembled root, then the argv.
_SETUP = r"""
set -eu
root="$1"; shift
mount -t tmpfs -o mode=755,nosuid,size=1m sandbox-dev "$root/dev"
for name in null zero random urandom full tty; do
    [ -e "/dev/$name" ] || continue
    touch "$root/dev/$name"
    mount --bind "/dev/$name" "$root/dev/$name"
done
ln -s /proc/self/fd "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"
ln -s /proc/self/fd/1 "$root/dev/stdout"
ln -s /proc/self/fd/2 "$root/dev/stderr"
mount --bind "$root/opt" /opt
mount --bind "$root/var" /var
mount --move "$root/dev" /dev
awk '{print $5}' /proc/self/mountinfo | while read -r point; do
    case "$point" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*) continue ;; esac
    mount -o remount,bind,ro "$point" 2>/dev/null || true
done
mount -t tmpfs -o mode=1777,nosuid,nodev,size=512m sandbox-tmp /tmp
ip link set lo up
cd /var/task
exec "$@"
"""


class SandboxUnavailable(RuntimeError):
    """This machine cannot make the sandbox (not root, no unshare, interpreter in /tmp)."""


@dataclass(frozen=True)
class AssembledFunction:
    """A function laid out as Lambda lays it out, under ``root``."""

    root: Path
    name: str

    @property
    def task(self) -> Path:
        return self.root / "var" / "task"

    @property
    def opt(self) -> Path:
        return self.root / "opt"

    @property
    def runtime(self) -> Path:
        return self.root / "var" / "runtime"


@dataclass(frozen=True)
class Invocation:
    """What ``invoke`` saw: the handler's return value (or error) and the output."""

    result: Any
    error: str | None
    stdout: str
    stderr: str
    returncode: int


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def _copy_tree(source: Path, destination: Path) -> None:
    shutil.copytree(
        source,
        destination,
        dirs_exist_ok=True,
        copy_function=_link_or_copy,
        ignore=shutil.ignore_patterns("__pycache__"),
    )


def assemble_function(
    handler_dir: Path,
    layer_dirs: Sequence[Path],
    destination: Path,
    *,
    runtime_packages: Sequence[str] = (),
) -> AssembledFunction:
    """Lay out ``handler_dir`` at ``var/task`` and the layers, in order, into ``opt``.

    A later layer overwrites an earlier one's files, as in Lambda. ``runtime_packages``
    (e.g. ``("boto3", "botocore", "s3transfer")``) are copied from this environment to
    ``var/runtime``, where the Lambda Python runtime keeps the packages it provides.
    """
    destination.mkdir(parents=True, exist_ok=True)
    function = AssembledFunction(destination, handler_dir.name)
    _copy_tree(handler_dir, function.task)
    function.opt.mkdir(exist_ok=True)
    for layer in layer_dirs:
        _copy_tree(layer, function.opt)
    function.runtime.mkdir(exist_ok=True)
    for package in runtime_packages:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise SandboxUnavailable(f"{package} is not installed here to act as the runtime's")
        origin = Path(spec.origin)
        if origin.name == "__init__.py":
            _copy_tree(origin.parent, function.runtime / package)
        else:
            _link_or_copy(str(origin), str(function.runtime / origin.name))
    (destination / "dev").mkdir(exist_ok=True)
    return function


def _interpreter() -> Path:
    python = Path(sys.executable).resolve()
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    for path in (python, stdlib):
        if path.is_relative_to("/tmp"):  # noqa: S108 - the sandbox mounts over /tmp
            raise SandboxUnavailable(f"{path} lies under /tmp, which the sandbox replaces")
    return python


def unavailable_reason() -> str | None:
    """Why the sandbox cannot run here, or None when it can."""
    if sys.platform != "linux":
        return "needs Linux namespaces"
    if os.geteuid() != 0:
        return "needs root for mount namespaces"
    for tool in ("unshare", "mount", "ip", "awk"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not Path("/opt").is_dir():
        return "needs an /opt folder to mount the layers over"
    try:
        _interpreter()
    except SandboxUnavailable as error:
        return str(error)
    probe = subprocess.run(
        ["unshare", "--mount", "--net", "--propagation", "private", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        return f"unshare failed: {probe.stderr.strip()}"
    return None


def lambda_environment(
    function: AssembledFunction, env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The variables Lambda sets for a Python function, then ``env`` on top."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "LAMBDA_TASK_ROOT": "/var/task",
        "LAMBDA_RUNTIME_DIR": "/var/runtime",
        "PYTHONPATH": ":".join(
            [
                "/var/task",
                f"/opt/python/lib/python{version}/site-packages",
                "/opt/python",
                "/var/runtime",
            ]
        ),
        "AWS_LAMBDA_FUNCTION_NAME": function.name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_REGION": DEFAULT_REGION,
        "AWS_DEFAULT_REGION": DEFAULT_REGION,
        **(env or {}),
    }


def run_python(
    function: AssembledFunction,
    code: str,
    *,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -S -c code`` inside the sandbox, in ``/var/task``; never raises on exit."""
    reason = unavailable_reason()
    if reason:
        raise SandboxUnavailable(reason)
    command = [
        "unshare", "--mount", "--net", "--propagation", "private",
        "/bin/sh", "-c", _SETUP, "lambda-sandbox", str(function.root),
        str(_interpreter()), "-S", "-c", code,
    ]  # fmt: skip
    return subprocess.run(
        command,
        env=lambda_environment(function, env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


_INVOKE = """
import json, sys, time, traceback, uuid

class Context:
    def __init__(self, name, timeout):
        self.function_name = name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = 512
        self.aws_request_id = str(uuid.uuid4())
        self.invoked_function_arn = (
            f"arn:aws:lambda:{REGION}:123456789012:function:{name}"
        )
        self.log_group_name = f"/aws/lambda/{name}"
        self.log_stream_name = "sandbox"
        self._deadline = time.monotonic() + timeout

    def get_remaining_time_in_millis(self):
        return max(0, int((self._deadline - time.monotonic()) * 1000))

module_name, function_name = HANDLER.rsplit(".", 1)
event = json.loads(sys.stdin.read())
try:
    module = __import__(module_name)
    result = getattr(module, function_name)(event, Context(NAME, TIMEOUT))
    outcome = {"result": result, "error": None}
except Exception as exc:
    traceback.print_exc()
    outcome = {"result": None, "error": f"{type(exc).__name__}: {exc}"}
sys.stdout.flush()
print(MARKER + json.dumps(outcome, default=str), flush=True)
"""


def invoke(
    function: AssembledFunction,
    event: Mapping[str, Any],
    *,
    env: Mapping[str, str] | None = None,
    handler: str = "handler.handler",
    timeout: float = 300,
) -> Invocation:
    """Call ``handler(event, context)`` once inside the sandbox, as a cold start."""
    prelude = (
        f"HANDLER = {handler!r}\nNAME = {function.name!r}\nTIMEOUT = {timeout!r}\n"
        f"REGION = {DEFAULT_REGION!r}\nMARKER = {RESULT_MARKER!r}\n"
    )
    completed = run_python(
        function, prelude + _INVOKE, env=env, stdin=json.dumps(event), timeout=timeout + 30
    )
    outcome: dict[str, Any] = {"result": None, "error": "no result: the process died"}
    stdout_lines = []
    for line in completed.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            outcome = json.loads(line[len(RESULT_MARKER) :])
        else:
            stdout_lines.append(line)
    return Invocation(
        result=outcome["result"],
        error=outcome["error"],
        stdout="\n".join(stdout_lines),
        stderr=completed.stderr,
        returncode=completed.returncode,
    )


def this_machine_platform() -> tuple[str, str]:
    """(pip platform tag, Python version) to build layers that run here."""
    machine = {"arm64": "aarch64", "amd64": "x86_64"}.get(platform.machine().lower())
    return (
        f"manylinux2014_{machine or platform.machine()}",
        f"{sys.version_info.major}.{sys.version_info.minor}",
    )
