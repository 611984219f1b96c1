"""The node's kernel: links, addresses, routes and forwarding sysctls of the current namespace.

Every netlink request goes through netlink.py (one socket, batches, struct parsing: the hot paths
at 5,000 nodes, and the rare address writes too, without pyroute2's 0.2 s import). A socket
failure is a KernelError with its errno, never a raw OSError. A Kernel works on the network
namespace the thread is in; netns.enter_netns moves it first.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from kindplan.core.model import Address, Link, Sysctl
from kindplan.core.nexthops import Nexthop
from kindplan.core.routes import DEVICE_NAMES, MAIN_TABLE, ROUTE_ORDER, Route, onlink
from kindplan.errors import RuntimeFailure
from kindplan.node.netlink import Netlink
from kindplan.node.netlink_codec import NetlinkError
from kindplan.node.netlink_nexthops import NexthopWrite
from kindplan.node.netlink_routes import RouteWrite, route_digest
from kindplan.node.tunnels import TunnelsSeen, read_tunnels, write_tunnel

if TYPE_CHECKING:
    from kindplan.core.tunnelchanges import TunnelChange

# What a kernel without nexthop objects (before Linux 5.3) answers their dump with.
_NO_NEXTHOPS = (errno.EOPNOTSUPP, errno.EINVAL, errno.EAFNOSUPPORT)


class KernelError(RuntimeFailure):
    """The kernel refused a change, or could not be asked; `errno` says why (e.g. ENETUNREACH:
    gateway not on-link). `maybe_applied`: the change was sent but never acknowledged."""

    def __init__(self, message: str, errno: int, *, maybe_applied: bool = False) -> None:
        super().__init__(message)
        self.errno = errno
        self.maybe_applied = maybe_applied


def _kernel_error(what: str, e: OSError) -> KernelError:
    """`e` as a KernelError with its errno: "<what>: <strerror> (<the kernel's reason>)"."""
    reason = str(e) if isinstance(e, NetlinkError) else (e.strerror or str(e))
    code = e.errno or errno.EIO
    maybe = isinstance(e, NetlinkError) and e.maybe_applied
    return KernelError(f"{what}: {reason}" if what else reason, code, maybe_applied=maybe)


class Kernel:
    """Reads and writes the routing state of the current network namespace."""

    def __init__(self, netlink: Netlink | None = None) -> None:
        try:
            self._netlink = netlink if netlink is not None else Netlink()
        except OSError as e:
            raise _kernel_error("cannot open a netlink socket", e) from e
        self._index: dict[str, int] = {}
        self._nexthops_supported: bool | None = None  # None: not asked yet
        self._last_read: tuple[tuple[Route, ...], list[tuple[int, bytes]]] | None = None

    def close(self) -> None:
        self._netlink.close()

    # -- reading -----------------------------------------------------------------------------

    def read_links(self) -> tuple[Link, ...]:
        try:
            links = self._netlink.read_links()
        except OSError as e:
            raise _kernel_error("netlink dump of links failed", e) from e
        self._index = {link.name: link.index for link in links}
        return links

    def read_routes(self) -> tuple[Route, ...]:
        """Unicast routes of the main table, both families (links must have been read first)."""
        names = {index: name for name, index in self._index.items()}
        try:
            routes, dumped = self._netlink.routes(MAIN_TABLE, names)
        except OSError as e:
            raise _kernel_error("netlink dump of routes failed", e) from e
        read = tuple(sorted(routes, key=ROUTE_ORDER))
        self._last_read = (read, dumped)
        return read

    def route_digest(self) -> bytes:
        """A digest of the main table and the nexthop objects its routes may use, as dumped
        (links must have been read for the names)."""
        try:
            routes = self._netlink.route_digest(MAIN_TABLE)
        except OSError as e:
            raise _kernel_error("netlink dump of routes failed", e) from e
        return routes + self._nexthop_digest()

    def _nexthop_digest(self) -> bytes:
        """The nexthop objects' part of a route digest (none on a kernel without them)."""
        if self._nexthops_supported is False:
            return b""
        try:
            return self._netlink.nexthop_digest()
        except OSError as e:
            if e.errno in _NO_NEXTHOPS:
                self._nexthops_supported = False
                return b""
            raise _kernel_error("netlink dump of nexthop objects failed", e) from e

    def read_nexthops(self) -> tuple[Nexthop, ...] | None:
        """Every nexthop object, sorted by id; None if the kernel has none (probed once)."""
        if self._nexthops_supported is False:
            return None
        names = {index: name for name, index in self._index.items()}
        try:
            found = self._netlink.nexthops(names)
        except OSError as e:
            if e.errno in _NO_NEXTHOPS:
                self._nexthops_supported = False
                return None
            raise _kernel_error("netlink dump of nexthop objects failed", e) from e
        self._nexthops_supported = True
        return tuple(sorted(found))

    def raw_routes(self, routes: Sequence[Route]) -> dict[Route, bytes]:
        return self._netlink.route_bodies(routes)

    def read_tunnels(self) -> TunnelsSeen:
        """kindplan's VXLAN devices and the entries on them (links must have been read first)."""
        try:
            return read_tunnels(self._netlink, self._index)
        except OSError as e:
            raise _kernel_error("netlink dump of the tunnel failed", e) from e

    def dumped_digest(self, routes: tuple[Route, ...]) -> bytes | None:
        """The digest route_digest would give for the dump `routes` came from (the same tuple
        read_routes returned last), hashed only now, with the nexthop objects read now (they are
        not in the routes' dump): None for any other."""
        if self._last_read is None or self._last_read[0] is not routes:
            return None
        return route_digest(self._last_read[1]) + self._nexthop_digest()

    def read_sysctls(self, names: tuple[str, ...]) -> tuple[Sysctl, ...]:
        try:
            return tuple(Sysctl(name, _sysctl_path(name).read_text().strip()) for name in names)
        except OSError as e:  # e.g. IPv6 disabled on a node of a dual-stack cluster
            raise RuntimeFailure(f"cannot read sysctl {e.filename}: {e.strerror}") from e

    # -- writing -----------------------------------------------------------------------------

    def set_sysctl(self, name: str, value: str) -> None:
        try:
            _sysctl_path(name).write_text(value)
        except OSError as e:
            raise KernelError(f"sysctl {name}={value}: {e.strerror}", e.errno or 0) from e

    def write_routes(
        self, writes: Sequence[tuple[str, Route | Nexthop] | tuple[str, Route | Nexthop, bytes]]
    ) -> list[KernelError | None]:
        """Add ("add": fails if the key exists), replace or delete routes and nexthop objects,
        in order, in batches. A third item, a foreign route's own body as the kernel dumped it,
        writes that route back exactly (a rollback's).

        A delete names kindplan's protocol, so the kernel refuses (ESRCH) to delete a route that
        someone replaced since it was observed. A write whose acknowledgement the kernel dropped
        (a receive buffer overrun) is looked up in the table and sent again if it did not happen;
        one still unanswered after that is an error with `maybe_applied`.
        """
        results: list[KernelError | None] = [None] * len(writes)
        batch: list[RouteWrite | NexthopWrite] = []
        positions = []
        for i, item in enumerate(writes):
            write = self._write(item[0], item[1], item[2] if len(item) > 2 else b"")
            if isinstance(write, KernelError):
                results[i] = write
                continue
            batch.append(write)
            positions.append(i)
        outcome = self._netlink.write_routes(batch)
        unanswered = [k for k, error in enumerate(outcome) if error and _overrun(error)]
        if unanswered:
            try:
                pending = self._not_in_effect([batch[k] for k in unanswered])
            except KernelError:  # cannot tell: they stay "maybe applied"
                pending = [False] * len(unanswered)
            else:
                for k, todo in zip(unanswered, pending, strict=True):
                    outcome[k] = outcome[k] if todo else None
            retry = [k for k, todo in zip(unanswered, pending, strict=True) if todo]
            again = self._netlink.write_routes([batch[k] for k in retry])
            for k, error in zip(retry, again, strict=True):
                outcome[k] = error
        for i, k in zip(positions, range(len(batch)), strict=True):
            error = outcome[k]
            # ESRCH on a delete: the route is gone already (its veth went with its pod) or is no
            # longer kindplan's: either way there is nothing of ours left to delete.
            if error is not None and not _gone(error, batch[k]):
                results[i] = _kernel_error("", error)
        return results

    def _write(
        self, verb: str, route: Route | Nexthop, raw: bytes
    ) -> RouteWrite | NexthopWrite | KernelError:
        """The write of one route or object (a route's own dumped body `raw`, if any), with its
        interfaces' indexes; ENODEV if one of them does not exist."""
        index = self._index.get(route.ifname, 0)
        if isinstance(route, Nexthop):
            if verb != "del" and not index:
                return KernelError(f"interface {route.ifname} does not exist", errno.ENODEV)
            return NexthopWrite(verb, route, index)
        # A multipath or blackhole-like route has no device of its own (one through a single
        # nexthop object has its object's, not written: the object says it).
        hops = (
            tuple(self._index.get(h.ifname, 0) for h in route.nexthops)
            if route.special is not None and route.special.nexthops and not route.nh_id
            else ()
        )
        if verb != "del" and ((route.ifname and not index) or 0 in hops):
            missing = route.ifname or next(
                h.ifname for h in route.nexthops if h.ifname not in self._index
            )
            return KernelError(f"interface {missing} does not exist", errno.ENODEV)
        tunnel = route.ifname in DEVICE_NAMES and onlink(route.ifname, route.gateway)
        return RouteWrite(verb, route, index, hops, tunnel, raw)

    def _not_in_effect(self, writes: list[RouteWrite | NexthopWrite]) -> list[bool]:
        """For each write, whether the table does not show it done (observed again)."""
        table = {route.key: route for route in self.read_routes()}
        objects = (
            {n.id: n for n in self.read_nexthops() or ()}
            if any(isinstance(w, NexthopWrite) for w in writes)
            else {}
        )
        pending = []
        for write in writes:
            if isinstance(write, NexthopWrite):
                held = objects.get(write.nexthop.id)
                if write.verb == "del":
                    pending.append(held is not None and held.proto == write.nexthop.proto)
                else:
                    pending.append(held is None or not write.nexthop.same(held))
                continue
            seen = table.get(write.route.key)
            if write.verb == "del":  # done once no route of ours is at the key
                pending.append(seen is not None and seen.owned_by(write.route.proto))
            else:  # all but the peer label, which a dump cannot show
                pending.append(
                    seen is None or seen[:7] != write.route[:7] or seen[8] != write.route[8]
                )
        return pending

    def write_tunnel(self, changes: Sequence[TunnelChange]) -> list[KernelError | None]:
        """Make the tunnel's changes in order (tunnels.py); the error of each, None if done."""
        try:
            outcome = write_tunnel(self._netlink, self._index, changes)
        except OSError as e:  # the socket itself failed: every change unanswered
            return [_kernel_error("", e)] * len(changes)
        return [None if e is None else _kernel_error("", e) for e in outcome]

    def add_address(self, address: Address) -> None:
        self._address("add", address)

    def del_address(self, address: Address) -> None:
        self._address("del", address)

    def _address(self, verb: str, address: Address) -> None:
        index = self._index.get(address.ifname)
        where = f"address {address.address}/{address.prefixlen} dev {address.ifname}"
        if index is None:
            raise KernelError(f"{where}: interface does not exist", 19)
        try:
            self._netlink.write_address(verb, index, address.address, address.prefixlen)
        except OSError as e:
            raise _kernel_error(where, e) from e


def _gone(error: NetlinkError, write: RouteWrite | NexthopWrite) -> bool:
    """A delete whose route (ESRCH) or object (ENOENT) is not there: nothing left to do."""
    if write.verb != "del":
        return False
    return error.errno == (errno.ENOENT if isinstance(write, NexthopWrite) else errno.ESRCH)


def _overrun(error: NetlinkError | None) -> bool:
    """Whether a write went unacknowledged because the receive buffer overran."""
    return error is not None and error.maybe_applied and error.errno == errno.ENOBUFS


def _sysctl_path(name: str) -> Path:
    # /proc/sys/net shows the network namespace of the thread that opens it.
    return Path("/proc/sys") / name.replace(".", "/")
