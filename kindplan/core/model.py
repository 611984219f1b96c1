"""Frozen value objects: the snapshot that comes in, the desired state that comes out, what a
node holds as observed, and the options of a plan.

Every collection is a tuple sorted by the items' `key`, so equal states compare equal and render
byte for byte the same whatever order the input had. Addresses are in addresses.py, routes in
routes.py, the plan's change types in changes.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kindplan.core.addresses import IPAddress, IPNetwork, addr_order
from kindplan.core.masq.value import MasqObserved, Masquerade
from kindplan.core.nexthops import Nexthop
from kindplan.core.routes import DEFAULT_MTU, DEFAULT_ROUTE_PROTO, Route
from kindplan.core.tunnel import FdbEntry, Neighbour, Vxlan

if TYPE_CHECKING:  # not at import: start-up pays for what it uses
    from kindplan.core.nfttable import NftTable
    from kindplan.core.policyvalues import ContainerPort, Labels, Namespace, NetworkPolicy


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
    masq_backend: str = "auto"  # cluster.masqBackend: iptables, nftables or auto
    cross_subnet: str = "none"  # "vxlan": off-link peers through kindplan's VXLAN devices
    route_style: str | None = None  # plain, nexthop, auto; None: not said (--route-style, auto)


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
    # NetworkPolicy (core/policy): what selects the pod and what its named ports resolve to. A
    # hostNetwork pod is never selected and is no pod peer (its address is the node's).
    labels: Labels = ()
    ports: tuple[ContainerPort, ...] = ()
    host_network: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class Snapshot:
    cluster: Cluster
    nodes: tuple[Node, ...]  # sorted by name
    pods: tuple[Pod, ...] = ()  # sorted by (namespace, name)
    namespaces: tuple[Namespace, ...] = ()  # sorted by name
    policies: tuple[NetworkPolicy, ...] = ()  # sorted by (namespace, name)

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
    # The uplink's networks (its prefixes): a peer on none of those of its family is off-link.
    # None of a family known (render without --node-network): its peers are taken as on-link.
    networks: tuple[IPNetwork, ...] = ()


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


# What the compiler sets to 1 and observe reads (here: the converged check reads them without
# importing the compiler).
FORWARDING_SYSCTLS = {4: "net.ipv4.ip_forward", 6: "net.ipv6.conf.all.forwarding"}


@dataclass(frozen=True, slots=True)
class CniConfig:
    """Everything the conflist says; rendered by render.render_conflist."""

    settings: CniSettings
    mtu: int
    # The node's PodCIDRs in the node's order: one range set each. None yet (a joining node): no
    # conflist is written, since a range without a subnet is a broken one.
    subnets: tuple[IPNetwork, ...]


@dataclass(frozen=True, slots=True)
class DesiredState:
    node: str
    routes: tuple[Route, ...]
    addresses: tuple[Address, ...]
    sysctls: tuple[Sysctl, ...]
    cni: CniConfig
    masq: tuple[Masquerade, ...]  # one per family of the cluster, IPv4 first
    # The cluster's pod subnets: the space where a foreign route matching no node is stale.
    pod_subnets: tuple[IPNetwork, ...] = ()
    # Every listed node's PodCIDRs, its own and those kindplan does not route (a peer off-link,
    # a node without an InternalIP yet): a foreign route to one of them is never stale.
    node_cidrs: frozenset[IPNetwork] = frozenset()
    masq_backend: str = "iptables"  # the backend that holds `masq` (core/masq/dialects.py)
    # --cross-subnet vxlan (core/crosssubnet.py): kindplan's VXLAN devices, and the off-link
    # peers' neighbour and FDB entries on them, sorted by key.
    tunnels: tuple[Vxlan, ...] = ()
    neighbours: tuple[Neighbour, ...] = ()
    fdb: tuple[FdbEntry, ...] = ()
    # The nexthop objects of the peer routes that use one (core/nexthops.py), sorted by id.
    nexthops: tuple[Nexthop, ...] = ()
    # NetworkPolicy for the node's local pods (core/policy); None: kindplan holds no policy table.
    policy: NftTable | None = None


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
class ObservedState:
    links: tuple[Link, ...]  # sorted by name
    routes: tuple[Route, ...]  # main table, both families, sorted by key
    sysctls: tuple[Sysctl, ...]
    # Both families in every backend the node has: kindplan's chain may be left behind in one
    # the node no longer uses, or for a family the cluster no longer has.
    masq: tuple[MasqObserved, ...]
    conflist: str | None  # None: no file
    iptables_backend: str = "nft"  # the one in use
    # The masquerade backends whose tools the node has (an nftables-only host: no iptables).
    masq_tools: tuple[str, ...] = ("iptables",)
    conflist_error: str | None = None  # the conflist could not be read: why (it is left alone)
    # libcni's result cache, when one is read (--cni-cache-dir): the node's pods in it, which
    # the plan routes as the snapshot's own, and why any entry of it was skipped.
    local_pods: tuple[Pod, ...] = ()
    cache_warnings: tuple[str, ...] = ()
    # The devices named as kindplan's VXLAN devices (theirs too, told apart by Vxlan.owned), and
    # the permanent neighbour and FDB entries on those that are kindplan's.
    tunnels: tuple[Vxlan, ...] = ()
    neighbours: tuple[Neighbour, ...] = ()
    fdb: tuple[FdbEntry, ...] = ()
    # Every nexthop object, sorted by id; None: the kernel has none (before Linux 5.3).
    nexthops: tuple[Nexthop, ...] | None = ()
    # kindplan's NetworkPolicy table (core/policytable.py; None: none, or not kindplan's), what
    # of it could not be read (the next write replaces it), and whether a table of its name is
    # someone else's (no marker: left alone).
    policy: NftTable | None = None
    policy_unread: tuple[str, ...] = ()
    policy_foreign: bool = False
    # The ruleset's generation they were read at (None: not known): the converged record's
    # digest stands for them by it (node/observe.py).
    policy_generation: int | None = None

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
    # iptables, nftables, auto (compiler.masq_backend's rule); None: the snapshot's choice
    masq_backend: str | None = None
    no_masquerade: tuple[str, ...] = ()  # --no-masquerade-cidr: exempt besides the snapshot's
    cross_subnet: str | None = None  # default: the snapshot's cluster.crossSubnet
    route_style: str | None = None  # plain, nexthop, auto; default: the snapshot's, else auto


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
