"""A loopback HTTP proxy between botocore and the moto server that injects faults.

moto cannot fail on purpose, so the fault tests point ``AWS_ENDPOINT_URL`` here.
Every request is forwarded to moto unless a rule matches it; a rule can answer with
an S3 error (500 InternalError, 503 SlowDown), drop the connection in the middle of
the request body (an upload) or of the response body (a download), hold a response
half-sent until the test releases it, or run a callback before forwarding. Each
request is logged, so a test can assert how often a call was tried and what was
asked for (a ``Range`` header after a dropped download, a forced secret re-read).
"""

from __future__ import annotations

import http.client
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

_ERRORS = {
    500: ("InternalError", "We encountered an internal error. Please try again."),
    503: ("SlowDown", "Please reduce your request rate."),
}


@dataclass
class Rule:
    """Which requests to break, how, and how many times (``times=None``: always)."""

    action: str  # "error", "drop_upload", "drop_download", "stall", "hook"
    method: str | None = None
    path: str = ""  # a regular expression searched in the unquoted path
    target: str | None = None  # X-Amz-Target of JSON APIs (Secrets Manager)
    times: int | None = 1
    status: int = 503
    hook: Callable[[], None] | None = None
    released: threading.Event = field(default_factory=threading.Event)
    # How many requests this rule has affected so far.
    hits: int = 0
    # Set when a stalled response has sent its first half.
    stalled: threading.Event = field(default_factory=threading.Event)

    def matches(self, method: str, path: str, target: str | None) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method and self.method != method:
            return False
        if self.target and self.target != target:
            return False
        return re.search(self.path, path) is not None


@dataclass(frozen=True)
class Logged:
    at: float
    method: str
    path: str
    query: str
    target: str | None
    range: str | None
    action: str  # "forwarded" or the rule's action
    status: int | None


class FaultProxy:
    def __init__(self, upstream: str):
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.rules: list[Rule] = []
        self.log: list[Logged] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                proxy._handle(self)

            do_PUT = do_POST = do_DELETE = do_HEAD = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        for rule in self.rules:
            rule.released.set()
        self.server.shutdown()
        self.server.server_close()

    def add(self, action: str, **kwargs) -> Rule:
        rule = Rule(action=action, **kwargs)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            for rule in self.rules:
                rule.released.set()
            self.rules.clear()

    def requests(self, method: str | None = None, path: str = "", target: str | None = None):
        return [
            r
            for r in self.log
            if (method is None or r.method == method)
            and re.search(path, r.path)
            and (target is None or r.target == target)
        ]

    # -- the request path ---------------------------------------------------------

    def _rule_for(self, method: str, path: str, target: str | None) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.matches(method, path, target):
                    rule.hits += 1
                    return rule
        return None

    def _record(self, handler, path, query, target, action, status) -> None:
        with self._lock:
            self.log.append(
                Logged(
                    time.monotonic(),
                    handler.command,
                    path,
                    query,
                    target,
                    handler.headers.get("Range"),
                    action,
                    status,
                )
            )

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        path, query = unquote(parts.path), parts.query
        target = handler.headers.get("X-Amz-Target")
        length = int(handler.headers.get("Content-Length") or 0)
        rule = self._rule_for(handler.command, path, target)
        action = rule.action if rule else "forwarded"

        if rule and rule.action == "drop_upload":
            # Take part of the body, then reset the connection under the client.
            handler.rfile.read(max(1, length // 2) if length else 0)
            self._record(handler, path, query, target, action, None)
            _reset(handler)
            return
        body = handler.rfile.read(length) if length else b""
        if rule and rule.action == "error":
            self._record(handler, path, query, target, action, rule.status)
            _send_error(handler, rule.status)
            return
        if rule and rule.action == "hook" and rule.hook is not None:
            rule.hook()

        status, headers, payload = self._forward(handler, body)
        self._record(handler, path, query, target, action, status)
        if rule and rule.action in ("drop_download", "stall") and len(payload) > 1:
            half = len(payload) // 2
            _send_head(handler, status, headers)
            handler.wfile.write(payload[:half])
            handler.wfile.flush()
            if rule.action == "drop_download":
                # A plain close, not a reset: a reset could discard the half already
                # sent before the client reads it, and then botocore retries the whole
                # request instead of the reader resuming it.
                handler.close_connection = True
                return
            rule.stalled.set()
            rule.released.wait(120)
            try:
                handler.wfile.write(payload[half:])
                handler.wfile.flush()
            except OSError:
                handler.close_connection = True
            return
        _send_head(handler, status, headers)
        if handler.command != "HEAD":
            handler.wfile.write(payload)
        handler.wfile.flush()

    def _forward(self, handler, body: bytes):
        conn = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            headers = {
                k: v
                for k, v in handler.headers.items()
                if k.lower() not in ("expect", "connection", "transfer-encoding")
            }
            headers["Content-Length"] = str(len(body))
            conn.request(handler.command, handler.path, body=body, headers=headers)
            response = conn.getresponse()
            payload = response.read()
            kept = [
                (k, v)
                for k, v in response.getheaders()
                if k.lower() not in ("connection", "transfer-encoding", "content-length", "server")
            ]
            kept.append(("Content-Length", str(len(payload))))
            return response.status, kept, payload
        finally:
            conn.close()


def _send_head(handler, status: int, headers) -> None:
    handler.send_response(status)
    for key, value in headers:
        handler.send_header(key, value)
    handler.end_headers()


def _send_error(handler, status: int) -> None:
    code, message = _ERRORS.get(status, ("InternalError", "injected"))
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        "<RequestId>fault-proxy</RequestId></Error>"
    ).encode()
    _send_head(
        handler, status, [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))]
    )
    handler.wfile.write(body)
    handler.wfile.flush()


def _reset(handler) -> None:
    """Close with RST rather than FIN: the client sees 'connection reset by peer'."""
    sock = handler.connection
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    except OSError:
        pass
    handler.close_connection = True
