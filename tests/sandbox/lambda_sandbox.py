"""Run a function's code as deployed, in a Lambda-like sandbox, without Docker or the RIE.

Lambda runs the handler from ``/var/task`` with its layers merged into ``/opt``; the
whole file system is read-only except ``/tmp``, there is no ``/dev/shm`` (so
multiprocessing locks fail), and a function in a VPC without NAT reaches nothing
outside it; the code runs as an unprivileged user. This module reproduces that with
Linux mount, pid and network namespaces (``unshare -m -p -n``, needs root):

* the root is a minimal tree of its own: the host's ``/usr`` (libraries and tools)
  and this interpreter's prefix, an ``/etc`` of a few copied files, and nothing else
  of the host (no checkout, no ``/run``, no host Unix socket);
* ``/dev`` is a fresh tmpfs holding null, zero, random, urandom, full and tty only;
* ``/var`` shows the assembled ``var/`` (``/var/task`` the code, ``/var/runtime`` any
  packages the Lambda runtime would provide) and ``/opt`` the merged layers;
* every mount but ``/tmp`` (a fresh tmpfs), ``/proc`` and ``/dev`` is read-only, checked
  in ``/proc/self/mountinfo`` before the code starts;
* the code runs as uid 993 / gid 990 with no capabilities (``setpriv``), so it can
  neither remount nor write outside ``/tmp``;
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

# Lambda's sandbox user (sbx_user1051): the function never runs as root.
SANDBOX_UID = 993
SANDBOX_GID = 990
# Mount points that stay writable; every other mount must be read-only.
WRITABLE_MOUNTS = ("/tmp", "/proc", "/sys", "/dev")  # noqa: S108 - the sandbox's own /tmp
# What the runtime needs from the host's /etc (copied into the sandbox's own /etc).
_ETC_FILES = ("ld.so.cache", "ld.so.conf", "nsswitch.conf", "host.conf", "hosts", "localtime")

# Runs as root inside the new namespaces (mount, pid, and network unless joined):
# "$1" is the assembled root, "$2" the interpreter's prefix, then the argv. It builds
# a minimal root on a tmpfs (the host's /usr and the interpreter read-only, an /etc of
# a few copied files, the function's /var and /opt, fresh /dev, /proc and /tmp),
# pivots into it and detaches the host's tree, so no host path (nor a Unix socket on
# one) is left; checks every mount, then drops to the sandbox user without capabilities.
_SETUP = r"""
set -eu
root="$1"; prefix="$2"; shift 2
new="$root/rootfs"
mount -t tmpfs -o mode=755,nosuid,nodev,size=16m sandbox-root "$new"
binds=""
bind_ro() {  # bind_ro SOURCE TARGET: remounted read-only once the root is assembled
    mkdir -p "$2"
    mount --bind "$1" "$2"
    binds="$binds $2"
}
for top in bin sbin lib lib32 lib64 libx32 usr; do
    if [ -L "/$top" ]; then cp -P "/$top" "$new/$top"
    elif [ -d "/$top" ]; then bind_ro "/$top" "$new/$top"
    fi
