"""`lab probe`: every pod to every pod with real connections, as the upstream e2e suite's matrix.

The probing process opens everything itself for the probe's duration, and leaves nothing
running: a listener on the probed port in each pod's network namespace (on its pod IPs, for
the pods that declare that port; a TCP one answers with the address it saw, a UDP one echoes),
and a client socket per pair in the source pod's namespace. A socket belongs to the namespace
it was created in, so one thread serves every listener and another drives every client, and
the packets cross the pods' veths, the nodes' forwarding and their nftables like any other.

All pairs go at once, so a probe lasts about one timeout whatever the number of pairs. TCP:
a connection and the listener's answer within the timeout (the kernel resends a lost SYN after
1 s); UDP: a datagram sent again every RESEND seconds until its echo or the timeout, so that
one loss is not a denial. A refused connection (no listener: the pod does not declare the
port) is not reachable, as upstream's probe sees it.
"""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from kindplan.node.netns import enter_netns

TIMEOUT = 2.0  # seconds a pair has to answer
RESEND = 0.25  # seconds between a UDP probe's datagrams
PAYLOAD = b"kindplan-probe\n"


@dataclass(frozen=True)
class ProbePod:
    label: str  # ns/name
    node: str
    netns: str
    ips: tuple[str, ...]
    ports: frozenset[int]  # the container ports it declares (its listeners)


@dataclass(frozen=True)
class Result:
    """One probe's matrices: reachable[(from, to)] per IP family (4, 6)."""

    port: int
    protocol: str
    pods: tuple[ProbePod, ...]
    reachable: dict[int, dict[tuple[str, str], bool]]
    seconds: float

    def combined(self) -> dict[tuple[str, str], bool]:
        """Reachable in every family the pods have (dual-stack: IPv4 and IPv6)."""
        pairs = next(iter(self.reachable.values()), {})
        return {k: all(f[k] for f in self.reachable.values()) for k in pairs}


def _family(address: str) -> int:
    return 6 if ":" in address else 4


class Servers:
    """Listeners in many namespaces, served from one thread."""

    def __init__(self, protocol: str) -> None:
        self.kind = socket.SOCK_STREAM if protocol == "TCP" else socket.SOCK_DGRAM
        self._selector = selectors.DefaultSelector()
        self._sockets: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def listen(self, ns: str, address: str, port: int) -> None:
        family = socket.AF_INET6 if _family(address) == 6 else socket.AF_INET
        with enter_netns(ns):
            sock = socket.socket(family, self.kind)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((address, port))
            if self.kind == socket.SOCK_STREAM:
                sock.listen(64)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self._sockets.append(sock)
        self._selector.register(sock, selectors.EVENT_READ)

    def _serve(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                with contextlib.suppress(OSError):  # a client that gave up: nothing to answer
                    self._answer(sock)

    def _answer(self, sock: socket.socket) -> None:
        if self.kind == socket.SOCK_DGRAM:
            data, peer = sock.recvfrom(2048)
            sock.sendto(data, peer)
            return
        conn, peer = sock.accept()
        with conn:
            conn.setblocking(True)
            conn.settimeout(TIMEOUT)
            conn.sendall(f"{peer[0]}\n".encode())

    @contextmanager
    def running(self) -> Iterator[Servers]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=5)
            for sock in self._sockets:
                self._selector.unregister(sock)
                sock.close()


@dataclass
class _Pair:
    key: tuple[str, str]
    family: int
    sock: socket.socket
    address: str
    sent: float = 0.0
    connected: bool = False  # TCP: the handshake is done, the listener's answer is awaited
    answer: bool | None = None


def _open(pods: tuple[ProbePod, ...], protocol: str) -> list[_Pair]:
    """A client socket per (from, to, family), made in the source pod's namespace."""
    kind = socket.SOCK_STREAM if protocol == "TCP" else socket.SOCK_DGRAM
    pairs = []
    for src in pods:
        with enter_netns(src.netns):
            for dst in pods:
                for address in dst.ips:
                    if not any(_family(a) == _family(address) for a in src.ips):
                        continue
                    family = socket.AF_INET6 if _family(address) == 6 else socket.AF_INET
                    sock = socket.socket(family, kind)
                    sock.setblocking(False)
                    pairs.append(_Pair((src.label, dst.label), _family(address), sock, address))
    return pairs


