"""In-memory stand-ins for a node: kernel, iptables, open_node and a clock, with fault flags.

They let the engine, apply and the loop be unit-tested without root (as felix tests its route
syncer against mocknetlink and timeshim). Each behaves like the real port where kindplan relies
on it, and tests/unit/test_fakes_contract.py holds the same assertions against both (the real one
as root, in a namespace). What they leave out: routes the kernel derives from addresses, links
going down, route kinds other than unicast being checked; the kernel tests stay the truth.

Fault flags (set them on the fake, they hold until cleared unless counted):
- FakeKernel.refuse[what] = errno: a write to that route dst, address or sysctl is refused
  (EEXIST, ENETUNREACH, EPERM...), as the real Kernel reports it.
- FakeKernel.overrun_batches = n: the next n route batches are carried out but every write of
  them goes unacknowledged (ENOBUFS, maybe_applied), as the real Kernel reports a write it could
  not confirm after an overrun (the kernel answers only refusals: any write of an overrun batch
  may have had its refusal dropped, so none is known done until the table says so).
- FakeKernel.busy_dumps = n: the next n dumps (links, routes) fail with EBUSY.
- Netfilter.refuse = "message": every iptables-restore fails with it (exit status 1). A payload
  iptables would refuse (a rule to delete that is not there, a chain still in use) fails anyway,
  and changes nothing: a restore is one commit.
- Netfilter.lock_held: another process holds the xtables lock: restores of a backend that takes
  it (legacy, the system's own) fail as iptables reports it after --wait (exit status 4).
- FakeNode.lock_held: another applier holds the node lock: opening it fails as node_lock does.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from ipaddress import ip_address, ip_interface
from typing import TYPE_CHECKING, TypeVar

from kindplan.core.addresses import IPAddress
from kindplan.core.model import Address, Link, Sysctl
from kindplan.core.nexthops import Nexthop
from kindplan.core.routes import DEVICE_NAMES, IPV6_DEFAULT_METRIC, Route
from kindplan.core.tunnel import FdbEntry, Neighbour, Vxlan
from kindplan.core.tunnelchanges import (
    DelFdb,
    DelNeighbour,
    DelVxlan,
    TunnelChange,
    WriteFdb,
    WriteNeighbour,
    WriteVxlan,
)
from kindplan.errors import RuntimeFailure
from kindplan.node import iptables
from kindplan.node.kernel import KernelError
from kindplan.node.locking import LOCK_DIR
from kindplan.node.ports import HandleKeeper, IptablesPort, KernelPort, NodeHandles, NodeOpener
from kindplan.node.tunnels import TunnelsSeen

RouteKey = tuple[int, ...]


class FakeKernel:
    """The links (with their addresses), main-table routes and sysctls of one namespace."""

    def __init__(
        self,
        links: Iterable[Link] = (),
        routes: Iterable[Route] = (),
        sysctls: Mapping[str, str] | None = None,
    ) -> None:
        self.links = {link.name: link for link in links}
        self.routes: dict[RouteKey, Route] = {}
        for route in map(_as_stored, routes):
            self.routes[route.key] = route
        self.nexthops: dict[int, Nexthop] | None = {}  # None: a kernel without them
        self.sysctls = dict(sysctls or {})
        self.refuse: dict[str, int] = {}  # route dst, address or sysctl name -> errno
        self.overrun_batches = 0
        self.busy_dumps = 0
        self.writes: list[tuple[str, object]] = []  # every write asked for, made or refused
        self.batches: list[int] = []  # the size of each route batch
        # The tunnel's devices (a Link of kind vxlan each too) and entries, by key.
        self.tunnels: dict[str, Vxlan] = {}
        self.neighbours: dict[object, Neighbour] = {}
        self.fdb: dict[object, FdbEntry] = {}
        self.closed = False

    # -- reading -------------------------------------------------------------------------------

    def read_links(self) -> tuple[Link, ...]:
        self._dump("links")
        return tuple(self.links[name] for name in sorted(self.links))

    def read_routes(self) -> tuple[Route, ...]:
        self._dump("routes")
        return tuple(self._path(self.routes[key]) for key in sorted(self.routes))

    def _path(self, route: Route) -> Route:
        """As the kernel dumps a route through an object: with the object's gateway and device."""
        held = (self.nexthops or {}).get(route.nh_id) if route.nh_id else None
        if held is None:
            return route
        return route._replace(gateway=held.gateway, ifname=held.ifname)

    def route_digest(self) -> bytes:
        held = (sorted(self.routes.items()), sorted((self.nexthops or {}).items()))
        return hashlib.sha256(repr(held).encode()).digest()

    def read_nexthops(self) -> tuple[Nexthop, ...] | None:
        if self.nexthops is None:
            return None
        return tuple(self.nexthops[ident] for ident in sorted(self.nexthops))

    def raw_routes(self, routes: Sequence[Route]) -> dict[Route, bytes]:
        return {}  # a fake dumps no messages: its routes are put back from their fields

    def read_tunnels(self) -> TunnelsSeen:
        self._dump("tunnel")
        owned = {name for name, t in self.tunnels.items() if t.owned}
        return (
            tuple(self.tunnels[name] for name in sorted(self.tunnels)),
            tuple(n for _, n in sorted(self.neighbours.items()) if n.ifname in owned),
            tuple(f for _, f in sorted(self.fdb.items()) if f.ifname in owned),
        )

    def dumped_digest(self, routes: tuple[Route, ...]) -> bytes | None:
        current = tuple(self.routes[key] for key in sorted(self.routes))
        return self.route_digest() if routes == current else None

    def read_sysctls(self, names: tuple[str, ...]) -> tuple[Sysctl, ...]:
        missing = [name for name in names if name not in self.sysctls]
        if missing:
            path = "/proc/sys/" + missing[0].replace(".", "/")
            raise RuntimeFailure(f"cannot read sysctl {path}: {os.strerror(errno.ENOENT)}")
        return tuple(Sysctl(name, self.sysctls[name]) for name in names)

    def _dump(self, what: str) -> None:
        if self.busy_dumps:
            self.busy_dumps -= 1
            raise KernelError(
                f"netlink dump of {what} failed: {os.strerror(errno.EBUSY)}", errno.EBUSY
            )

    # -- writing -------------------------------------------------------------------------------

    def set_sysctl(self, name: str, value: str) -> None:
        self.writes.append(("sysctl", (name, value)))
        code = self.refuse.get(name, 0 if name in self.sysctls else errno.ENOENT)
        if code:
            raise KernelError(f"sysctl {name}={value}: {os.strerror(code)}", code)
        self.sysctls[name] = value

    def write_routes(
        self, writes: Sequence[tuple[str, Route | Nexthop] | tuple[str, Route | Nexthop, bytes]]
    ) -> list[KernelError | None]:
        self.batches.append(len(writes))
        overrun = self.overrun_batches > 0
        self.overrun_batches -= overrun
        results: list[KernelError | None] = []
        for verb, route, *_ in writes:
            self.writes.append((verb, route))
            if isinstance(route, Nexthop):
                error = self._write_nexthop(verb, route)
            else:
                error = self._write_route(verb, _as_stored(route))
            if overrun and (error is None or error.errno != errno.ENODEV):  # ENODEV: never sent
                error = KernelError(
                    f"{os.strerror(errno.ENOBUFS)} (the receive buffer overran)",
                    errno.ENOBUFS,
                    maybe_applied=True,
                )
            results.append(error)
        return results

    def _write_nexthop(self, verb: str, nexthop: Nexthop) -> KernelError | None:
        """As the kernel: an id is one object; deleting it deletes the routes through it."""
        if self.nexthops is None:
            return KernelError(os.strerror(errno.EOPNOTSUPP), errno.EOPNOTSUPP)
        if verb == "del":
            self.nexthops.pop(nexthop.id, None)
            self.routes = {k: r for k, r in self.routes.items() if r.nh_id != nexthop.id}
            return None
        if nexthop.ifname not in self.links:
            return KernelError(f"interface {nexthop.ifname} does not exist", errno.ENODEV)
        if verb == "add" and nexthop.id in self.nexthops:
            return KernelError(os.strerror(errno.EEXIST), errno.EEXIST)
        self.nexthops[nexthop.id] = nexthop._replace(peer="")
        return None

    def _write_route(self, verb: str, route: Route) -> KernelError | None:
        if verb == "del":
            # The delete names kindplan's protocol: someone else's route at the key stays
            # (ESRCH, which the real Kernel answers with None: nothing of ours to delete).
            seen = self.routes.get(route.key)
            if seen is not None and seen.owned_by(route.proto):
                del self.routes[route.key]
            return None
        if route.ifname and route.ifname not in self.links:  # the real Kernel's own check
            return KernelError(f"interface {route.ifname} does not exist", errno.ENODEV)
        code = self.refuse.get(str(route.dst), 0)
        if not code and verb == "add" and route.key in self.routes:
            code = errno.EEXIST
        if not code and route.nh_id and route.nh_id not in (self.nexthops or {}):
            code = errno.EINVAL  # the kernel: "Nexthop id does not exist"
        if not code and route.gateway is not None and not self._on_link(route):
            code = errno.ENETUNREACH
        if code:
            return KernelError(os.strerror(code), code)
        self.routes[route.key] = route
        return None

    def write_tunnel(self, changes: Sequence[TunnelChange]) -> list[KernelError | None]:
        results: list[KernelError | None] = []
        for change in changes:
            self.writes.append(("tunnel", change))
            code = self.refuse.get(change.describe(), 0)
            if not code:
                code = self._tunnel(change)
            results.append(KernelError(os.strerror(code), code) if code else None)
        return results

    def _tunnel(self, change: TunnelChange) -> int:
        """Make one tunnel change as the real Kernel does: its errno, 0 if done."""
        match change:
            case WriteVxlan(vxlan=v, old=old):
                if old is None and v.name in self.links:
                    return errno.EEXIST
                self.tunnels[v.name] = v
                addresses = tuple((a, a.max_prefixlen) for a in v.addresses)
                self.links[v.name] = Link(v.name, 900 + v.version, v.mtu, v.up, addresses, "vxlan")
            case DelVxlan(vxlan=v):
                if v.name in self.tunnels and self.tunnels[v.name].owned:
                    del self.tunnels[v.name], self.links[v.name]
                    self.neighbours = _off(self.neighbours, v.name)
                    self.fdb = _off(self.fdb, v.name)
            case WriteNeighbour(neighbour=n) | DelNeighbour(neighbour=n):
                return self._entry(self.neighbours, n, isinstance(change, WriteNeighbour))
            case WriteFdb(entry=f) | DelFdb(entry=f):
                return self._entry(self.fdb, f, isinstance(change, WriteFdb))
        return 0

    def _entry(self, table: dict[object, E], entry: E, write: bool) -> int:
        if entry.ifname not in self.tunnels:
            return errno.ENODEV
        if write:
            table[entry.key] = replace(entry, peer="")  # the peer label is kindplan's word
        else:
            table.pop(entry.key, None)
        return 0

    def _on_link(self, route: Route) -> bool:
        """Is the gateway on a prefix of the route's device (the kernel's check, no onlink)?"""
        gateway = route.gateway
        assert gateway is not None
        if gateway.is_link_local or route.ifname in DEVICE_NAMES:  # written onlink
            return True
        link = self.links[route.ifname]
        return any(gateway in ip_interface(f"{a}/{n}").network for a, n in link.addresses)

    def add_address(self, address: Address) -> None:
        self._address("add", address)

    def del_address(self, address: Address) -> None:
        self._address("del", address)

    def _address(self, verb: str, address: Address) -> None:
        self.writes.append((f"{verb} address", address))
        where = f"address {address.address}/{address.prefixlen} dev {address.ifname}"
        link = self.links.get(address.ifname)
        if link is None:
            raise KernelError(f"{where}: interface does not exist", errno.ENODEV)
        held = (address.address, address.prefixlen)
        code = self.refuse.get(str(address.address), 0)
        if not code and verb == "add" and held in link.addresses:
            code = errno.EEXIST
        if not code and verb == "del" and held not in link.addresses:
            code = errno.EADDRNOTAVAIL
        if code:
            raise KernelError(f"{where}: {os.strerror(code)}", code)
        others = tuple(a for a in link.addresses if a != held)
        addresses = (*others, held) if verb == "add" else others
        self.links[link.name] = replace(
            link, addresses=tuple(sorted(addresses, key=_address_order))
        )

    def close(self) -> None:
        self.closed = True


