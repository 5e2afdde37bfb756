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
  through a Unix socket or a port opened inside). A ``NetworkNamespace`` is one such
  loopback-only network that outlives a single run: servers started in it (and code
  of this process run through ``NetworkNamespace.call``) are what the functions reach,
  as a function in a VPC reaches only its databases and endpoints.

Use::

    function = assemble_function(handler_dir, [deps_layer, common_layer], tmp_path / "fn")
    result = run_python(function, "import dbt_project", env={...})
    outcome = invoke(function, {"run_date": "2026-11-26"}, env={...})

    with NetworkNamespace() as network:
        network.call(start_servers)           # listening on 127.0.0.1 inside it
        outcome = invoke(function, event, env={...}, network=network)

The layers must be built for this machine's Python (``build_layers.py --platform
manylinux2014_x86_64 --python-version 3.11``); the interpreter is this one, run
with ``-S`` so that nothing of the host's site-packages leaks in.
"""

from __future__ import annotations

import ctypes
import fnmatch
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

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
    """What ``invoke`` saw: the handler's return value (or error) and the output.

    ``facts`` is what the process saw of its surroundings, before and after the handler
    ran: ``dev_shm`` (whether /dev/shm existed), ``interfaces`` (its network
    interfaces) and ``max_rss_mb`` (its peak resident memory).
    """

    result: Any
    error: str | None
    stdout: str
    stderr: str
    returncode: int
    facts: dict[str, Any] = field(default_factory=dict)


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def excluded(relative: str, patterns: Sequence[str]) -> bool:
    """Whether a CDK asset leaves out ``relative`` (a path inside the asset folder).

    CDK matches glob exclude patterns with minimatch's ``matchBase``: a pattern without
    a slash is matched against the last part of the path, at any depth; a folder that
    matches is left out with everything in it.
    """
    for pattern in patterns:
        if pattern.startswith("!"):
            raise ValueError(f"negated exclude pattern {pattern!r} is not supported here")
        if "/" in pattern.strip("/"):
            if fnmatch.fnmatchcase(relative, pattern.lstrip("/")):
                return True
        elif fnmatch.fnmatchcase(relative.rsplit("/", 1)[-1], pattern.strip("/")):
            return True
    return False


def _copy_tree(source: Path, destination: Path, exclude: Sequence[str] = ()) -> None:
    def ignore(folder: str, names: list[str]) -> set[str]:
        relative = Path(folder).relative_to(source).as_posix()
        prefix = "" if relative == "." else relative + "/"
        return {name for name in names if name == "__pycache__" or excluded(prefix + name, exclude)}

    shutil.copytree(
        source,
        destination,
        dirs_exist_ok=True,
        copy_function=_link_or_copy,
        ignore=ignore,
    )


def assemble_function(
    handler_dir: Path,
    layer_dirs: Sequence[Path],
    destination: Path,
    *,
    runtime_packages: Sequence[str] = (),
    exclude: Mapping[Path, Sequence[str]] | None = None,
) -> AssembledFunction:
    """Lay out ``handler_dir`` at ``var/task`` and the layers, in order, into ``opt``.

    A later layer overwrites an earlier one's files, as in Lambda. ``runtime_packages``
    (e.g. ``("boto3", "botocore", "s3transfer")``) are copied from this environment to
    ``var/runtime``, where the Lambda Python runtime keeps the packages it provides.
    ``exclude`` maps the handler folder or a layer folder to the exclude patterns its
    CDK asset is made with (see ``excluded``): what the asset leaves out is left out.
    """
    exclude = exclude or {}
    destination.mkdir(parents=True, exist_ok=True)
    function = AssembledFunction(destination, handler_dir.name)
    _copy_tree(handler_dir, function.task, exclude.get(handler_dir, ()))
    function.opt.mkdir(exist_ok=True)
    for layer in layer_dirs:
        _copy_tree(layer, function.opt, exclude.get(layer, ()))
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


_CLONE_NEWNET = 0x40000000


class NetworkNamespace:
    """A loopback-only network shared by sandbox runs and the servers they talk to.

    Each ``run_python`` otherwise gets a network of its own, which dies with it. Here a
    holder process keeps one alive; ``call`` runs a function of this process on a
    thread that has entered it, so that servers it starts (threads and child
    processes inherit the network) listen inside, and clients it opens connect inside.
    Servers started in it must be stopped by the caller before ``close``.
    """

    def __init__(self) -> None:
        reason = unavailable_reason() or (
            None if shutil.which("nsenter") else "nsenter is not installed"
        )
        if reason:
            raise SandboxUnavailable(reason)
        # The holder exits when its stdin closes: on close(), or when this process dies.
        self._holder = subprocess.Popen(
            ["unshare", "--net", "/bin/sh", "-c", "ip link set lo up && echo up && exec cat"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        if self._holder.stdout is None or self._holder.stdout.readline().strip() != "up":
            self._holder.kill()
            raise SandboxUnavailable("could not make a network namespace")
        self.path = f"/proc/{self._holder.pid}/ns/net"
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="netns")
        try:
            self.call(self._enter)
        except OSError:
            self.close()
            raise

    def _enter(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        descriptor = os.open(self.path, os.O_RDONLY)
        try:
            if libc.setns(descriptor, _CLONE_NEWNET) != 0:
                number = ctypes.get_errno()
                raise OSError(number, f"setns: {os.strerror(number)}")
        finally:
            os.close(descriptor)

    def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``function(*args, **kwargs)`` run inside the namespace; its result or exception."""
        return self._thread.submit(function, *args, **kwargs).result()

    def close(self) -> None:
        self._thread.shutdown(wait=True)
        if self._holder.stdin:
            self._holder.stdin.close()
        try:
            self._holder.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._holder.kill()
            self._holder.wait()
        if self._holder.stdout:
            self._holder.stdout.close()

    def __enter__(self) -> NetworkNamespace:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def run_python(
    function: AssembledFunction,
    code: str,
    *,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 300,
    network: NetworkNamespace | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -S -c code`` inside the sandbox, in ``/var/task``; never raises on exit.

    The run gets a loopback-only network of its own, or joins ``network``.
    """
    reason = unavailable_reason()
    if reason:
        raise SandboxUnavailable(reason)
    if network is None:
        namespaces = ["unshare", "--mount", "--net", "--propagation", "private"]
    else:
        namespaces = [
            "nsenter", f"--net={network.path}",
            "unshare", "--mount", "--propagation", "private",
        ]  # fmt: skip
    command = [
        *namespaces,
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
import json, os, resource, socket, sys, time, traceback, uuid

facts = {"dev_shm_before": os.path.exists("/dev/shm")}

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
facts["dev_shm"] = facts.pop("dev_shm_before") or os.path.exists("/dev/shm")
facts["interfaces"] = sorted(name for _, name in socket.if_nameindex())
facts["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
outcome["facts"] = facts
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
    network: NetworkNamespace | None = None,
) -> Invocation:
    """Call ``handler(event, context)`` once inside the sandbox, as a cold start."""
    prelude = (
        f"HANDLER = {handler!r}\nNAME = {function.name!r}\nTIMEOUT = {timeout!r}\n"
        f"REGION = {DEFAULT_REGION!r}\nMARKER = {RESULT_MARKER!r}\n"
    )
    completed = run_python(
        function,
        prelude + _INVOKE,
        env=env,
        stdin=json.dumps(event),
        timeout=timeout + 30,
        network=network,
    )
    outcome: dict[str, Any] = {"result": None, "error": "no result: the process died"}
    stdout_lines = []
    # Not splitlines(): it splits at the marker's record separator too.
    for line in completed.stdout.split("\n"):
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
        facts=outcome.get("facts", {}),
    )


def this_machine_platform() -> tuple[str, str]:
    """(pip platform tag, Python version) to build layers that run here."""
    machine = {"arm64": "aarch64", "amd64": "x86_64"}.get(platform.machine().lower())
    return (
        f"manylinux2014_{machine or platform.machine()}",
        f"{sys.version_info.major}.{sys.version_info.minor}",
    )