def _drive(pairs: list[_Pair], port: int, protocol: str, timeout: float) -> None:
    """Connect (or send) every pair at once and wait for answers until the timeout."""
    selector = selectors.DefaultSelector()
    start = time.monotonic()
    waiting = _start(selector, pairs, port, start)
    while waiting and (now := time.monotonic()) < start + timeout:
        for key, _ in selector.select(timeout=min(RESEND, start + timeout - now)):
            pair = key.data
            _step(selector, pair)
            if pair.answer is not None:
                selector.unregister(pair.sock)
                waiting -= 1
        if protocol == "UDP":
            _resend(pairs, time.monotonic())
    selector.close()
    for pair in pairs:
        pair.sock.close()
        if pair.answer is None:
            pair.answer = False


def _start(selector: selectors.BaseSelector, pairs: list[_Pair], port: int, now: float) -> int:
    """Every pair's connect (TCP: the SYN; UDP: the first datagram); how many now wait."""
    waiting = 0
    for pair in pairs:
        code = pair.sock.connect_ex((pair.address, port))
        if code not in (0, errno.EINPROGRESS):
            pair.answer = False
            continue
        waiting += 1
        if pair.sock.type == socket.SOCK_DGRAM:
            _send(pair, now)
            selector.register(pair.sock, selectors.EVENT_READ, pair)
        else:
            selector.register(pair.sock, selectors.EVENT_WRITE, pair)
    return waiting


def _resend(pairs: list[_Pair], now: float) -> None:
    for pair in pairs:
        if pair.answer is None and now - pair.sent >= RESEND:
            _send(pair, now)


def _send(pair: _Pair, now: float) -> None:
    pair.sent = now
    with contextlib.suppress(OSError):  # ECONNREFUSED from an earlier ICMP: read tells
        pair.sock.send(PAYLOAD)


def _step(selector: selectors.BaseSelector, pair: _Pair) -> None:
    """One event of a pair: TCP connected (now wait for the answer), or data, or an error."""
    sock = pair.sock
    if sock.type == socket.SOCK_STREAM and not pair.connected:
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            pair.answer = False
            return
        pair.connected = True
        selector.modify(sock, selectors.EVENT_READ, pair)
        return
    try:
        data = sock.recv(2048)
    except BlockingIOError:
        return
    except OSError:  # refused: nothing listens there
        pair.answer = False
        return
    pair.answer = data == PAYLOAD if sock.type == socket.SOCK_DGRAM else data.endswith(b"\n")


def probe(
    pods: tuple[ProbePod, ...], port: int, protocol: str, *, timeout: float = TIMEOUT
) -> Result:
    """Every pod to every pod (itself included), on every IP family the two share; a pair
    that has not answered within `timeout` seconds is not reachable."""
    servers = Servers(protocol)
    for pod in pods:
        if port in pod.ports:
            for address in pod.ips:
                servers.listen(pod.netns, address, port)
    started = time.monotonic()
    with servers.running():
        pairs = _open(pods, protocol)
        _drive(pairs, port, protocol, timeout)
    reachable: dict[int, dict[tuple[str, str], bool]] = {}
    for pair in pairs:
        reachable.setdefault(pair.family, {})[pair.key] = bool(pair.answer)
    return Result(port, protocol, pods, dict(sorted(reachable.items())), time.monotonic() - started)


def format_matrix(labels: list[str], reachable: dict[tuple[str, str], bool]) -> list[str]:
    """As upstream's truth table prints: a header `-` and the columns (to), then a row per
    source (from), `.` reachable and `X` not, tab-separated."""
    lines = ["\t".join(["-", *labels])]
    for src in labels:
        marks = ("." if reachable.get((src, dst)) else "X" for dst in labels)
        lines.append("\t".join([src, *marks]))
    return lines


def format_text(result: Result) -> str:
    labels = [p.label for p in result.pods]
    lines = []
    for family, matrix in result.reachable.items():
        count = sum(matrix.values())
        lines.append(
            f"{result.protocol}/{result.port} IPv{family}: {count} of {len(matrix)} pairs "
            "reachable (rows from, columns to; . reachable, X not)"
        )
        lines += format_matrix(labels, matrix)
    pairs = sum(len(m) for m in result.reachable.values())
    lines.append(f"{pairs} probes in {result.seconds:.1f} s")
    return "\n".join(lines) + "\n"


def as_json(result: Result) -> dict[str, Any]:
    combined = result.combined()
    labels = [p.label for p in result.pods]
    return {
        "pods": {p.label: {"node": p.node, "ips": list(p.ips)} for p in result.pods},
        "reachable": {s: {d: combined.get((s, d), False) for d in labels} for s in labels},
    }
