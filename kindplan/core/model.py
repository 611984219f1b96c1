"""Frozen value objects: the snapshot that comes in and the desired state that comes out.

Every collection is a tuple sorted by the items' `key`, so equal states compare equal and render
byte for byte the same whatever order the input had.
"""

from __future__ import annotations

import operator
import socket as _socket
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any, NamedTuple

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

    def __new__(
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


# Sorts routes by their key, read in C (a lambda costs a Python call for each of 10,000).
ROUTE_ORDER = operator.attrgetter("key")


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


@dataclass(frozen=True, slots=True)
class SetSysctl:
    name: str
    value: str
    old: str | None


@dataclass(frozen=True, slots=True)
class AddAddress:
    address: Address


@dataclass(frozen=True, slots=True)
class AddRoute:
    route: Route


@dataclass(frozen=True, slots=True)
class ReplaceRoute:
    route: Route
    old: Route


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


@dataclass(frozen=True, slots=True)
class RemoveChain:
    """Delete KIND-MASQ-AGENT of one family and every jump to it: a rollback to before kindplan,
    a backend the node no longer uses, a family the cluster no longer has."""

    version: int
    old_rules: tuple[str, ...]
    jumps: int
    backend: str | None = None  # the iptables variant written; None: the one in use then


@dataclass(frozen=True, slots=True)
class DelAddress:
    address: Address


@dataclass(frozen=True, slots=True)
class DeleteConflist:
    path: str
    old: str


@dataclass(frozen=True, slots=True)
class DelRoute:
    route: Route


@dataclass(frozen=True, slots=True)
class WriteConflist:
    path: str
    content: str
    old: str | None


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
