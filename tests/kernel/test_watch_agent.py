"""The agent stays up: hostile clients of the metrics endpoint, a document too big for stdin.

The loop runs inside the node namespace (ip netns exec), so its endpoint and every client stay on
that namespace's loopback.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import resource
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from nodes import SEED, Node
from shell import sh
from test_watch import PEERS, converged, seed, watch_args, with_nodes
from watcher import Watcher, has_route, http_get, json_lines, metric, wait_until

from kindplan.agent.metrics import REQUEST_TIMEOUT_SECONDS
from kindplan.core.document import MAX_INPUT_BYTES
from kindplan.node.netns import enter_netns

pytestmark = pytest.mark.root

PORT = 9178
URL = f"http://127.0.0.1:{PORT}"


def agent(node: Node, snapshot: Path | str, *extra: str, nofile: int = 0, **kw: bool) -> Watcher:
    """The loop with its endpoint on the namespace's loopback (and RLIMIT_NOFILE `nofile`)."""
    args = watch_args(node, snapshot, *extra)
    args = [a for a in args if a not in ("--netns", node.ns)]
    prefix = ["prlimit", f"--nofile={nofile}:{nofile}", "--"] if nofile else []
    return Watcher(
        [*args, "--metrics-addr", f"127.0.0.1:{PORT}"], in_netns=node.ns, prefix=prefix, **kw
    )


@pytest.fixture
def snapshot_file(seed_worker2: Node) -> Path:
    path = seed_worker2.tmp / "snapshot.yaml"
    path.write_text(SEED.read_text())
    return path


