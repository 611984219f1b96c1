"""The seams of the node-facing shell: what the engine, apply, observe and the loop ask of the
kernel and of iptables, and of whatever opens a node for them. Protocols only: nothing here
opens anything, so every module may import it without importing the real node.

kernel.Kernel, iptables.Iptables and opener.open_node are the real ones; tests/fakes.py holds
in-memory ones with fault flags (mypy holds them to these protocols), so that the engine and the
loop are tested without root (the kernel tests, against the real ones in namespaces, stay the
truth).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, NamedTuple, Protocol

if TYPE_CHECKING:
    from kindplan.core.masq.value import MasqObserved
    from kindplan.core.model import Address, Link, Sysctl
    from kindplan.core.nexthops import Nexthop
    from kindplan.core.policytable import PolicyRead
    from kindplan.core.routes import Route
    from kindplan.core.tunnelchanges import TunnelChange
    from kindplan.node.kernel import KernelError
    from kindplan.node.tunnels import TunnelsSeen


class KernelPort(Protocol):
    """Links, addresses, routes (main table) and sysctls of one network namespace."""

    def read_links(self) -> tuple[Link, ...]:
        """Every link, sorted by name, each with its addresses (read before routes: the names)."""
        ...

    def read_routes(self) -> tuple[Route, ...]:
        """Unicast routes of the main table, both families, sorted by key."""
        ...

    def route_digest(self) -> bytes:
        """A digest of the main table and the nexthop objects: equal while they are, different
        once they are not."""
        ...

    def read_tunnels(self) -> TunnelsSeen:
        """kindplan's VXLAN devices (and others' of its names, not owned), and the permanent
        neighbour and FDB entries on those that are kindplan's (after read_links)."""
        ...

    def write_tunnel(self, changes: Sequence[TunnelChange]) -> list[KernelError | None]:
        """The tunnel's changes in order; the error of each (None: done). A delete of an entry
        that is not there is None."""
        ...

    def dumped_digest(self, routes: tuple[Route, ...]) -> bytes | None:
        """route_digest of the dump that `routes` came from, if it is what read_routes returned
        last (the converged record's digest, without dumping the table again); else None."""
        ...

    def read_sysctls(self, names: tuple[str, ...]) -> tuple[Sysctl, ...]: ...

    def set_sysctl(self, name: str, value: str) -> None:
        """KernelError if refused."""
        ...

    def read_nexthops(self) -> tuple[Nexthop, ...] | None:
        """Every nexthop object, sorted by id; None if the kernel has none (before Linux 5.3)."""
        ...

    def write_routes(
        self, writes: Sequence[tuple[str, Route | Nexthop] | tuple[str, Route | Nexthop, bytes]]
    ) -> list[KernelError | None]:
        """("add" | "replace" | "del", route or nexthop object) in order; each write's error or
        None. A delete of a route that is not there (or not of the route's protocol), or of an
        object that is not there, is None: nothing to do. A third item, the kernel's own body of
        a route as dumped (raw_routes), writes it back exactly as it was (a rollback's foreign
        route)."""
        ...

    def raw_routes(self, routes: Sequence[Route]) -> dict[Route, bytes]:
        """The message body the last read_routes dumped for each of `routes` that it holds (rtmsg
        and every attribute): what a rollback writes back for a foreign route."""
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

    def drop_empty_nat(self, version: int) -> bool:
        """Drop the nat table of IPv`version` if it holds nothing but empty base chains (the
        one iptables-nft made for kindplan's chain; nft only): whether it went."""
        ...

    def others(self) -> tuple[str, ...]:
        """The other backends this node has tools for: chains left behind there still count."""
        ...

    def for_backend(self, backend: str) -> IptablesPort:
        """The same namespace through the tools of `backend`."""
        ...

    @property
    def present(self) -> bool:
        """Does the node have these tools? (no: an nftables-only host, nothing to read here)"""
        ...

    @property
    def nftables(self) -> NftablesPort | None:
        """The same namespace's netfilter through `nft` (None: the node has no nft)."""
        ...


class NftablesPort(Protocol):
    """kindplan's nftables tables (and the one it may take over) in one namespace."""

    def read_masq(self) -> tuple[MasqObserved, ...]:
        """Both families of each table the nftables dialect reads, as values (None: absent)."""
        ...

    def run(self, payload: str) -> None:
        """nft -f -: all of `payload` in one transaction, or RuntimeFailure."""
        ...

    def read_policy(self) -> PolicyRead:
        """kindplan's NetworkPolicy table, what of it was not understood, and whether a table
        of its name is someone else's."""
        ...

    def close(self) -> None:
        """What it holds open (the policy table's event socket) closed."""
        ...

    def policy_generation(self) -> PolicyRead:
        """Only the ruleset's generation, standing for the table as read at it (read_policy's
        reading if the kernel cannot be asked)."""
        ...


class NodeHandles(NamedTuple):
    """What the engine reaches a node through, once a NodeOpener has opened it.

    A named tuple, as observe.Where: a converged one-shot apply imports this module, and a
    dataclass is made at import by generating and compiling its methods."""

    kernel: KernelPort
    iptables: IptablesPort

    def close(self) -> None:
        self.kernel.close()
        nft = self.iptables.nftables
        if nft is not None:
            nft.close()


class HandleKeeper(Protocol):
    """Handles kept open across openings of a node (opener.KeptHandles: the loop's rounds)."""

    def get(self) -> NodeHandles:
        """The handles of the namespace the thread is in now (opened again if need be)."""
        ...

    def drop(self) -> None:
        """Close them: the next get() opens new ones."""
        ...


class NodeOpener(Protocol):
    """opener.open_node's shape: what the engine and the loop are given to reach a node (tests:
    fakes.FakeNode). The node of namespace `netns` (None: the one kindplan runs in), its lock held
    for up to `lock_timeout` seconds (None: no lock, for a read) unless `cancelled()`, its handles
    taken from `kept` if given."""

    def __call__(
        self,
        netns: str | None,
        lock_timeout: float | None,
        *,
        cancelled: Callable[[], bool] | None = None,
        kept: HandleKeeper | None = None,
    ) -> AbstractContextManager[NodeHandles]: ...
