"""Prometheus metrics and /healthz of the reconcile loop (--metrics-addr), by prometheus-client."""

from __future__ import annotations

import contextlib
import errno
import resource
import selectors
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http import HTTPStatus

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
            "Removals of owned state (routes, addresses, SNAT rules, the conflist's ranges) "
            "the deletion guard holds back.",
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


MAX_CONNECTIONS = 64  # scrapes and probes: a handful at a time
REQUEST_TIMEOUT_SECONDS = 5.0  # from accept to the last byte of the reply
MAX_REQUEST_BYTES = 8192  # request line and headers; a scrape sends a few hundred
LISTEN_BACKLOG = 128


def connection_cap() -> int:
    """Connections served at once: well below RLIMIT_NOFILE, so the reconcile loop's own
    descriptors (netlink sockets, iptables pipes, the journal, the lock) are never starved."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(2, min(MAX_CONNECTIONS, soft // 8))


class _Connection:
    __slots__ = ("deadline", "peer", "received", "sock", "unsent")

    def __init__(self, sock: socket.socket, deadline: float, peer: str) -> None:
        self.sock = sock
        self.deadline = deadline
        self.peer = peer  # the client's address: a flood from one pushes out its own first
        self.received = b""
        self.unsent: bytes | None = None  # the reply, once the request is complete


class MetricsServer:
    """/metrics and /healthz from one thread with a selector, so that clients cost no thread.

    The endpoint listens on every address of a node (DaemonSet), so any client may be slow or
    hostile: at most `cap` connections are kept (a new one pushes out the oldest, so a prober
    always gets in), each has REQUEST_TIMEOUT_SECONDS from accept to the end of its reply, and
    a request over MAX_REQUEST_BYTES is dropped. A client that resets or vanishes is closed
    without a word; nothing here writes to the log.
    """

    def __init__(self, listener: socket.socket, metrics: Metrics, health: Health, cap: int) -> None:
        self.listener = listener
        self.server_address = listener.getsockname()
        self._metrics = metrics
        self._health = health
        self._cap = cap
        self._connections: dict[socket.socket, _Connection] = {}  # oldest first
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._stopping = False
        self._paused_until = 0.0  # accept paused after EMFILE and the like
        listener.setblocking(False)
        self._selector.register(listener, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._serve, name="metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop serving, close every connection and the listener."""
        self._stopping = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
        self._thread.join(5)
        for sock in list(self._connections):
            self._drop(sock)
        self._selector.close()
        for sock in (self.listener, self._wake_r, self._wake_w):
            sock.close()

    def _serve(self) -> None:
        while not self._stopping:
            now = time.monotonic()
            deadlines = [c.deadline for c in self._connections.values()]
            if self._paused_until:
                deadlines.append(self._paused_until)
            timeout = max(0.0, min(deadlines) - now) if deadlines else None
            try:
                events = self._selector.select(timeout)
            except OSError:  # nothing to do but try again: the agent must not lose its endpoint
                time.sleep(0.1)
                continue
            # Connections first, the listener last: a request already read is answered before
            # new connections can push its sender out.
            events.sort(key=lambda event: event[0].fileobj is self.listener)
            for key, _ in events:
                try:
                    if key.fileobj is self.listener:
                        self._accept()
                    elif key.fileobj is self._wake_r:
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(64)
                    else:
                        self._service(key.fileobj)  # type: ignore[arg-type]
                except Exception:  # one bad connection must not end the endpoint
                    if isinstance(key.fileobj, socket.socket) and key.fileobj in self._connections:
                        self._drop(key.fileobj)
            self._expire(time.monotonic())

    def _accept(self) -> None:
        for _ in range(self._cap):  # a bounded batch: the other connections get their turn
            try:
                sock, address = self.listener.accept()
            except BlockingIOError:
                return
            except OSError:  # out of descriptors or memory: stop accepting for a moment
                self._selector.unregister(self.listener)
                self._paused_until = time.monotonic() + 0.1
                return
            if len(self._connections) >= self._cap:
                self._make_room()
            sock.setblocking(False)
            deadline = time.monotonic() + REQUEST_TIMEOUT_SECONDS
            self._connections[sock] = _Connection(sock, deadline, str(address[0]))
            self._selector.register(sock, selectors.EVENT_READ)

    def _make_room(self) -> None:
        """Drop the oldest idle connection (nothing to read yet) of the client address that
        holds the most: a new connection takes precedence over it, and a flood from one address
        pushes out its own before a prober's. A request already waiting in the kernel is read
        and answered instead of dropped; if every connection has sent something, the oldest of
        that address goes (a slow client)."""
        counts = Counter(c.peer for c in self._connections.values())
        busiest = counts.most_common(1)[0][0]
        for sock in [s for s, c in self._connections.items() if c.peer == busiest]:
            connection = self._connections.get(sock)
            if connection is None or connection.unsent is not None:
                continue
            self._service(sock)
            if len(self._connections) < self._cap:
                return  # answered (or the client left): room made
            if not connection.received:
                self._drop(sock)
                return
        self._drop(next(s for s, c in self._connections.items() if c.peer == busiest))

    def _expire(self, now: float) -> None:
        if self._paused_until and now >= self._paused_until:
            self._paused_until = 0.0
            self._selector.register(self.listener, selectors.EVENT_READ)
        for sock, connection in list(self._connections.items()):
            if connection.deadline > now:
                break  # in accept order, so in deadline order
            self._drop(sock)

    def _service(self, sock: socket.socket) -> None:
        connection = self._connections[sock]
        if connection.unsent is None:
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                return
            except OSError:  # reset by the client
                self._drop(sock)
                return
            connection.received += data
            end = _head_end(connection.received)
            if not data or (end < 0 and len(connection.received) > MAX_REQUEST_BYTES):
                self._drop(sock)
                return
            if end < 0:
                return
            connection.unsent = self._reply(connection.received[:end])
            self._selector.modify(sock, selectors.EVENT_WRITE)
        try:
            sent = sock.send(connection.unsent)
        except BlockingIOError:
            return
        except OSError:
            self._drop(sock)
            return
        connection.unsent = connection.unsent[sent:]
        if not connection.unsent:
            self._drop(sock)

    def _drop(self, sock: socket.socket) -> None:
        del self._connections[sock]
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)
        sock.close()

    def _reply(self, head: bytes) -> bytes:
        method, _, rest = head.partition(b"\n")[0].rstrip(b"\r").partition(b" ")
        path = rest.partition(b" ")[0].partition(b"?")[0]
        if method not in (b"GET", b"HEAD"):
            status, body, content_type = 405, b"only GET\n", "text/plain"
        elif path == b"/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST

            status, body, content_type = 200, self._metrics.exposition(), CONTENT_TYPE_LATEST
        elif path == b"/healthz":
            ok, text = self._health.status()
            status, body, content_type = 200 if ok else 503, f"{text}\n".encode(), "text/plain"
        else:
            status, body = 404, b"not found: try /metrics or /healthz\n"
            content_type = "text/plain"
        reason = HTTPStatus(status).phrase
        header = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        return header.encode() + (body if method == b"GET" else b"")


def _head_end(received: bytes) -> int:
    """Where the request's head ends (-1: not yet): at an empty line, CRLF or bare LF ends
    (RFC 9112 2.2 lets a server take LF alone, as hand-written probes send it)."""
    ends = [i for i in (received.find(b"\r\n\r\n"), received.find(b"\n\n")) if i >= 0]
    return min(ends, default=-1)


def serve(address: str, metrics: Metrics, health: Health) -> MetricsServer:
    """Serve /metrics and /healthz on `address` from a daemon thread; returns the server."""
    host, port = parse_listen_address(address)
    try:
        try:
            listener = _listen(socket.AF_INET6 if ":" in host else socket.AF_INET, host, port)
        except OSError as e:
            if not (e.errno == errno.EAFNOSUPPORT and host == "::"):
                raise
            listener = _listen(socket.AF_INET, "0.0.0.0", port)  # a node booted with IPv6 off
    except OSError as e:
        raise UsageError(f"--metrics-addr {address}: cannot listen: {e.strerror or e}") from e
    server = MetricsServer(listener, metrics, health, connection_cap())
    server.start()
    return server


def _listen(family: socket.AddressFamily, host: str, port: int) -> socket.socket:
    # '::' also takes IPv4 (bindv6only is 0 by default)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock
