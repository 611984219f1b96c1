"""The seams of the node-facing shell: what the engine, apply, observe and the loop ask of the
kernel and of iptables, and open_node, the one way in to a node (its lock, its namespace, handles).

kernel.Kernel and iptables.Iptables are the real ports; tests/fakes.py holds in-memory ones with
fault flags, so that the engine and the loop are tested without root (the kernel tests, against
the real ones in namespaces, stay the truth).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import NamedTuple, Protocol

from kindplan.core.model import Address, Link, Sysctl
from kindplan.core.routes import Route
from kindplan.node.iptables import Iptables, detect_backend
from kindplan.node.kernel import Kernel, KernelError
from kindplan.node.locking import apply_lock, node_lock
from kindplan.node.netns import enter_netns


class KernelPort(Protocol):
    """Links, addresses, routes (main table) and sysctls of one network namespace."""

    def read_links(self) -> tuple[Link, ...]:
        """Every link, sorted by name, each with its addresses (read before routes: the names)."""
        ...

    def read_routes(self) -> tuple[Route, ...]:
        """Unicast routes of the main table, both families, sorted by key."""
        ...

    def route_digest(self) -> bytes:
        """A digest of the main table: equal while the table is, different once it is not."""
        ...

    def read_sysctls(self, names: tuple[str, ...]) -> tuple[Sysctl, ...]: ...

    def set_sysctl(self, name: str, value: str) -> None:
        """KernelError if refused."""
        ...

    def write_routes(self, writes: Sequence[tuple[str, Route]]) -> list[KernelError | None]:
        """("add" | "replace" | "del", route) in order; each write's error or None. A delete of
        a route that is not there (or not of the route's protocol) is None: nothing to do."""
        ...

    def add_address(self, address: Address) -> None:
        """KernelError if refused (EEXIST: there already; ENODEV: no such link)."""
        ...

    def del_address(self, address: Address) -> None: ...

    def close(self) -> None: ...


class IptablesPort(Protocol):
    """The nat tables of one iptables backend (legacy, nft, "": the system's) in one namespace."""

    @property
    def backend(self) -> str: ...

    def save_nat(self, version: int) -> str:
        """The nat table of IPv`version` as iptables-save prints it."""
        ...

    def restore(self, version: int, payload: str) -> None:
        """iptables-restore --noflush: all of `payload` in one commit, or RuntimeFailure."""
        ...

    def nat_families(self) -> frozenset[int]:
        """The families whose nat table exists in this backend (no table, no chain to read)."""
        ...

    def others(self) -> tuple[str, ...]:
        """The other backends this node has tools for: chains left behind there still count."""
        ...

    def for_backend(self, backend: str) -> IptablesPort:
        """The same namespace through the tools of `backend`."""
        ...


class NodeHandles(NamedTuple):
    """What the engine reaches a node through, once open_node has opened it (or a test, fakes).

    A named tuple, as observe.Where: a converged one-shot apply imports this module, and a
    dataclass is made at import by generating and compiling its methods."""

    kernel: KernelPort
    iptables: IptablesPort

    def close(self) -> None:
        self.kernel.close()


def open_handles() -> NodeHandles:
    """The real kernel and iptables of the thread's network namespace."""
    backend = detect_backend()  # first: runs iptables-save, which may fail or be interrupted
    return NodeHandles(Kernel(), Iptables(backend))


class KeptHandles:
    """Handles kept open across calls of open_node (the loop's rounds: its sockets, the backend
    found once), opened again when the thread is in another namespace than they were opened in
    (one deleted and made again under its name), and after drop() (any failure)."""

    def __init__(self) -> None:
        self._handles: NodeHandles | None = None
        self._netns = 0  # inode of the namespace they were opened in

    def get(self) -> NodeHandles:
        """The handles of the namespace the thread is in now."""
        here = os.stat("/proc/thread-self/ns/net").st_ino
        if self._handles is None or here != self._netns:
            self.drop()
            self._handles, self._netns = open_handles(), here
        return self._handles

    def drop(self) -> None:
        if self._handles is not None:
            self._handles.close()
        self._handles = None


@contextlib.contextmanager
def open_node(
    netns: str | None,
    lock_timeout: float | None,
    *,
    cancelled: Callable[[], bool] | None = None,
    kept: KeptHandles | None = None,
) -> Iterator[NodeHandles]:
    """The node of namespace `netns` (None: the one kindplan runs in): its lock held (waited for
    up to `lock_timeout` seconds; None: no lock, for a read), the thread in its namespace, and
    handles on its kernel and iptables (from `kept` if given, else opened and closed here)."""
    lock: AbstractContextManager[None] = (
        contextlib.nullcontext()
        if lock_timeout is None
        else node_lock(apply_lock(netns), lock_timeout, cancelled)
    )
    # The namespace first: entering it says what a user without root lacks, and the lock's
    # folder is the same in every network namespace (it is a path, in the mount namespace).
    with enter_netns(netns), lock:
        if kept is not None:
            yield kept.get()
            return
        handles = open_handles()
        try:
            yield handles
        finally:
            handles.close()


class NodeOpener(Protocol):
    """open_node's shape: what the engine and the loop are given to reach a node (tests: a fake)."""

    def __call__(
        self,
        netns: str | None,
        lock_timeout: float | None,
        *,
        cancelled: Callable[[], bool] | None = None,
        kept: KeptHandles | None = None,
    ) -> AbstractContextManager[NodeHandles]: ...
