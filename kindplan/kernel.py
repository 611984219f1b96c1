"""The only code that talks netlink (pyroute2): links, addresses, routes, forwarding sysctls.

A Kernel works on the network namespace the process is in; netns.enter_netns moves it first.
Errors keep the kernel's errno (KernelError.errno), so callers and tests can tell them apart.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

from kindplan.errors import RuntimeFailure
from kindplan.model import MAIN_TABLE, Address, IPAddress, Link, Route, Sysctl

_FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}
_SCOPES = {0: "universe", 200: "site", 253: "link", 254: "host", 255: "nowhere"}
_SCOPE_NUMBERS = {name: number for number, name in _SCOPES.items()}
_RTN_UNICAST = 1
_IFF_UP = 0x1


class KernelError(RuntimeFailure):
    """The kernel refused a change; `errno` says why (e.g. ENETUNREACH: gateway not on-link)."""

    def __init__(self, message: str, errno: int) -> None:
        super().__init__(message)
        self.errno = errno


class Kernel:
    """Reads and writes the routing state of the current network namespace."""

    def __init__(self) -> None:
        from pyroute2 import IPRoute

        self._ipr: Any = IPRoute()
        self._index: dict[str, int] = {}

    def close(self) -> None:
        self._ipr.close()

    # -- reading -----------------------------------------------------------------------------

    def read_links(self) -> tuple[Link, ...]:
        addresses: dict[int, list[tuple[IPAddress, int]]] = {}
        for msg in self._ipr.get_addr():
            addr = msg.get_attr("IFA_ADDRESS")
            if addr:
                addresses.setdefault(msg["index"], []).append((ip_address(addr), msg["prefixlen"]))
        links = []
        for msg in self._ipr.get_links():
            index, name = msg["index"], msg.get_attr("IFLA_IFNAME")
            own = sorted(addresses.get(index, []), key=lambda a: (a[0].version, int(a[0]), a[1]))
            links.append(
                Link(
                    name, index, msg.get_attr("IFLA_MTU"), bool(msg["flags"] & _IFF_UP), tuple(own)
                )
            )
        self._index = {link.name: link.index for link in links}
        return tuple(sorted(links, key=lambda link: link.name))

    def read_routes(self) -> tuple[Route, ...]:
        """Unicast routes of the main table, both families (links must have been read first)."""
        names = {index: name for name, index in self._index.items()}
        routes = [
            route
            for family in (socket.AF_INET, socket.AF_INET6)
            for route in self._parse_routes(self._ipr.route("dump", family=family), names)
        ]
        return tuple(sorted(routes, key=lambda r: r.key))

    @staticmethod
    def _parse_routes(messages: Any, names: dict[int, str]) -> Iterator[Route]:
        for msg in messages:
            attrs = dict(msg["attrs"])
            table = attrs.get("RTA_TABLE", msg["table"])
            if table != MAIN_TABLE or msg["type"] != _RTN_UNICAST:
                continue
            family_any = "0.0.0.0" if msg["family"] == socket.AF_INET else "::"
            gateway = attrs.get("RTA_GATEWAY")
            yield Route(
                dst=ip_network(f"{attrs.get('RTA_DST', family_any)}/{msg['dst_len']}"),
                ifname=names.get(attrs.get("RTA_OIF", 0), ""),
                gateway=ip_address(gateway) if gateway else None,
                scope=_SCOPES.get(msg["scope"], str(msg["scope"])),
                metric=attrs.get("RTA_PRIORITY", 0),
                proto=msg["proto"],
                table=table,
            )

    def read_sysctls(self, names: tuple[str, ...]) -> tuple[Sysctl, ...]:
        return tuple(Sysctl(name, _sysctl_path(name).read_text().strip()) for name in names)

    # -- writing -----------------------------------------------------------------------------

    def set_sysctl(self, name: str, value: str) -> None:
        try:
            _sysctl_path(name).write_text(value)
        except OSError as e:
            raise KernelError(f"sysctl {name}={value}: {e.strerror}", e.errno or 0) from e

    def add_address(self, address: Address) -> None:
        self._call(
            f"address {address.address}/{address.prefixlen} dev {address.ifname}",
            self._ipr.addr,
            "add",
            index=self._ifindex(address.ifname),
            address=str(address.address),
            prefixlen=address.prefixlen,
        )

    def add_route(self, route: Route) -> None:
        """Add a route; EEXIST if one appeared under its key since it was observed."""
        self._write_route("add", route)

    def replace_route(self, route: Route) -> None:
        self._write_route("replace", route)

    def _write_route(self, verb: str, route: Route) -> None:
        spec: dict[str, Any] = {
            "dst": str(route.dst),
            "oif": self._ifindex(route.ifname),
            "scope": _SCOPE_NUMBERS[route.scope],
        }
        if route.gateway is not None:
            spec["gateway"] = str(route.gateway)
        self._call(f"route {route.dst}", self._ipr.route, verb, **self._key(route), **spec)

    def delete_route(self, route: Route) -> None:
        # Naming the protocol makes the kernel refuse (ESRCH) to delete a route that is not
        # kindplan's, even if someone replaced it since it was observed.
        self._call(
            f"route {route.dst}", self._ipr.route, "del", dst=str(route.dst), **self._key(route)
        )

    @staticmethod
    def _key(route: Route) -> dict[str, Any]:
        return {
            "family": _FAMILY[route.dst.version],
            "table": route.table,
            "priority": route.metric,
            "proto": route.proto,
        }

    def _ifindex(self, name: str) -> int:
        if not self._index:
            self.read_links()
        if name not in self._index:
            raise KernelError(f"interface {name} does not exist", 19)  # ENODEV
        return self._index[name]

    @staticmethod
    def _call(what: str, fn: Any, *args: Any, **kwargs: Any) -> None:
        from pyroute2 import NetlinkError

        try:
            fn(*args, **kwargs)
        except NetlinkError as e:
            raise KernelError(f"{what}: {e.args[1] if len(e.args) > 1 else e}", e.code) from e


def _sysctl_path(name: str) -> Path:
    # /proc/sys/net shows the network namespace of the process that reads it.
    return Path("/proc/sys") / name.replace(".", "/")