done
case "$prefix" in /usr|/usr/*) ;; *) bind_ro "$prefix" "$new$prefix" ;; esac
bind_ro "$root/var" "$new/var"
bind_ro "$root/opt" "$new/opt"
mkdir -p "$new/etc"
for name in @ETC_FILES@; do
    if [ -e "/etc/$name" ]; then cp -L "/etc/$name" "$new/etc/$name"; fi
done
for name in alternatives ssl; do  # symlinks into /usr (awk, the CA bundle)
    if [ -d "/etc/$name" ]; then cp -a "/etc/$name" "$new/etc/$name"; fi
done
printf 'root:x:0:0:root:/root:/sbin/nologin\nsbx_user1051:x:@UID@:@GID@::/tmp:/sbin/nologin\n' \
    > "$new/etc/passwd"
printf 'root:x:0:\nsbx_user1051:x:@GID@:\n' > "$new/etc/group"
mkdir "$new/dev" "$new/proc" "$new/tmp" "$new/.host"
mount -t tmpfs -o mode=755,nosuid,size=1m sandbox-dev "$new/dev"
for name in null zero random urandom full tty; do
    [ -e "/dev/$name" ] || continue
    touch "$new/dev/$name"
    mount --bind "/dev/$name" "$new/dev/$name"
done
ln -s /proc/self/fd "$new/dev/fd"
ln -s /proc/self/fd/0 "$new/dev/stdin"
ln -s /proc/self/fd/1 "$new/dev/stdout"
ln -s /proc/self/fd/2 "$new/dev/stderr"
mount -t proc -o nosuid,nodev,noexec proc "$new/proc"
mount -t tmpfs -o mode=1777,nosuid,nodev,size=512m sandbox-tmp "$new/tmp"
for point in $binds; do
    mount -o remount,bind,ro "$point"
done
ip link set lo up
cd "$new"
pivot_root . .host
umount -l /.host
rmdir /.host
mount -o remount,bind,ro /
awk -v writable="@WRITABLE@" '
    BEGIN { split(writable, allowed, " ") }
    {
        exempt = 0
        for (i in allowed)
            if ($5 == allowed[i] || index($5, allowed[i] "/") == 1) exempt = 1
        if (!exempt && $6 !~ /^ro(,|$)/) { print "lambda-sandbox: " $5 " is writable"; bad = 1 }
    }
    END { exit bad }
' /proc/self/mountinfo >&2
cd /var/task
exec setpriv --reuid=@UID@ --regid=@GID@ --clear-groups --inh-caps=-all --bounding-set=-all \
    --no-new-privs -- "$@"
"""
_SETUP = (
    _SETUP.replace("@ETC_FILES@", " ".join(_ETC_FILES))
    .replace("@WRITABLE@", " ".join(WRITABLE_MOUNTS))
    .replace("@UID@", str(SANDBOX_UID))
    .replace("@GID@", str(SANDBOX_GID))
)


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
    (destination / "rootfs").mkdir(exist_ok=True)
    return function


def _interpreter() -> Path:
    python = Path(sys.executable).resolve()
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    for path in (python, stdlib):
        if path.is_relative_to("/tmp"):  # noqa: S108 - the sandbox mounts over /tmp
            raise SandboxUnavailable(f"{path} lies under /tmp, which the sandbox replaces")
        if not path.is_relative_to(_interpreter_prefix()):
            raise SandboxUnavailable(f"{path} lies outside {_interpreter_prefix()}")
    return python


def _interpreter_prefix() -> Path:
    """The folder the sandbox's root shows the interpreter from (its runtime)."""
    return Path(sys.base_prefix).resolve()


def unavailable_reason() -> str | None:
    """Why the sandbox cannot run here, or None when it can."""
    if sys.platform != "linux":
        return "needs Linux namespaces"
    if os.geteuid() != 0:
        return "needs root for mount namespaces"
    for tool in ("unshare", "mount", "ip", "awk", "setpriv", "pivot_root"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not Path("/opt").is_dir():
        return "needs an /opt folder to mount the layers over"
    try:
        _interpreter()
    except SandboxUnavailable as error:
        return str(error)
    probe = subprocess.run(
        ["unshare", "--mount", "--net", "--pid", "--fork", "--propagation", "private", "true"],
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
    # A pid namespace of its own: its /proc shows no host process (nor their roots).
    private = ["--mount", "--pid", "--fork", "--kill-child", "--propagation", "private"]
    if network is None:
        namespaces = ["unshare", "--net", *private]
    else:
        namespaces = ["nsenter", f"--net={network.path}", "unshare", *private]
    command = [
        *namespaces,
        "/bin/sh", "-c", _SETUP, "lambda-sandbox", str(function.root),
        str(_interpreter_prefix()), str(_interpreter()), "-S", "-c", code,
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
    setup: str = "",
) -> Invocation:
    """Call ``handler(event, context)`` once inside the sandbox, as a cold start.

    ``setup`` is code run first, in the same interpreter: what the test stands in for
    (an AWS service that the sandbox cannot reach, say)."""
    prelude = (
        f"HANDLER = {handler!r}\nNAME = {function.name!r}\nTIMEOUT = {timeout!r}\n"
        f"REGION = {DEFAULT_REGION!r}\nMARKER = {RESULT_MARKER!r}\n"
    )
    completed = run_python(
        function,
        prelude + setup + "\n" + _INVOKE,
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
