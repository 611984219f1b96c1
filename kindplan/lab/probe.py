"""TCP probes between namespaces, in one process: the listener says which source address it saw.

A socket belongs to the network namespace it was created in, whatever the thread does later, so
the lab opens listeners and client sockets inside each namespace (netns.enter_netns) and serves
them all from one thread. That makes a thousand checks cost milliseconds instead of a process each.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from kindplan.node.netns import enter_netns

TIMEOUT_SECONDS = 2.0


class Listeners:
    """TCP listeners in many namespaces; each answers a connection with the peer's address."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._sockets: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def listen(self, ns: str, address: str, port: int) -> str | None:
        """Listen on address:port inside `ns`; the reason if that is impossible (a broken pod)."""
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with enter_netns(ns):
            sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                # The address may still be tentative (DAD) right after the pod was made.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.setsockopt(socket.SOL_IP, 15, 1)  # IP_FREEBIND: bind before DAD completes
            sock.bind((address, port))
            sock.listen(64)
        except OSError as e:
            sock.close()
            return f"cannot listen on {address}:{port} in {ns}: {e.strerror or e}"
        sock.setblocking(False)
        self._sockets.append(sock)
        self._selector.register(sock, selectors.EVENT_READ)
        return None

    def _serve(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.1):
                listener = key.fileobj
                assert isinstance(listener, socket.socket)
                try:
                    conn, peer = listener.accept()
                except BlockingIOError:
                    continue
                with conn:
                    conn.setblocking(True)
                    conn.settimeout(TIMEOUT_SECONDS)
                    with contextlib.suppress(OSError):  # the client gave up: nothing to tell
                        conn.sendall(f"{peer[0]}\n".encode())

    @contextmanager
    def running(self) -> Iterator[Listeners]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=5)
            for sock in self._sockets:
                self._selector.unregister(sock)
                sock.close()


def seen_source(ns: str, address: str, port: int, source: str | None = None) -> str:
    """Connect from namespace `ns` (from address `source`, if given); return the source address
    the listener saw, or raise OSError."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with enter_netns(ns):
        sock = socket.socket(family, socket.SOCK_STREAM)
    with sock:
        sock.settimeout(TIMEOUT_SECONDS)
        if source is not None:
            sock.bind((source, 0))
        sock.connect((address, port))
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(256)
            if not chunk:
                break
            data += chunk
    return data.decode().strip()
