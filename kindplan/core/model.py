"""Frozen value objects: the snapshot that comes in, the desired state that comes out, and the
plan's change types, each with all that it means in one class (plan text, undo, journal form).

Every collection is a tuple sorted by the items' `key`, so equal states compare equal and render
byte for byte the same whatever order the input had.
"""

from __future__ import annotations

import operator
import socket as _socket
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from itertools import compress
from typing import Any, ClassVar, NamedTuple, get_args

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

DEFAULT_ROUTE_PROTO = 75  # kindplan's own route protocol number: how it recognises its routes
# Protocol numbers the kernel and other routing software write (linux/rtnetlink.h, rt_protos):
# kindplan deletes every stale route with its number, so it must never take one of these.
RESERVED_ROUTE_PROTOS = frozenset(
    {0, 1, 2, 3, 4, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 42, 99, 186, 187, 188, 189, 192}
)
MAIN_TABLE = 254
RTPROT_KERNEL = 2  # routes the kernel derives from addresses: never anyone's to delete
IPV6_DEFAULT_METRIC = 1024  # the kernel stores metric 0 on an IPv6 route as 1024
DEFAULT_MTU = 1500


def net_order(net: IPNetwork) -> tuple[int, int, int]:
    """Sort key that puts IPv4 before IPv6 and orders networks numerically."""
    return (net.version, int(net.network_address), net.prefixlen)


def addr_order(addr: IPAddress) -> tuple[int, int]:
    return (addr.version, int(addr))


@dataclass(frozen=True, slots=True)
class CniSettings:
    conf_dir: str = "/etc/cni/net.d"
    conf_file: str = "10-kindnet.conflist"
    network_name: str = "kindnet"
    cni_version: str = "0.3.1"
    ipam_data_dir: str = "/run/cni-ipam-state"


@dataclass(frozen=True, slots=True)
class Cluster:
    pod_subnets: tuple[IPNetwork, ...]  # at most one per family, IPv4 first
    non_masquerade_cidrs: tuple[IPNetwork, ...] = ()
    mtu: int | None = None
    cni: CniSettings = field(default_factory=CniSettings)


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    # Either may be empty for a node of a node list that is still joining (snapshot.py).
    internal_ips: tuple[IPAddress, ...]  # one per family, IPv4 first
    pod_cidrs: tuple[IPNetwork, ...]  # one per family, in the node's order (host-local's ranges)

    def internal_ip(self, version: int) -> IPAddress | None:
        return next((ip for ip in self.internal_ips if ip.version == version), None)

    def pod_cidr(self, version: int) -> IPNetwork | None:
        return next((net for net in self.pod_cidrs if net.version == version), None)


@dataclass(frozen=True, slots=True)
class HostPort:
    """A hostPort the portmap plugin publishes: node:host_port -> pod:container_port."""

    host_port: int
    container_port: int
    protocol: str = "tcp"  # tcp or udp
    host_ip: IPAddress | None = None  # None: every address of the node