E = TypeVar("E", Neighbour, FdbEntry)


def _off(table: dict[object, E], ifname: str) -> dict[object, E]:
    """The entries of `table` that are not on device `ifname` (deleted with it)."""
    return {key: entry for key, entry in table.items() if entry.ifname != ifname}


def _as_stored(route: Route) -> Route:
    """As the kernel keeps it: IPv6 metric 0 is 1024; the peer label is kindplan's, not kept."""
    if route.dst.version == 6 and route.metric == 0:
        route = route._replace(metric=IPV6_DEFAULT_METRIC)
    return route._replace(peer="") if route.peer else route


def _address_order(held: tuple[IPAddress, int]) -> tuple[int, int, int]:
    return (held[0].version, int(held[0]), held[1])


# -- iptables ------------------------------------------------------------------------------------

NAT_BUILTINS = ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING")
TARGETS = frozenset({"ACCEPT", "DROP", "RETURN", "MASQUERADE", "SNAT", "DNAT", "MARK", "LOG"})
_TOOLS = {4: "iptables", 6: "ip6tables"}

NatTable = dict[str, list[str]]  # chain -> its rules' specs (what follows "-A CHAIN ")


@dataclass
class Netfilter:
    """What the fake iptables of every backend on one node share: their nat tables (one per
    backend and family; none until a restore makes it), the faults, and every restore asked."""

    tables: dict[tuple[str, int], NatTable] = field(default_factory=dict)
    installed: tuple[str, ...] = ("legacy", "nft")
    refuse: str | None = None
    lock_held: bool = False
    restores: list[tuple[str, int, str]] = field(default_factory=list)  # backend, family, payload


