"""The node's kernel: links, addresses, routes and forwarding sysctls of the current namespace.

Reads and route writes go through netlink.py (one socket, batches, struct parsing: the hot paths
at 5,000 nodes); the rare address writes go through pyroute2, imported only when one is needed.
A Kernel works on the network namespace the thread is in; netns.enter_netns moves it first.
"""

from __future__ import annotations

import errno
import operator
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kindplan.errors import RuntimeFailure
from kindplan.model import MAIN_TABLE, ROUTE_ORDER, Address, Link, Route, Sysctl
from kindplan.netlink import Netlink, RouteIdent, RouteWrite, route_ident


class KernelError(RuntimeFailure):
    """The kernel refused a change; `errno` says why (e.g. ENETUNREACH: gateway not on-link)."""

    def __init__(self, message: str, errno: int) -> None:
        super().__init__(message)
        self.errno = errno


class Kernel:
    """Reads and writes the routing state of the current network namespace."""

    def __init__(self) -> None:
        try:
            self._netlink = Netlink()
        except OSError as e:
            raise RuntimeFailure(f"cannot open a netlink socket: {e.strerror or e}") from e
        self._ipr: Any = None  # pyroute2.IPRoute, opened on the first address write
        self._index: dict[str, int] = {}
        self._routes: tuple[list[Route], tuple[Route, ...]] = ([], ())  # last dump, sorted
        self._expect: tuple[Route, ...] = ()
        # route_ident -> route of the expected routes, and the (routes, links) it was made for
        self._expected: tuple[object, dict[RouteIdent, Route]] = (None, {})

    def close(self) -> None:
        self._netlink.close()
        if self._ipr is not None:
            self._ipr.close()

    # -- reading -----------------------------------------------------------------------------

    def read_links(self) -> tuple[Link, ...]:
        try:
            links = self._netlink.read_links()
        except OSError as e:
            raise RuntimeFailure(f"netlink dump of links failed: {e.strerror or e}") from e
        self._index = {link.name: link.index for link in links}
        return links

    def expect(self, routes: tuple[Route, ...]) -> None:
        """The routes the next dumps should show (the desired ones): a dumped route that matches
        one of them field for field is not parsed into new objects (verifying 10,000 routes
        after a full apply took 0.2-0.4 s of parsing)."""
        self._expect = routes

    def _expected_idents(self) -> dict[RouteIdent, Route]:
        made_for = (self._expect, self._index)
        if self._expected[0] != made_for:  # a link re-created with a new index, say
            index = self._index
            table = {route_ident(r, index[r.ifname]): r for r in self._expect if r.ifname in index}
            self._expected = (made_for, table)
        return self._expected[1]

    def read_routes(self) -> tuple[Route, ...]:
        """Unicast routes of the main table, both families (links must have been read first)."""
        names = {index: name for name, index in self._index.items()}
        try:
            routes = self._netlink.routes(MAIN_TABLE, names, self._expected_idents())
        except OSError as e:
            raise RuntimeFailure(f"netlink dump of routes failed: {e.strerror or e}") from e
        last = self._routes
        if len(routes) == len(last[0]) and all(map(operator.is_, routes, last[0])):
            return last[1]  # the very same routes as last time (netlink's parse memo): no sort
        ordered = tuple(sorted(routes, key=ROUTE_ORDER))
        self._routes = (routes, ordered)
        return ordered

    def route_digest(self) -> bytes:
        """A digest of the main table as dumped (links must have been read for the names)."""
        try:
            return self._netlink.route_digest(MAIN_TABLE)
        except OSError as e:
            raise RuntimeFailure(f"netlink dump of routes failed: {e.strerror or e}") from e

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

    def write_routes(self, writes: Sequence[tuple[str, Route]]) -> list[KernelError | None]:
        """Add ("add": fails if the key exists), replace or delete routes, in order, in batches.

        A delete names kindplan's protocol, so the kernel refuses (ESRCH) to delete a route that
        someone replaced since it was observed.
        """
        results: list[KernelError | None] = [None] * len(writes)
        batch, positions = [], []
        for i, (verb, route) in enumerate(writes):
            index = self._index.get(route.ifname, 0)
            # A multipath, nexthop-object or blackhole-like route has no device of its own.
            hops = (
                tuple(self._index.get(h.ifname, 0) for h in route.nexthops)
                if route.special is not None and route.special.nexthops and not route.nh_id
                else ()
            )
            if verb != "del" and ((route.ifname and not index) or 0 in hops):
                missing = route.ifname or next(
                    h.ifname for h in route.nexthops if h.ifname not in self._index
                )
                results[i] = KernelError(f"interface {missing} does not exist", 19)  # ENODEV
                continue
            batch.append(RouteWrite(verb, route, index, hops))
            positions.append(i)
        for i, code in zip(positions, self._netlink.write_routes(batch), strict=True):
            # ESRCH on a delete: the route is gone already (its veth went with its pod) or is no
            # longer kindplan's: either way there is nothing of ours left to delete.
            if code and not (code == errno.ESRCH and writes[i][0] == "del"):
                results[i] = KernelError(os.strerror(code), code)
        return results

    def add_address(self, address: Address) -> None:
        self._address("add", address)

    def del_address(self, address: Address) -> None:
        self._address("del", address)

    def _address(self, verb: str, address: Address) -> None:
        from pyroute2 import IPRoute, NetlinkError

        if self._ipr is None:
            self._ipr = IPRoute()
        index = self._index.get(address.ifname)
        where = f"address {address.address}/{address.prefixlen} dev {address.ifname}"
        if index is None:
            raise KernelError(f"{where}: interface does not exist", 19)
        try:
            self._ipr.addr(
                verb, index=index, address=str(address.address), prefixlen=address.prefixlen
            )
        except NetlinkError as e:
            raise KernelError(f"{where}: {e.args[1] if len(e.args) > 1 else e}", e.code) from e


def _sysctl_path(name: str) -> Path:
    # /proc/sys/net shows the network namespace of the thread that opens it.
    return Path("/proc/sys") / name.replace(".", "/")