def slow_clients(ns: str, count: int, timeout: float = 20.0) -> list[socket.socket]:
    """`count` connections that send the start of a request and never finish it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:  # the test's own process holds every client end
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    socks: list[socket.socket] = []
    with enter_netns(ns), selectors.DefaultSelector() as selector:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            socks.append(sock)
            assert sock.connect_ex(("127.0.0.1", PORT)) in (0, errno.EINPROGRESS)
            selector.register(sock, selectors.EVENT_WRITE)
        started, pending, connected = time.monotonic(), count, 0
        while pending and time.monotonic() - started < timeout:
            for key, _ in selector.select(1.0):
                sock = key.fileobj  # type: ignore[assignment]
                selector.unregister(sock)
                pending -= 1
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    connected += 1
                    with contextlib.suppress(OSError):  # pushed out by the server already
                        sock.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
    assert connected == count
    return socks


def test_slow_clients_do_not_starve_the_loop_or_healthz(
    seed_worker2: Node, snapshot_file: Path
) -> None:
    """Twice 2,000 clients that never finish a request, against a loop allowed 128 descriptors."""
    ns = seed_worker2.ns
    loop = agent(seed_worker2, snapshot_file, "--interval", "200ms", nofile=128)
    socks: list[socket.socket] = []
    try:
        loop.wait_for(r"round 1: applied")
        for wave in range(2):  # a second wave pushes out the first
            socks += slow_clients(ns, 2000)
            assert http_get(ns, f"{URL}/healthz") == (200, "ok\n"), f"wave {wave}"
            sh("ip", "-n", ns, "route", "del", PEERS[0])  # drift: repaired by the next round
            wait_until(lambda: has_route(ns, PEERS[0]), timeout=10)
            text = http_get(ns, f"{URL}/metrics")[1]
            before = metric(text, "kindplan_rounds_total", 'result="converged"')
            wait_until(
                lambda b=before: (
                    metric(  # type: ignore[misc]
                        http_get(ns, f"{URL}/metrics")[1],
                        "kindplan_rounds_total",
                        'result="converged"',
                    )
                    >= b + 3
                )
            )
        assert loop.proc.poll() is None
        assert converged(seed_worker2)
        status, _ = loop.stop()
        assert status == 0
        assert not [
            line for line in loop.lines if "Too many open files" in line or " error " in line
        ]
        assert not [line for line in loop.lines if "Traceback" in line], loop.lines
    finally:
        for sock in socks:
            sock.close()
        loop.kill()


def test_a_client_reset_leaves_the_log_one_object_per_line_and_slow_ones_time_out(
    seed_worker2: Node, snapshot_file: Path
) -> None:
    ns = seed_worker2.ns
    loop = agent(seed_worker2, snapshot_file, "--interval", "60s", "--log-format", "json")
    try:
        loop.wait_for(r"round 1: applied")
        with enter_netns(ns):
            for _ in range(20):
                sock = socket.create_connection(("127.0.0.1", PORT), timeout=5)
                sock.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()  # an RST instead of a FIN, before the reply is read
        assert http_get(ns, f"{URL}/healthz") == (200, "ok\n")
        with enter_netns(ns):
            sock = socket.create_connection(("127.0.0.1", PORT), timeout=5)
        with sock:  # a request never finished is dropped after REQUEST_TIMEOUT_SECONDS
            sock.send(b"GET /metrics HTTP/1.1\r\n")
            sock.settimeout(30)
            started = time.monotonic()
            assert sock.recv(100) == b""
            waited = time.monotonic() - started
        assert REQUEST_TIMEOUT_SECONDS - 0.5 < waited < REQUEST_TIMEOUT_SECONDS + 5, waited
        status, _ = loop.stop()
        assert status == 0
        entries = json_lines(loop.lines)  # fails on any line that is not one JSON object
        assert [e["msg"] for e in entries if e["level"] != "info"] == []
    finally:
        loop.kill()


def test_stdin_document_over_the_limit_is_refused_whole(seed_worker2: Node) -> None:
    """Its first 64 MiB make a valid snapshot without a peer and the pods: none of it applies."""
    ns = seed_worker2.ns
    loop = agent(seed_worker2, "-", "--interval", "200ms", stdin=True)
    stdin = loop.proc.stdin
    assert stdin is not None
    try:
        stdin.write(SEED.read_text() + "---\n")
        stdin.flush()
        line = loop.wait_for(r"round \d+: applied")
        routes = seed_worker2.routes()
        doc = seed()
        head = with_nodes(doc, doc["nodes"][1:])  # one peer (of two) and no pod left
        filler = ("# " + "x" * 1021 + "\n") * (MAX_INPUT_BYTES // 1024 + 1)
        tail = yaml.safe_dump({"pods": doc["pods"]})
        writer = threading.Thread(
            target=lambda: (stdin.write(head + filler + tail + "---\n"), stdin.flush())
        )
        writer.start()
        line = loop.wait_for(
            r"error <stdin>: .*over the 64 MiB limit.*keeping the last good snapshot",
            after=line,
            timeout=60,
        )
        writer.join(60)
        time.sleep(1)  # several rounds at 200 ms
        assert seed_worker2.routes() == routes
        assert all(has_route(ns, dst) for dst in PEERS)
        text = http_get(ns, f"{URL}/metrics")[1]
        assert metric(text, "kindplan_errors_total", 'kind="invalid_snapshot"') >= 1
        stdin.write(SEED.read_text() + "---\n")  # the next good document is taken again
        stdin.flush()
        wait_until(lambda: http_get(ns, f"{URL}/healthz")[0] == 200)
        status, _ = loop.stop(signal.SIGTERM)
        assert status == 0, loop.lines[-5:]
    finally:
        loop.kill()


def _probe(ns: str) -> tuple[int, str] | str:
    """GET /healthz from 127.0.0.2 (a source of its own, as the kubelet's is on a node)."""
    with enter_netns(ns):
        connection = http.client.HTTPConnection(
            "127.0.0.1", PORT, timeout=5, source_address=("127.0.0.2", 0)
        )
        try:
            connection.request("GET", "/healthz")
            reply = connection.getresponse()
            return reply.status, reply.read().decode()
        except (OSError, http.client.HTTPException) as e:  # reset, closed without a reply
            return type(e).__name__
        finally:
            connection.close()


def test_healthz_is_answered_under_a_flood_of_new_connections(
    seed_worker2: Node, snapshot_file: Path
) -> None:
    """Connections that arrive without end from one address and never send a byte must not push
    a prober from another out before its request is read (the kubelet would restart a healthy
    agent). The flood is a process of its own, as a real one would be."""
    ns = seed_worker2.ns
    loop = agent(seed_worker2, snapshot_file, "--interval", "1s", nofile=128)
    flooder = None
    try:
        loop.wait_for(r"round 1: applied")
        flooder = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", FLOOD])
        time.sleep(0.5)
        answers = [_probe(ns) for _ in range(100)]
        assert flooder.poll() is None, "the flood lasted through every probe"
        failed = [a for a in answers if a != (200, "ok\n")]
        assert not failed, f"{len(failed)} of {len(answers)} probes: {failed[:5]}"
        assert loop.proc.poll() is None
    finally:
        if flooder is not None:
            flooder.kill()
            flooder.wait()
        loop.kill()


# New connections to the endpoint, 400 held open at a time, for at most a minute.
FLOOD = f"""
import collections, socket, time
held = collections.deque()
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.connect_ex(("127.0.0.1", {PORT}))
    held.append(sock)
    if len(held) > 400:
        held.popleft().close()
"""


def test_a_request_ended_by_bare_newlines_is_answered(
    seed_worker2: Node, snapshot_file: Path
) -> None:
    """HTTP/1.1 lets a server take LF as a line end (RFC 9112, 2.2): probes written by hand do."""
    ns = seed_worker2.ns
    loop = agent(seed_worker2, snapshot_file, "--interval", "1s")
    try:
        loop.wait_for(r"round 1: applied")
        with enter_netns(ns), socket.create_connection(("127.0.0.1", PORT), timeout=5) as sock:
            sock.sendall(b"GET /healthz HTTP/1.0\nHost: x\n\n")
            reply = b""
            while chunk := sock.recv(4096):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 200 OK\r\n"), reply
        assert reply.endswith(b"\r\n\r\nok\n"), reply
    finally:
        loop.kill()