@dataclass(frozen=True, slots=True)
class Pod:
    namespace: str
    name: str
    node: str
    ips: tuple[IPAddress, ...]
    host_interface: str
    # Only `trace` reads them (kindplan's own plumbing does not depend on them): from the
    # snapshot's optional pods[].hostPorts or the portMappings in libcni's cache.
    host_ports: tuple[HostPort, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class Snapshot:
    cluster: Cluster
    nodes: tuple[Node, ...]  # sorted by name
    pods: tuple[Pod, ...] = ()  # sorted by (namespace, name)

    def node(self, name: str) -> Node | None:
        return next((n for n in self.nodes if n.name == name), None)

    @property
    def families(self) -> tuple[int, ...]:
        return tuple(sorted({net.version for net in self.cluster.pod_subnets}))


@dataclass(frozen=True, slots=True)
class HostFacts:
    """What the compiler needs to know about the node itself."""

    uplink: str = "eth0"
    mtu: int = DEFAULT_MTU


# Route types (rtm_type) kindplan observes in the main table: a blackhole, unreachable, prohibit
# or throw route at a destination decides where its traffic goes as much as a unicast one does.
ROUTE_KINDS = ("unicast", "blackhole", "unreachable", "prohibit", "throw")
UNICAST = "unicast"


class NextHop(NamedTuple):
    """One path of a multipath route (RTA_MULTIPATH)."""

    gateway: IPAddress | None  # of the route's family, or of the other one (RTA_VIA)
    ifname: str
    weight: int = 1


class RouteSpecial(NamedTuple):
    """What sets apart a route that kindplan observes but never writes itself."""

    kind: str = UNICAST  # one of ROUTE_KINDS; only a unicast route has a gateway or paths
    tos: int = 0
    nexthops: tuple[NextHop, ...] = ()  # a multipath route's paths (then no gateway or ifname)
    nh_id: int = 0  # a route through a nexthop object (RTA_NH_ID); its path is in nexthops


_ORDINARY = RouteSpecial()


class _RouteFields(NamedTuple):
    dst: IPNetwork
    ifname: str
    gateway: IPAddress | None  # of the route's family; of the other one: RTA_VIA (IPv4 via IPv6)
    scope: str  # "universe" or "host" (IPv4 pod routes, as ptp makes them)
    metric: int
    proto: int
    table: int
    peer: str  # the node (peer route) or pod (host route) this route serves; not identity
    special: RouteSpecial | None  # None: a unicast route through a gateway or a device
    # The kernel's identity of the route, (table, dst, TOS, metric), derived from the fields
    # above as (table, family, address, prefix length, TOS << 32 | metric) (a metric is a u32):
    # sorting and diffing 10,000 routes ask for it several times each, and hash it each time.
    key: tuple[int, int, int, int, int]


class Route(_RouteFields):
    """A route as the kernel keys it: (table, dst, TOS, metric); the rest is what it points at.

    An immutable named tuple rather than a frozen dataclass: a full apply at 5,000 dual-stack
    nodes makes some 30,000 of them, and a frozen dataclass takes three times the instructions
    to build (an object.__setattr__ per field). The rare kinds of route (another type, TOS,
    multipath, a nexthop object) keep their fields in one `special`, so that the routes
    kindplan makes and compares by the thousand carry one field more, not four.
    """

    __slots__ = ()

    # The kernel's fields of a route, positional as in a tuple: the compiler and the netlink
    # parser build tens of thousands this way, so the size rules' limits do not fit here.
    def __new__(  # noqa: PLR0913, PLR0917
        cls,
        dst: IPNetwork,
        ifname: str,
        gateway: IPAddress | None = None,
        scope: str = "universe",
        metric: int = 0,
        proto: int = DEFAULT_ROUTE_PROTO,
        table: int = MAIN_TABLE,
        peer: str = "",
        special: RouteSpecial | None = None,
    ) -> Route:
        key = (table, dst.version, int(dst.network_address), dst.prefixlen, metric)
        if special is not None:
            if special == _ORDINARY:
                special = None
            elif special.tos:
                key = (*key[:4], special.tos << 32 | metric)
        return tuple.__new__(
            cls, (dst, ifname, gateway, scope, metric, proto, table, peer, special, key)
        )

    def _replace(self, **changes: Any) -> Route:
        """A copy with `changes`, its key derived again."""
        fields = dict(zip(self._fields[:-1], self[:-1], strict=True))  # all but the key
        return Route(**(fields | changes))

    @property
    def kind(self) -> str:
        return self.special.kind if self.special is not None else UNICAST

    @property
    def tos(self) -> int:
        return self.special.tos if self.special is not None else 0

    @property
    def nexthops(self) -> tuple[NextHop, ...]:
        return self.special.nexthops if self.special is not None else ()

    @property
    def nh_id(self) -> int:
        return self.special.nh_id if self.special is not None else 0

    @property
    def plain(self) -> bool:
        """A unicast route through one gateway of its own family or one device: the only kind
        kindplan itself writes."""
        gateway = self.gateway
        return self.special is None and (gateway is None or gateway.version == self.dst.version)

    def owned_by(self, proto: int) -> bool:
        """Is this route the one of whoever writes route protocol number `proto`? A route is
        kindplan's when owned_by(Options.route_proto): the only routes it deletes, replaces or
        counts as its own (owned_routes() and foreign_routes() sort many at once)."""
        return self.proto == proto


# Sorts routes by their key, read in C (a lambda costs a Python call for each of 10,000).
ROUTE_ORDER = operator.attrgetter("key")
_PROTO = operator.itemgetter(Route._fields.index("proto"))  # a Route's protocol, read in C


def owned_routes(routes: Sequence[Route], proto: int) -> list[Route]:
    """The routes that are owned_by(proto), in their order; filtered in C, not with a Python
    call per route (a watch round counts kindplan's among 10,000 every time)."""
    return list(compress(routes, map(proto.__eq__, map(_PROTO, routes))))


def foreign_routes(routes: Sequence[Route], proto: int) -> list[Route]:
    """The routes that are not owned_by(proto), in their order; filtered in C as owned_routes()."""
    return list(compress(routes, map(proto.__ne__, map(_PROTO, routes))))


@dataclass(frozen=True, slots=True)
class Address:
    """An address on a pod's host-side veth: the PodCIDR's gateway as a /32 or /128."""

    ifname: str
    address: IPAddress
    pod: str = ""  # namespace/name, for messages; not identity

    @property
    def prefixlen(self) -> int:
        return self.address.max_prefixlen

    @property
    def key(self) -> tuple[str, tuple[int, int]]:
        return (self.ifname, addr_order(self.address))


@dataclass(frozen=True, slots=True)
class Sysctl:
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class CniConfig:
    """Everything the conflist says; rendered by render.render_conflist."""

    settings: CniSettings
    mtu: int
    # The node's PodCIDRs in the node's order: one range set each. None yet (a joining node): no
    # conflist is written, since a range without a subnet is a broken one.
    subnets: tuple[IPNetwork, ...]


@dataclass(frozen=True, slots=True)
class MasqChain:
    """The KIND-MASQ-AGENT chain of one family: RETURN for each CIDR, then MASQUERADE."""

    version: int
    non_masquerade: tuple[IPNetwork, ...]


@dataclass(frozen=True, slots=True)
class DesiredState:
    node: str
    routes: tuple[Route, ...]
    addresses: tuple[Address, ...]
    sysctls: tuple[Sysctl, ...]
    cni: CniConfig
    masq: tuple[MasqChain, ...]
    # The cluster's pod subnets: the space where a foreign route matching no node is stale.
    pod_subnets: tuple[IPNetwork, ...] = ()


# Parsing through inet_pton is about 5 times faster than ipaddress's string parser, which matters
# at 5,000 nodes; anything unusual falls back to ipaddress, so both accept and refuse the same.
_FAMILIES = (
    (_socket.AF_INET, IPv4Address, IPv4Network),
    (_socket.AF_INET6, IPv6Address, IPv6Network),
)


def parse_ip(text: str) -> IPAddress:
    """An IPv4 or IPv6 address; ValueError if `text` is not one."""
    family, address_type, _ = _family_of(text)
    try:
        return address_type(int.from_bytes(_socket.inet_pton(family, text), "big"))
    except (OSError, TypeError):
        return ip_address(text)


def _family_of(text: str) -> tuple[int, type[IPAddress], type[IPNetwork]]:
    # Only IPv6 is written with colons: one inet_pton, not a failed one first (an exception
    # for each of 10,000 addresses).
    return _FAMILIES[1] if ":" in text else _FAMILIES[0]


def parse_cidr(text: str) -> IPNetwork:
    """A network in CIDR form; ValueError if malformed or if host bits are set."""
    address, slash, prefix = text.partition("/")
    if slash and prefix.isdigit() and prefix.isascii() and prefix[0] != "0":
        family, _, network_type = _family_of(address)
        try:
            packed = _socket.inet_pton(family, address)
        except (OSError, TypeError):
            packed = b""
        length = int(prefix)
        if packed and length <= len(packed) * 8:
            return network_type((int.from_bytes(packed, "big"), length), strict=True)
    return ip_network(text, strict=True)


# -- what a node holds, as observed ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Link:
    name: str
    index: int
    mtu: int
    up: bool
    addresses: tuple[tuple[IPAddress, int], ...]  # (address, prefixlen), sorted
    kind: str = ""  # "veth", "bridge"...; "" for a device with none (a physical NIC, lo)


@dataclass(frozen=True, slots=True)
class MasqObserved:
    """The nat table of one family as far as kindplan cares: its chain and its POSTROUTING jumps."""

    version: int
    rules: tuple[str, ...] | None  # None: the chain does not exist
    jumps: int  # how many POSTROUTING rules are exactly kindplan's jump
    jumps_at: tuple[int, ...] = ()  # their positions in POSTROUTING (1 is the first rule)
    backend: str = "nft"  # the iptables variant it was read from: "nft", "legacy", "" (default)


@dataclass(frozen=True, slots=True)
class ObservedState:
    links: tuple[Link, ...]  # sorted by name
    routes: tuple[Route, ...]  # main table, both families, sorted by key
    sysctls: tuple[Sysctl, ...]
    # Both families in every backend the node has: kindplan's chain may be left behind in one
    # the node no longer uses, or for a family the cluster no longer has.
    masq: tuple[MasqObserved, ...]
    conflist: str | None  # None: no file
    iptables_backend: str = "nft"  # the one in use
    conflist_error: str | None = None  # the conflist could not be read: why (it is left alone)
    # libcni's result cache, when one is read (--cni-cache-dir): the node's pods in it, which
    # the plan routes as the snapshot's own, and why any entry of it was skipped.
    local_pods: tuple[Pod, ...] = ()
    cache_warnings: tuple[str, ...] = ()

    def link(self, name: str) -> Link | None:
        return next((link for link in self.links if link.name == name), None)


@dataclass(frozen=True, slots=True)
class Options:
    """How to plan for a node: every knob of plan/apply that is not the snapshot itself."""

    node: str
    conf_dir: str | None = None  # default: the snapshot's cluster.cni.confDir
    uplink: str | None = None  # default: the interface that holds the node's InternalIP
    mtu: int | None = None  # default: cluster.mtu, else the uplink's MTU
    route_proto: int = DEFAULT_ROUTE_PROTO
    adopt: bool = False
    cni_cache_dir: str | None = None  # read local pods from libcni's cache here (if it exists)


# -- the plan: typed changes, in the order they are applied -------------------------------------
#
# Each change type carries, in its class below, what it means wherever it goes: its `action`
# (+ ~ -), `kind` and `describe()` for the plan's text and JSON, its `undo()` and `undo_rank`, and
# `encode()`/`decode()` for the journal, whose undo line waits for the disk when it is `on_disk`
# (outlives a reboot). The code that acts on the node, or weighs a change
# against it, dispatches with a `match` that ends in assert_never (node/apply.py's apply_change
# and route_write, diff's _in_effect, guard's removed_state and owned_routes_delta, planview's
# details), so that mypy names every place a new change type is missing from; a class without
# one of the methods fails mypy where the union is used (tests/unit/test_change_types.py).
#
# undo_rank orders the undo of a generation as a teardown: the conflist kindplan created goes
# first (kubelet stops seeing a ready network), then routes before addresses (removing a veth's
# last IPv4 address makes the kernel drop that veth's routes), sysctls and a restored conflist last.


@dataclass(frozen=True, slots=True)
class SetSysctl:
    name: str
    value: str
    old: str | None

    kind: ClassVar[str] = "sysctl"
    action: ClassVar[str] = "~"
    undo_rank: ClassVar[int] = 6
    on_disk: ClassVar[bool] = False

    def describe(self) -> str:
        return f"sysctl {self.name} = {self.value} (was {self.old})"

    def undo(self) -> Change | None:
        # No value was observed before (the sysctl could not be read): none to put back.
        return SetSysctl(self.name, self.old, self.value) if self.old is not None else None

    def encode(self) -> dict[str, Any]:
        return {"type": "SetSysctl", "name": self.name, "value": self.value, "old": self.old}

    @classmethod
    def decode(cls, d: dict[str, Any]) -> SetSysctl:
        return cls(str(d["name"]), str(d["value"]), d["old"])


@dataclass(frozen=True, slots=True)
class AddAddress:
    address: Address

    kind: ClassVar[str] = "address"
    action: ClassVar[str] = "+"
    undo_rank: ClassVar[int] = 1
    on_disk: ClassVar[bool] = False

    def describe(self) -> str:
        return f"address {_address_text(self.address)} (pod {self.address.pod})"

    def undo(self) -> Change:
        return DelAddress(self.address)

    def encode(self) -> dict[str, Any]:
        return {"type": "AddAddress", **_encode_address(self.address)}

    @classmethod
    def decode(cls, d: dict[str, Any]) -> AddAddress:
        return cls(_decode_address(d))


@dataclass(frozen=True, slots=True)
class AddRoute:
    route: Route

    kind: ClassVar[str] = "route"
    action: ClassVar[str] = "+"
    undo_rank: ClassVar[int] = 2
    on_disk: ClassVar[bool] = False

    def describe(self) -> str:
        return f"route {route_text(self.route)}{_why(route_for(self.route))}"

    def undo(self) -> Change:
        return DelRoute(self.route)

    def encode(self) -> dict[str, Any]:
        return {"type": "AddRoute", "route": encode_route(self.route)}

    @classmethod
    def decode(cls, d: dict[str, Any]) -> AddRoute:
        return cls(decode_route(d["route"]))


@dataclass(frozen=True, slots=True)
class ReplaceRoute:
    route: Route
    old: Route

    kind: ClassVar[str] = "route"
    action: ClassVar[str] = "~"
    undo_rank: ClassVar[int] = 2
    on_disk: ClassVar[bool] = False

    def describe(self) -> str:
        was = f"was {route_was(self.old)}"
        return f"route {route_text(self.route)}{_why(route_for(self.route), was)}"

    def undo(self) -> Change:
        return ReplaceRoute(self.old, self.route)

    def encode(self) -> dict[str, Any]:
        return {
            "type": "ReplaceRoute",
            "route": encode_route(self.route),
            "old": encode_route(self.old),
        }

    @classmethod
    def decode(cls, d: dict[str, Any]) -> ReplaceRoute:
        return cls(decode_route(d["route"]), decode_route(d["old"]))


@dataclass(frozen=True, slots=True)
class WriteChain:
    """Rewrite KIND-MASQ-AGENT of one family and fix its POSTROUTING jump, in one commit."""

    version: int
    rules: tuple[str, ...] | None  # None: the chain is right, only the jump needs fixing
    old_rules: tuple[str, ...] | None
    jumps: int  # jumps observed
    want_jumps: int = 1  # jumps left afterwards (a rollback may restore another count)
    jumps_at: tuple[int, ...] = ()  # positions of the jumps observed (1: POSTROUTING's first)
    want_at: tuple[int, ...] = ()  # where the jumps go when their count changes (): appended
    backend: str | None = None  # the iptables variant written; None: the one in use then

    kind: ClassVar[str] = "iptables"
    undo_rank: ClassVar[int] = 3
    on_disk: ClassVar[bool] = False

    @property
    def action(self) -> str:
        return "+" if self.old_rules is None else "~"

    def describe(self) -> str:
        parts = []
        if self.rules is not None:
            parts.append("chain KIND-MASQ-AGENT" + (" (new)" if self.old_rules is None else ""))
        if self.jumps != self.want_jumps:
            parts.append(f"POSTROUTING jump ({self.jumps} present, {self.want_jumps} wanted)")
        return f"{_iptables(self.version)} nat: {', '.join(parts)}"

    def undo(self) -> Change:
        if self.old_rules is None and self.rules is not None:
            return RemoveChain(
                self.version, old_rules=self.rules, jumps=self.want_jumps, backend=self.backend
            )
        swapped = replace(
            self,
            jumps=self.want_jumps,
            want_jumps=self.jumps,
            jumps_at=self.want_at,
            want_at=self.jumps_at,
        )
        if self.rules is None:  # only the jumps changed; old_rules just says what the chain held
            return swapped
        return replace(swapped, rules=self.old_rules, old_rules=self.rules)

    def encode(self) -> dict[str, Any]:
        return {
            "type": "WriteChain",
            "version": self.version,
            "rules": _list_or_none(self.rules),
            "oldRules": _list_or_none(self.old_rules),
            "jumps": self.jumps,
            "wantJumps": self.want_jumps,
            "jumpsAt": list(self.jumps_at),
            "wantAt": list(self.want_at),
            "backend": self.backend,
        }

    @classmethod
    def decode(cls, d: dict[str, Any]) -> WriteChain:
        return cls(
            version=_decode_version(d),
            rules=_tuple_or_none(d["rules"]),
            old_rules=_tuple_or_none(d["oldRules"]),
            jumps=int(d["jumps"]),
            want_jumps=int(d["wantJumps"]),
            jumps_at=tuple(d.get("jumpsAt", ())),  # a journal of kindplan 1 has no positions
            want_at=tuple(d.get("wantAt", ())),
            backend=_decode_backend(d),
        )


@dataclass(frozen=True, slots=True)
class RemoveChain:
    """Delete KIND-MASQ-AGENT of one family and every jump to it: a rollback to before kindplan,
    a backend the node no longer uses, a family the cluster no longer has."""

    version: int
    old_rules: tuple[str, ...]
    jumps: int
    backend: str | None = None  # the iptables variant written; None: the one in use then

    kind: ClassVar[str] = "iptables"
    action: ClassVar[str] = "-"
    undo_rank: ClassVar[int] = 3
    on_disk: ClassVar[bool] = False

    def describe(self) -> str:
        table = _iptables(self.version)
        table = f"{table}-{self.backend}" if self.backend else table
        return f"{table} nat: chain KIND-MASQ-AGENT and {self.jumps} jump(s)"

    def undo(self) -> Change:
        return WriteChain(
            self.version,
            rules=self.old_rules,
            old_rules=None,
            jumps=0,
            want_jumps=self.jumps,
            backend=self.backend,
        )

    def encode(self) -> dict[str, Any]:
        return {
            "type": "RemoveChain",
            "version": self.version,
            "oldRules": list(self.old_rules),
            "jumps": self.jumps,
            "backend": self.backend,
        }

    @classmethod
    def decode(cls, d: dict[str, Any]) -> RemoveChain:
        version = _decode_version(d)
        return cls(version, tuple(d["oldRules"]), int(d["jumps"]), _decode_backend(d))


@dataclass(frozen=True, slots=True)
class DelAddress:
    address: Address

    kind: ClassVar[str] = "address"
    action: ClassVar[str] = "-"
    undo_rank: ClassVar[int] = 5
    on_disk: ClassVar[bool] = False

    def describe(self) -> str:
        return f"address {_address_text(self.address)}"

    def undo(self) -> Change:
        return AddAddress(self.address)

    def encode(self) -> dict[str, Any]:
        return {"type": "DelAddress", **_encode_address(self.address)}

    @classmethod
    def decode(cls, d: dict[str, Any]) -> DelAddress:
        return cls(_decode_address(d))


@dataclass(frozen=True, slots=True)
class DeleteConflist:
    path: str
    old: str

    kind: ClassVar[str] = "conflist"
    action: ClassVar[str] = "-"
    undo_rank: ClassVar[int] = 0
    on_disk: ClassVar[bool] = True

    def describe(self) -> str:
        return f"file {self.path}"

    def undo(self) -> Change:
        return WriteConflist(self.path, self.old, None)

    def encode(self) -> dict[str, Any]:
        return {"type": "DeleteConflist", "path": self.path, "old": self.old}

    @classmethod
    def decode(cls, d: dict[str, Any]) -> DeleteConflist:
        return cls(str(d["path"]), str(d["old"]))


@dataclass(frozen=True, slots=True)
class DelRoute:
    route: Route

    kind: ClassVar[str] = "route"
    action: ClassVar[str] = "-"
    undo_rank: ClassVar[int] = 4
    on_disk: ClassVar[bool] = False

    def describe(self) -> str:
        # Observed routes carry no peer: one of ours that nothing wants any more is stale.
        stale = "stale: no longer in the snapshot"
        return f"route {route_text(self.route)}{_why(route_for(self.route) or stale)}"

    def undo(self) -> Change:
        return AddRoute(self.route)

    def encode(self) -> dict[str, Any]:
        return {"type": "DelRoute", "route": encode_route(self.route)}

    @classmethod
    def decode(cls, d: dict[str, Any]) -> DelRoute:
        return cls(decode_route(d["route"]))


@dataclass(frozen=True, slots=True)
class WriteConflist:
    path: str
    content: str
    old: str | None

    kind: ClassVar[str] = "conflist"
    undo_rank: ClassVar[int] = 7
    on_disk: ClassVar[bool] = True

    @property
    def action(self) -> str:
        return "+" if self.old is None else "~"

    def describe(self) -> str:
        return f"file {self.path}" + (" (new)" if self.old is None else "")

    def undo(self) -> Change:
        if self.old is None:
            return DeleteConflist(self.path, self.content)
        return WriteConflist(self.path, self.old, self.content)

    def encode(self) -> dict[str, Any]:
        return {
            "type": "WriteConflist",
            "path": self.path,
            "content": self.content,
            "old": self.old,
        }

    @classmethod
    def decode(cls, d: dict[str, Any]) -> WriteConflist:
        return cls(str(d["path"]), str(d["content"]), d["old"])


Change = (
    SetSysctl
    | AddAddress
    | AddRoute
    | ReplaceRoute
    | WriteChain
    | RemoveChain
    | DelRoute
    | DelAddress
    | WriteConflist
    | DeleteConflist
)


@dataclass(frozen=True, slots=True)
class Conflict:
    """A foreign route where kindplan needs its own: named in the plan, replaced only with adopt."""

    desired: Route
    observed: Route
    shadows: bool = False  # observed has another key, but a lower metric: the kernel takes it


@dataclass(frozen=True, slots=True)
class Plan:
    node: str
    changes: tuple[Change, ...]
    conflicts: tuple[Conflict, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.changes


# -- what the change types share: their journal form, their words in the plan ---------------


# The type of every change by its name, as the journal writes it.
_CHANGE_TYPES: dict[str, type[Change]] = {cls.__name__: cls for cls in get_args(Change)}


def decode_change(d: dict[str, Any]) -> Change:
    """The change that `encode()` wrote as `d`; ValueError, KeyError or TypeError if it is not
    one."""
    name = d["type"]
    cls = _CHANGE_TYPES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"unknown change type {name!r}")
    return cls.decode(d)


def _why(*parts: str) -> str:
    text = "; ".join(p for p in parts if p)
    return f" ({text})" if text else ""


def route_for(route: Route) -> str:
    """Whom a route serves: `peer NODE`, `pod NAMESPACE/NAME`, or "" (an observed route)."""
    if not route.peer:
        return ""
    return f"peer {route.peer}" if route.gateway is not None else f"pod {route.peer}"


def _address_text(address: Address) -> str:
    return f"{address.address}/{address.prefixlen} dev {address.ifname}"


def _iptables(version: int) -> str:
    return "ip6tables" if version == 6 else "iptables"


def _encode_address(address: Address) -> dict[str, Any]:
    return {"ifname": address.ifname, "address": str(address.address), "pod": address.pod}


def _decode_address(d: dict[str, Any]) -> Address:
    return Address(str(d["ifname"]), parse_ip(d["address"]), str(d["pod"]))


def _list_or_none(rules: tuple[str, ...] | None) -> list[str] | None:
    return list(rules) if rules is not None else None


def _tuple_or_none(rules: list[str] | None) -> tuple[str, ...] | None:
    return tuple(str(r) for r in rules) if rules is not None else None


def _decode_version(d: dict[str, Any]) -> int:
    if d["version"] not in (4, 6):
        raise ValueError(f"iptables version {d['version']!r}")
    return int(d["version"])


def _decode_backend(d: dict[str, Any]) -> str | None:
    """The iptables backend a chain change went to (journals before it was recorded: None,
    the backend in use)."""
    backend = d.get("backend")
    if backend not in (None, "", "legacy", "nft"):
        raise ValueError(f"unknown iptables backend {backend!r}")
    return None if backend is None else str(backend)


# -- how a route reads: ip(8)'s words, and the journal's JSON -----------------------------------


def route_command(route: Route) -> str:
    """`route replace ...` as ip(8) takes it, with every field that is part of the desired state."""
    kind = [] if route.kind == UNICAST else [route.kind]
    return " ".join(["route", "replace", *kind, format_net(route.dst), *_target(route)])


def route_text(route: Route) -> str:
    """A route in ip(8)'s words: its destination and what it points at."""
    return route_command(route).removeprefix("route replace ")


def route_target(route: Route) -> str:
    """What a route points at, its destination left out: `blackhole proto 3`, `via ... dev ...`."""
    kind = [] if route.kind == UNICAST else [route.kind]
    return " ".join([*kind, *_target(route)])


def route_was(old: Route) -> str:
    """What an observed route points at (its destination aside), as ip(8) would say it."""
    if not old.plain:  # blackhole, multipath, a nexthop object...: ip's words, with their paths
        return route_target(old)
    via = f"via {old.gateway} " if old.gateway else ""
    return f"{via}dev {old.ifname or '?'} proto {old.proto}".strip()


def _target(route: Route) -> list[str]:
    words = []
    if route.tos:
        words += ["tos", f"0x{route.tos:02x}"]
    if route.nh_id:
        words += ["nhid", str(route.nh_id)]
    if route.gateway is not None:
        words += ["via", *_via(route.dst.version, route.gateway)]
    if route.ifname:
        words += ["dev", route.ifname]
    if route.scope != "universe":
        words += ["scope", route.scope]
    words += ["proto", str(route.proto)]
    if route.metric:
        words += ["metric", str(route.metric)]
    for hop in route.nexthops:
        words.append("nexthop")
        if hop.gateway is not None:
            words += ["via", *_via(route.dst.version, hop.gateway)]
        words += ["dev", hop.ifname or "?", "weight", str(hop.weight)]
    return words


def _via(version: int, gateway: IPAddress) -> list[str]:
    """A gateway as ip(8) takes it: one of the other family is named by its family (RTA_VIA)."""
    family = [] if gateway.version == version else ["inet6" if gateway.version == 6 else "inet"]
    return [*family, format_ip(gateway)]


def encode_route(r: Route) -> dict[str, Any]:
    """A route as the journal writes it (schemas/journal.schema.json)."""
    d: dict[str, Any] = {
        "dst": format_net(r.dst),  # inet_ntop: str() of 10,000 IPv6 networks takes 0.1 s
        "ifname": r.ifname,
        "gateway": format_ip(r.gateway) if r.gateway else None,
        "scope": r.scope,
        "metric": r.metric,
        "proto": r.proto,
        "table": r.table,
        "peer": r.peer,
    }
    if r.special is not None:  # a route observed, to be restored exactly as it was
        d |= {
            "kind": r.kind,
            "tos": r.tos,
            "nexthops": [
                [format_ip(h.gateway) if h.gateway else None, h.ifname, h.weight]
                for h in r.nexthops
            ],
            "nhId": r.nh_id,
        }
    return d


def decode_route(d: dict[str, Any]) -> Route:
    """The route `encode_route` wrote as `d`."""
    kind = str(d.get("kind", UNICAST))
    if kind not in ROUTE_KINDS:
        raise ValueError(f"unknown route kind {kind!r}")
    return Route(
        parse_cidr(d["dst"]),
        str(d["ifname"]),
        parse_ip(d["gateway"]) if d["gateway"] else None,
        str(d["scope"]),
        int(d["metric"]),
        int(d["proto"]),
        int(d["table"]),
        str(d["peer"]),
        RouteSpecial(
            kind,
            int(d.get("tos", 0)),
            tuple(
                NextHop(parse_ip(gateway) if gateway else None, str(ifname), int(weight))
                for gateway, ifname, weight in d.get("nexthops", ())
            ),
            int(d.get("nhId", 0)),
        ),
    )


def format_ip(addr: IPAddress) -> str:
    """str(addr), faster (inet_ntoa and inet_ntop in C: half the instructions for IPv4, and
    ipaddress compresses IPv6 hextets in Python).

    glibc and ipaddress agree on RFC 5952's form except where glibc writes a dotted IPv4 tail
    (::ffff:a.b.c.d); those fall back to ipaddress, so the output never depends on the platform.
    """
    if isinstance(addr, IPv4Address):
        return _socket.inet_ntoa(addr.packed)
    text = _socket.inet_ntop(_socket.AF_INET6, addr.packed)
    return str(addr) if "." in text else text


def format_net(net: IPNetwork) -> str:
    return f"{format_ip(net.network_address)}/{net.prefixlen}"


NAME_MAX, PATH_MAX = 255, 4096  # Linux's limits on a path component and a path, in bytes


def path_problem(path: str) -> str | None:
    """Why the kernel would refuse `path` (ENAMETOOLONG), or None."""
    encoded = path.encode("utf-8", "surrogateescape")
    if len(encoded) >= PATH_MAX:
        return f"path of {len(encoded)} bytes, longer than the system allows ({PATH_MAX - 1})"
    longest = max(encoded.split(b"/"), key=len)
    if len(longest) > NAME_MAX:
        return f"a path component of {len(longest)} bytes, longer than {NAME_MAX}"
    return None
