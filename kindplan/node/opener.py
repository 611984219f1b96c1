"""open_node: the one way in to the real node (its lock, its namespace, handles on its kernel and
iptables), and the handles the loop keeps open between rounds. The engine and the loop are given
it as a ports.NodeOpener; the protocols live apart (ports.py), so that nothing which only names
them imports the real kernel.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

from kindplan.node.iptables import Iptables, detect_backend, iptables_present
from kindplan.node.kernel import Kernel
from kindplan.node.locking import apply_lock, node_lock
from kindplan.node.netns import enter_netns
from kindplan.node.nftables import Nftables, nft_present
from kindplan.node.ports import HandleKeeper, NodeHandles


def open_handles() -> NodeHandles:
    """The real kernel and iptables of the thread's network namespace."""
    backend = detect_backend()  # first: runs iptables-save, which may fail or be interrupted
    nft = Nftables() if nft_present() else None
    return NodeHandles(Kernel(), Iptables(backend, iptables_present(), nft))


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
    kept: HandleKeeper | None = None,
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
