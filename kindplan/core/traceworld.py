"""The cluster as trace walks it: each network namespace on a packet's path, modelled by what
decides a packet's fate there, and the endpoints a walk starts and ends at. Pure.

- a pod: what ptp gives its eth0 (measured with containernetworking-plugins 1.1.1): IPv4
  `default via GW`, `PODCIDR via GW src POD`, `GW dev eth0 scope link src POD`; IPv6 `GW dev eth0
  metric 1024`, `PODCIDR via GW metric 1024`, `default via GW metric 1024` (GW: the PodCIDR's
  first address, which the host side of every pod veth holds). A pod does not forward.
- a node: its local addresses (InternalIPs, the gateway on each pod veth), its main table
  (kindplan's desired routes, or for a node given with its observed state the routes it has),
  the uplink's connected prefix and default route (not kindplan's: from flags, else assumed),
  portmap's hostPort DNAT, and its masquerade (the value, core/masq) behind its hook.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Any, TypeVar

from kindplan.core.addresses import IPAddress, IPNetwork, format_ip, format_net, parse_ip
from kindplan.core.compiler import (
    compile_desired,
    masq_backend,
    route_style_families,
)
from kindplan.core.masq.value import MasqObserved
from kindplan.core.model import (
    FORWARDING_SYSCTLS,
    HostFacts,
    Node,
    ObservedState,
    Pod,
    Snapshot,
)
from kindplan.core.routes import IPV6_DEFAULT_METRIC, Route
from kindplan.errors import UsageError

PROTO_KERNEL, PROTO_BOOT = 2, 3  # connected routes; routes added by ip(8) (a node's default)
POD_IF = "eth0"


@dataclass(frozen=True, slots=True)
class Uplink:
    """What the snapshot does not say about the nodes' own network: flags, else assumptions."""

    name: str = "eth0"
    networks: tuple[IPNetwork, ...] = ()  # the node network per family; else assumed on-link
    gateways: tuple[IPAddress, ...] = ()  # the nodes' default gateway per family; else unknown


@dataclass(frozen=True, slots=True)
class Endpoint:
    kind: str  # "pod", "node" or "outside"
    name: str  # namespace/name, node name, or the address
    ips: tuple[IPAddress, ...]
    node: str | None = None  # a pod's node; a node itself

    def ip(self, version: int) -> IPAddress | None:
        return next((ip for ip in self.ips if ip.version == version), None)

    @property
    def label(self) -> str:
        return self.name if self.kind == "outside" else f"{self.kind} {self.name}"


@dataclass(frozen=True, slots=True)
class TableRoute:
    """A route of a namespace's table, with where it comes from (for the reader)."""

    route: Route
    origin: str  # kindplan, ptp, kernel (connected), node (its default), assumed, observed


@dataclass(frozen=True, slots=True)
class Namespace:
    kind: str  # "pod" or "node"
    name: str
    node: str
    local: tuple[tuple[IPAddress, str], ...]  # (address, device), in the device's order
    routes: tuple[TableRoute, ...]
    masq: tuple[MasqObserved, ...] = ()  # per family: the first of its family decides
    forwarding: tuple[int, ...] = ()  # families this namespace forwards
    observed: bool = False

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name}"


# -- the cluster as namespaces -------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    snapshot: Snapshot
    uplink: Uplink
    namespaces: Mapping[tuple[str, str], Namespace]  # (kind, name) -> namespace
    desired_nodes: Mapping[str, Namespace]  # every node's desired namespace, to tell drift
    # Each node's policy table evaluator, compiled when a walk first crosses it (tracepolicy.py)
    policy_tables: dict[str, Any] = field(default_factory=dict, compare=False)

    def pod(self, name: str) -> Pod:
        return next(p for p in self.snapshot.pods if pod_name(p) == name)


K = TypeVar("K")


class _Lazy(Mapping[K, Namespace]):
    """Namespaces made when first asked for: a walk visits a handful of a cluster's nodes, and
    compiling one node is a pass over all its peers (every node of 1,000 took seconds)."""

    def __init__(self, keys: Iterable[K], make: Callable[[K], Namespace]) -> None:
        self._keys = dict.fromkeys(keys)
        self._make = make
        self._made: dict[K, Namespace] = {}

    def __getitem__(self, key: K) -> Namespace:
        made = self._made.get(key)
        if made is None:
            if key not in self._keys:
                raise KeyError(key)
            made = self._made[key] = self._make(key)
        return made

    def __iter__(self) -> Iterator[K]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def pod_name(pod: Pod) -> str:
    return f"{pod.namespace}/{pod.name}"