class FakeIptables:
    """iptables-save/-restore --noflush of one backend, over a shared Netfilter."""

    def __init__(self, backend: str = "nft", netfilter: Netfilter | None = None) -> None:
        self._backend = backend
        self.netfilter = netfilter if netfilter is not None else Netfilter()

    @property
    def backend(self) -> str:
        return self._backend

    def nat_families(self) -> frozenset[int]:
        return frozenset(v for b, v in self.netfilter.tables if b == self._backend)

    def others(self) -> tuple[str, ...]:
        if not self._backend:
            return ()
        return tuple(b for b in ("legacy", "nft") if b != self._backend and b in self.installed)

    @property
    def installed(self) -> tuple[str, ...]:
        return self.netfilter.installed

    def for_backend(self, backend: str) -> IptablesPort:
        return self if backend == self._backend else FakeIptables(backend, self.netfilter)

    @property
    def present(self) -> bool:
        return True

    @property
    def nftables(self) -> None:
        return None  # the nftables backend is tested against real nft (tests/kernel)

    def save_nat(self, version: int) -> str:
        table = self.netfilter.tables.get((self._backend, version))
        if table is None:
            return ""
        chains = [*NAT_BUILTINS, *sorted(c for c in table if c not in NAT_BUILTINS)]
        lines = ["*nat"]
        lines += [f":{c} ACCEPT [0:0]" if c in NAT_BUILTINS else f":{c} - [0:0]" for c in chains]
        lines += [f"-A {c} {rule}" for c in chains for rule in table[c]]
        return "\n".join([*lines, "COMMIT"]) + "\n"

    def drop_empty_nat(self, version: int) -> bool:
        key = (self._backend, version)
        table = self.netfilter.tables.get(key)
        if self._backend != "nft" or table is None or table != _empty_nat():
            return False
        del self.netfilter.tables[key]
        return True

    def restore(self, version: int, payload: str) -> None:
        tool = "-".join(filter(None, (_TOOLS[version], self._backend, "restore")))
        self.netfilter.restores.append((self._backend, version, payload))
        if self.netfilter.lock_held and self._backend != "nft":  # iptables-nft takes no lock
            raise RuntimeFailure(
                f"{tool} --noflush exited 4: Another app is currently holding the xtables lock. "
                f"Stopped waiting after {iptables.LOCK_WAIT_SECONDS}s."
            )
        if self.netfilter.refuse is not None:
            raise RuntimeFailure(f"{tool} --noflush exited 1: {self.netfilter.refuse}")
        key = (self._backend, version)
        table = {c: list(r) for c, r in self.netfilter.tables.get(key, _empty_nat()).items()}
        for number, line in enumerate(payload.splitlines(), 1):
            if line == "COMMIT":
                self.netfilter.tables[key] = table
            elif not _restore_line(table, line):
                raise RuntimeFailure(f"{tool} --noflush exited 2: {tool}: line {number} failed")


