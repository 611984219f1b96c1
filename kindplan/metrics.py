"""Prometheus metrics and /healthz of the reconcile loop (--metrics-addr), by prometheus-client."""

from __future__ import annotations

import errno
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kindplan.errors import UsageError

ROUND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """Every kindplan_* metric, in a registry of its own (not the process-wide default)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.rounds = Counter(
            "kindplan_rounds", "Reconcile rounds, by result.", ["result"], registry=r
        )
        self.round_duration = Histogram(
            "kindplan_round_duration_seconds",
            "Time of a reconcile round: read, observe, diff, apply, verify.",
            buckets=ROUND_BUCKETS,
            registry=r,
        )
        self.changes = Counter(
            "kindplan_changes_applied", "Changes applied, by kind.", ["kind"], registry=r
        )
        self.errors = Counter("kindplan_errors", "Errors, by kind.", ["kind"], registry=r)
        self.owned_routes = Gauge(
            "kindplan_owned_routes", "Routes carrying kindplan's route protocol.", registry=r
        )
        self.last_success = Gauge(
            "kindplan_last_success_timestamp_seconds",
            "Unix time of the last round that read its source and left the node converged.",
            registry=r,
        )
        self.pending = Gauge(
            "kindplan_plan_pending_changes",
            "Changes the last round left undone: held back, refused by the kernel, conflicts.",
            registry=r,
        )
        self.held = Gauge(
            "kindplan_deletions_held_back",
            "Route deletions the deletion guard holds back.",
            registry=r,
        )
        self.nodes = Gauge(
            "kindplan_snapshot_nodes", "Nodes in the last good snapshot.", registry=r
        )
        for result in ("converged", "changed", "failed"):
            self.rounds.labels(result)  # present at 0 from the start, so rate() works

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))


@dataclass
class Health:
    """Healthy while the last successful round (or the start) is younger than `max_age` seconds."""

    max_age: float
    since: float = field(default_factory=time.monotonic)  # start, then each success

    def succeeded(self) -> None:
        self.since = time.monotonic()

    def status(self) -> tuple[bool, str]:
        age = time.monotonic() - self.since
        if age <= self.max_age:
            return True, "ok"
        return False, f"no successful round for {age:.0f} s (limit {self.max_age:g} s)"


def parse_listen_address(text: str) -> tuple[str, int]:
    """'HOST:PORT', '[V6]:PORT' or ':PORT' (every address) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"--metrics-addr: {text!r} is not HOST:PORT")
    host = host.removeprefix("[").removesuffix("]") or "::"
    return host, int(port)


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6  # '::' also takes IPv4 (bindv6only is 0 by default)


def serve(address: str, metrics: Metrics, health: Health) -> ThreadingHTTPServer:
    """Serve /metrics and /healthz on `address` from a daemon thread; returns the server."""
    host, port = parse_listen_address(address)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                from prometheus_client import CONTENT_TYPE_LATEST

                self._reply(200, metrics.exposition(), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                ok, text = health.status()
                self._reply(200 if ok else 503, f"{text}\n".encode(), "text/plain")
            else:
                self._reply(404, b"not found: try /metrics or /healthz\n", "text/plain")

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # scrapes are not news
            pass

    try:
        try:
            server = (_Server6 if ":" in host else _Server)((host, port), Handler)
        except OSError as e:
            if not (e.errno == errno.EAFNOSUPPORT and host == "::"):
                raise
            server = _Server(("0.0.0.0", port), Handler)  # a node booted with IPv6 disabled
    except OSError as e:
        raise UsageError(f"--metrics-addr {address}: cannot listen: {e.strerror or e}") from e
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