def build_world(
    snapshot: Snapshot, uplink: Uplink, observed: Mapping[str, ObservedState] | None = None
) -> World:
    """Every pod and node as a namespace; nodes in `observed` as they are, not as desired."""
    nodes = {node.name: node for node in snapshot.nodes}
    # A pod is a namespace of the walk only with its host veth (a local endpoint).
    pods = {pod_name(p): p for p in snapshot.pods if p.node in nodes and p.host_interface}
    desired = _Lazy(nodes, lambda name: _desired_node(snapshot, nodes[name], uplink))

    def make(key: tuple[str, str]) -> Namespace:
        kind, name = key
        if kind == "pod":
            return _pod_namespace(nodes[pods[name].node], pods[name])
        state = (observed or {}).get(name)
        return desired[name] if state is None else _observed_node(snapshot, nodes[name], state)

    keys = [("node", name) for name in nodes] + [("pod", name) for name in pods]
    return World(snapshot, uplink, _Lazy(keys, make), desired)


def _pod_namespace(node: Node, pod: Pod) -> Namespace:
    routes = []
    for ip in pod.ips:
        cidr = node.pod_cidr(ip.version)
        if cidr is None:
            continue
        gw = cidr.network_address + 1
        if ip.version == 4:
            routes += [
                Route(_any(4), POD_IF, gw, proto=PROTO_BOOT),
                Route(cidr, POD_IF, gw, proto=PROTO_BOOT),
                Route(ip_network(gw), POD_IF, None, "link", proto=PROTO_BOOT),
            ]
        else:
            metric = IPV6_DEFAULT_METRIC
            routes += [
                Route(_any(6), POD_IF, gw, metric=metric, proto=PROTO_BOOT),
                Route(cidr, POD_IF, gw, metric=metric, proto=PROTO_BOOT),
                Route(ip_network(gw), POD_IF, None, metric=metric, proto=PROTO_BOOT),
            ]
    return Namespace(
        "pod",
        pod_name(pod),
        pod.node,
        tuple((ip, POD_IF) for ip in pod.ips),
        tuple(TableRoute(r, "ptp") for r in routes),
    )


def _any(version: int) -> IPNetwork:
    return ip_network("0.0.0.0/0" if version == 4 else "::/0")


def _desired_node(snapshot: Snapshot, node: Node, uplink: Uplink) -> Namespace:
    backend = masq_backend(snapshot.cluster.masq_backend, None)  # auto, unobserved: iptables
    # The node's own networks (those holding its InternalIPs): with the snapshot's crossSubnet
    # vxlan, a peer on none of them is reached through the tunnel.
    own = tuple(n for n in uplink.networks if any(ip in n for ip in node.internal_ips))
    facts = HostFacts(uplink.name, networks=own)
    # The route style of the snapshot (cluster.routeStyle; the kernel taken to have nexthop
    # objects): the tables then list each peer route with its nhid, as ip route does.
    families = route_style_families(snapshot, node, None, True)
    desired = compile_desired(
        snapshot, node.name, facts, masq_backend=backend, nexthop_families=families
    )
    routes = [TableRoute(r, "kindplan") for r in desired.routes]
    for ip in node.internal_ips:
        v = ip.version
        net = next((n for n in uplink.networks if ip in n), None)
        assumed = _assumed_network(snapshot, v, uplink.gateways)
        if any(n.version == v for n in uplink.networks):
            assumed = ip_network(ip)  # outside the node network given: on-link with no one
        routes.append(
            TableRoute(
                Route(
                    net or assumed,
                    uplink.name,
                    None,
                    "link",
                    metric=256 if v == 6 else 0,
                    proto=PROTO_KERNEL,
                ),
                "kernel" if net else "assumed",
            )
        )
        # the default gateway on the node's own network, if one was given there (segments)
        gateway = next(
            (g for g in uplink.gateways if g.version == v and (net is None or g in net)),
            next((g for g in uplink.gateways if g.version == v), None),
        )
        metric = IPV6_DEFAULT_METRIC if v == 6 else 0
        routes.append(
            TableRoute(
                Route(_any(v), uplink.name, gateway, metric=metric, proto=PROTO_BOOT),
                "node" if gateway else "assumed",
            )
        )
    local = [(ip, uplink.name) for ip in node.internal_ips]
    local += [(a.address, a.ifname) for a in desired.addresses]
    local += [(a, t.name) for t in desired.tunnels for a in t.addresses]
    return Namespace(
        "node",
        node.name,
        node.name,
        tuple(local),
        tuple(routes),
        tuple(
            MasqObserved(m.version, m, 1, backend=desired.masq_backend, variant="")
            for m in desired.masq
        ),
        snapshot.families,
    )


def _assumed_network(
    snapshot: Snapshot, version: int, gateways: tuple[IPAddress, ...]
) -> IPNetwork:
    """The smallest prefix that holds every node's InternalIP of a family and the default gateway:
    kindnet needs all nodes on one link, and without --node-network that is all that is known."""
    ips = [int(ip) for n in snapshot.nodes for ip in n.internal_ips if ip.version == version]
    ips += [int(ip) for ip in gateways if ip.version == version]
    bits = 32 if version == 4 else 128
    length = bits - (min(ips) ^ max(ips)).bit_length()
    base = min(ips) >> (bits - length) << (bits - length) if length else 0
    return IPv4Network((base, length)) if version == 4 else IPv6Network((base, length))