def _empty_nat() -> NatTable:
    return {chain: [] for chain in NAT_BUILTINS}


def _restore_line(table: NatTable, line: str) -> bool:
    """Carry out one line of a --noflush payload on `table`; False where iptables fails."""
    op, _, rest = line.partition(" ")
    if op.startswith(":"):  # declaring a chain creates it, or flushes it (and only it)
        if op[1:] not in NAT_BUILTINS:
            table[op[1:]] = []
        return True
    if op in ("*nat", "") or op.startswith("#"):
        return True
    chain, _, rule = rest.partition(" ")
    edit = {"-A": _append, "-I": _insert, "-D": _delete, "-X": _delete_chain}.get(op)
    return chain in table and edit is not None and edit(table, chain, rule)


def _append(table: NatTable, chain: str, rule: str) -> bool:
    return _insert(table, chain, f"{len(table[chain]) + 1} {rule}")


def _insert(table: NatTable, chain: str, rule: str) -> bool:
    """-I CHAIN [position] rule: a target must exist, the position at most one past the end."""
    rules = table[chain]
    position, _, spec = rule.partition(" ")
    at, rule = (int(position), spec) if position.isdigit() else (1, rule)
    target = rule.rsplit("-j ", 1)[-1].split(" ")[0]
    if at > len(rules) + 1 or (target not in TARGETS and target not in table):
        return False
    rules.insert(at - 1, rule)
    return True