def _observed_node(snapshot: Snapshot, node: Node, state: ObservedState) -> Namespace:
    forwarding = tuple(
        v
        for v, name in FORWARDING_SYSCTLS.items()
        if any(s.name == name and s.value == "1" for s in state.sysctls)
    )
    return Namespace(
        "node",
        node.name,
        node.name,
        tuple((addr, link.name) for link in state.links for addr, _ in link.addresses),
        tuple(TableRoute(r, "observed") for r in state.routes),
        state.masq,
        forwarding,
        observed=True,
    )


# -- endpoints ---------------------------------------------------------------------------------


def resolve(snapshot: Snapshot, text: str, where: str) -> Endpoint:
    """A pod (namespace/name, or a name that only one pod has), a node, or an address."""
    try:
        address = parse_ip(text)
    except ValueError:
        address = None
    if address is not None:
        return _resolve_address(snapshot, address, where)
    named = snapshot.node(text)
    if named is not None:
        return Endpoint("node", named.name, named.internal_ips, named.name)
    pods = [p for p in snapshot.pods if text in (pod_name(p), p.name)]
    if len(pods) == 1:
        return _pod_endpoint(pods[0], pods[0].ips, where)
    if pods:
        names = ", ".join(pod_name(p) for p in pods)
        raise UsageError(f"{where}: {text!r} names several pods ({names}): say which")
    raise UsageError(f"{where}: {text!r} is no pod, node or IP address of the snapshot")


def _pod_endpoint(pod: Pod, ips: tuple[IPAddress, ...], where: str) -> Endpoint:
    """A pod as an end of the walk: only a local endpoint (its host veth known) has a namespace
    in the world; a pod known from the API alone has none to walk from or to."""
    if not pod.host_interface:
        raise UsageError(
            f"{where}: pod {pod_name(pod)} has no host veth in the snapshot (hostInterface; on "
            "its node, --cni-cache-dir gives it): trace walks between local endpoints"
        )
    return Endpoint("pod", pod_name(pod), ips, pod.node)


def _resolve_address(snapshot: Snapshot, address: IPAddress, where: str) -> Endpoint:
    """The pod or node that holds `address`, else a host outside the cluster."""
    for pod in snapshot.pods:
        if address in pod.ips and not pod.host_network:  # a hostNetwork pod's IP is its node's
            return _pod_endpoint(pod, (address,), where)
    for node in snapshot.nodes:
        gateways = [c.network_address + 1 for c in node.pod_cidrs]
        if address in node.internal_ips or address in gateways:  # its pod veths hold those
            return Endpoint("node", node.name, (address,), node.name)
    owner = next((n for n in snapshot.nodes for c in n.pod_cidrs if address in c), None)
    if owner is not None and where == "--from":
        # A packet has to start somewhere: in a pod the snapshot does not list, it cannot.
        cidr = next(c for c in owner.pod_cidrs if address in c)
        raise UsageError(
            f"{where}: {format_ip(address)} is in node {owner.name}'s PodCIDR {cidr} but no "
            "pod of the snapshot has it: name a pod, or list the node's pods (pods:, or "
            "--cni-cache-dir)",
        )
    return Endpoint("outside", format_ip(address), (address,))


def families(source: Endpoint, target: Endpoint, only: int | None = None) -> tuple[int, ...]:
    """The IP families both ends have (the one asked for, if any), IPv4 first."""
    found = tuple(
        v for v in (4, 6) if source.ip(v) and target.ip(v) and (only is None or v == only)
    )
    if not found:
        raise UsageError(
            f"--to: {source.label} and {target.label} share no IP family"
            + (f" (asked for IPv{only})" if only else ""),
        )
    return found


def route_listing(route: Route) -> str:
    """A route as `ip route show` lists it (`default`, `proto kernel`; trace's tables), where
    routes.route_text gives it in the words `ip route replace` takes (the plan's)."""
    words = ["default" if route.dst.prefixlen == 0 else _dst_text(route.dst)]
    if route.nh_id:
        words += ["nhid", str(route.nh_id)]
    if route.gateway is not None:
        words += ["via", format_ip(route.gateway)]
    words += ["dev", route.ifname]
    if route.scope not in ("universe",):
        words += ["scope", route.scope]
    if route.proto not in (PROTO_BOOT,):
        words += ["proto", {PROTO_KERNEL: "kernel"}.get(route.proto, str(route.proto))]
    if route.metric:
        words += ["metric", str(route.metric)]
    return " ".join(words)


def _dst_text(net: IPNetwork) -> str:
    return format_ip(net.network_address) if net.prefixlen == net.max_prefixlen else format_net(net)