def _delete(table: NatTable, chain: str, rule: str) -> bool:
    """-D CHAIN rule: the first identical rule; there must be one."""
    if rule not in table[chain]:
        return False
    table[chain].remove(rule)
    return True


def _delete_chain(table: NatTable, chain: str, _: str) -> bool:
    """-X CHAIN: only an empty chain of the user's that no rule jumps to."""
    referenced = any(r.endswith(f"-j {chain}") for rules in table.values() for r in rules)
    if chain in NAT_BUILTINS or table[chain] or referenced:
        return False
    del table[chain]
    return True


# -- the node ------------------------------------------------------------------------------------


class FakeNode:
    """open_node's shape over a FakeKernel and a FakeIptables: what the engine and the loop are
    given instead of the real node. `lock_held`: another applier holds the lock (a wait for it
    fails at once, as node_lock fails once its timeout is over)."""

    def __init__(self, kernel: FakeKernel, iptables: FakeIptables) -> None:
        self.kernel = kernel
        self.iptables = iptables
        self.lock_held = False
        self.opened = 0

    @contextmanager
    def __call__(
        self,
        netns: str | None,
        lock_timeout: float | None,
        *,
        cancelled: Callable[[], bool] | None = None,
        kept: HandleKeeper | None = None,
    ) -> Iterator[NodeHandles]:
        if self.lock_held and lock_timeout is not None:
            raise RuntimeFailure(
                f"another kindplan apply holds the lock on {LOCK_DIR}/netns-{netns}.lock; "
                f"gave up after {lock_timeout:g} s"
            )
        self.opened += 1
        yield NodeHandles(self.kernel, self.iptables)


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def seed_worker2(backend: str = "nft") -> FakeNode:
    """k8s-guide-worker2 of fixtures/seed-lab as tests/kernel's seed_worker2 builds it: an
    on-link uplink eth0 172.18.0.12/16 and its two pods' host veths, nothing of kindplan's yet."""
    veth = ("vetha1079faf", "veth4b2c9d10")
    links = [
        Link("lo", 1, 65536, True, ()),
        Link("eth0", 2, 1500, True, ((ip_address("172.18.0.12"), 16),), "veth"),
        *(Link(name, 3 + i, 1500, True, (), "veth") for i, name in enumerate(veth)),
    ]
    kernel = FakeKernel(links, sysctls={"net.ipv4.ip_forward": "0"})
    return FakeNode(kernel, FakeIptables(backend))


if TYPE_CHECKING:  # mypy checks this file ([tool.mypy] files): a fake that drifts fails it
    _KERNEL: KernelPort = FakeKernel()
    _IPTABLES: IptablesPort = FakeIptables()
    _OPENER: NodeOpener = FakeNode(FakeKernel(), FakeIptables())
