"""compile_desired: one node's complete kindnet state from a validated snapshot. Pure."""

from __future__ import annotations

from ipaddress import ip_network
from operator import itemgetter

from kindplan.core.addresses import IPNetwork
from kindplan.core.masq.value import Masquerade, wanted
from kindplan.core.model import (
    Address,
    CniConfig,
    DesiredState,
    HostFacts,
    Node,
    Pod,
    Snapshot,
    Sysctl,
)
from kindplan.core.nexthops import (
    AUTO_MIN_PEERS,
    DEFAULT_ROUTE_STYLE,
    ID_SPAN,
    Nexthop,
    nexthop_families,
    nexthop_id,
)
from kindplan.core.routes import (
    DEFAULT_ROUTE_PROTO,
    IPV6_DEFAULT_METRIC,
    MAIN_TABLE,
    ROUTE_ORDER,
    Route,
    RouteSpecial,
)
from kindplan.errors import InvalidInputError

FORWARDING_SYSCTLS = {4: "net.ipv4.ip_forward", 6: "net.ipv6.conf.all.forwarding"}


def find_node(snapshot: Snapshot, name: str, *, host_name: bool = False) -> Node:
    """The node called `name`, or an InvalidInputError that lists what there is (and says so
    when `name` is the host name that stands in for a --node not given)."""
    node = snapshot.node(name)
    if node is None:
        names = [n.name for n in snapshot.nodes]
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        what = f"no node named {name!r} in the snapshot ({shown})"
        if host_name:
            what = (
                f"not given, so it is this machine's host name {name!r}, and there is {what}; "
                "give --node NAME"
            )
        raise InvalidInputError.one("--node", what)
    return node


def compile_desired(
    snapshot: Snapshot,
    node_name: str,
    facts: HostFacts,
    *,
    route_proto: int = DEFAULT_ROUTE_PROTO,
    nexthop_families: tuple[int, ...] = (),
) -> DesiredState:
    """Everything node `node_name` needs: peer routes (those of `nexthop_families` through
    nexthop objects), pod veth plumbing, conflist, SNAT chains."""
    node = find_node(snapshot, node_name)
    local_pods = [pod for pod in snapshot.pods if pod.node == node.name]
    routes = [*_peer_routes(snapshot, node, facts, route_proto)]
    nexthops: list[Nexthop] = []
    if nexthop_families:
        routes = _through_nexthops(routes, snapshot, nexthop_families, nexthops)
    addresses: list[Address] = []
    for pod in local_pods:
        if pod.host_interface in (facts.uplink, "lo"):
            raise InvalidInputError.one(
                f"pod {pod.namespace}/{pod.name}",
                f"hostInterface {pod.host_interface} is the node's "
                + ("uplink" if pod.host_interface == facts.uplink else "loopback")
                + ", not a pod's veth",
            )
        pod_routes, pod_addresses = _pod_plumbing(node, pod, route_proto)
        routes.extend(pod_routes)
        addresses.extend(pod_addresses)
    families = snapshot.families
    return DesiredState(
        node=node.name,
        routes=tuple(sorted(routes, key=ROUTE_ORDER)),
        addresses=tuple(sorted({a.key: a for a in addresses}.values(), key=lambda a: a.key)),
        sysctls=tuple(Sysctl(FORWARDING_SYSCTLS[v], "1") for v in families),
        cni=CniConfig(snapshot.cluster.cni, facts.mtu, node.pod_cidrs),
        masq=tuple(_masquerade(snapshot, v) for v in families),
        pod_subnets=snapshot.cluster.pod_subnets,
        node_cidrs=frozenset(c for n in snapshot.nodes for c in n.pod_cidrs),
        nexthops=tuple(sorted(nexthops, key=itemgetter(0))),  # by id
    )


def route_style_families(
    snapshot: Snapshot, node: Node, style: str | None, supported: bool
) -> tuple[int, ...]:
    """The families whose peer routes go through nexthop objects on `node`: the route style
    (`style`, else the snapshot's, else auto) given its peers and whether the kernel has
    nexthop objects (core/nexthops.py, nexthop_families). auto counts IPv4 peers only as far
    as its threshold: a first apply at 5,000 nodes does not walk them all once more."""
    style = style or snapshot.cluster.route_style or DEFAULT_ROUTE_STYLE
    if style != "auto" or not supported or len(snapshot.nodes) <= AUTO_MIN_PEERS:
        return nexthop_families(style, {}, supported)
    peers = 0
    for peer in snapshot.nodes:
        if peer.name != node.name and any(ip.version == 4 for ip in peer.internal_ips):
            peers += any(cidr.version == 4 for cidr in peer.pod_cidrs)
            if peers >= AUTO_MIN_PEERS:
                break
    return nexthop_families(style, {4: peers}, supported)


def _through_nexthops(
    routes: list[Route], snapshot: Snapshot, families: tuple[int, ...], nexthops: list[Nexthop]
) -> list[Route]:
    """The peer routes of `families` as `PodCIDR nhid N` (their gateway and device kept: what
    the kernel dumps for such a route), each object added to `nexthops` (core/nexthops.py: the
    id; a PodCIDR without one keeps its plain route).

    5,000 of them in a first apply: the PodCIDR's index comes from the ints of the route's key,
    and a route and an object are made as the tuples they are (the key does not change: an
    object's route has no TOS), not through Route.__new__ and ipaddress's Python properties.
    """
    spaces: dict[int, tuple[int, int, int]] = {
        v: (int(s.network_address), s.prefixlen, s.max_prefixlen)
        for s in snapshot.cluster.pod_subnets
        if (v := s.version) in families
    }
    new_route, new_nexthop, out = tuple.__new__, tuple.__new__, []
    for route in routes:
        _, version, address, prefixlen, _ = key = route.key
        space = spaces.get(version)
        if space is None or route.gateway is None:
            out.append(route)
            continue
        base, subnet_len, bits = space
        index = (address - base) >> (bits - prefixlen)
        if prefixlen < subnet_len or (address ^ base) >> (bits - subnet_len) or index >= ID_SPAN:
            out.append(route)  # outside the pod subnet, or past the ids: plain
            continue
        ident = nexthop_id(route.proto, version, index)
        dst, ifname, gateway, scope, metric, proto, table, peer = route[:8]
        object_ = (ident, version, gateway, ifname, proto, peer, "")
        nexthops.append(new_nexthop(Nexthop, object_))
        fields = (
            dst,
            ifname,
            gateway,
            scope,
            metric,
            proto,
            table,
            peer,
            RouteSpecial(nh_id=ident),
        )
        out.append(new_route(Route, (*fields, key)))
    return out


def _peer_routes(snapshot: Snapshot, node: Node, facts: HostFacts, proto: int) -> list[Route]:
    """One route per peer PodCIDR via the peer's InternalIP of the same family (kindnet)."""
    # One list per family, IPv4 first: the caller's sort by key then meets long ordered runs
    # (PodCIDRs are handed out in order) instead of the families alternating node by node.
    by_family: dict[int, list[Route]] = {4: [], 6: []}
    uplink = facts.uplink
    for peer in snapshot.nodes:
        if peer.name == node.name:
            continue
        gateways = {ip.version: ip for ip in peer.internal_ips}
        for cidr in peer.pod_cidrs:
            version = cidr.version
            gateway = gateways.get(version)
            if gateway is None:  # the snapshot checks make this unreachable
                continue
            metric = IPV6_DEFAULT_METRIC if version == 6 else 0
            by_family[version].append(
                Route(cidr, uplink, gateway, "universe", metric, proto, MAIN_TABLE, peer.name)
            )
    return by_family[4] + by_family[6]


def _pod_plumbing(node: Node, pod: Pod, proto: int) -> tuple[list[Route], list[Address]]:
    """What ptp gives a pod's host veth: the gateway as /32 (/128), and a host route per pod IP."""
    label = f"{pod.namespace}/{pod.name}"
    routes, addresses = [], []
    for ip in pod.ips:
        cidr = node.pod_cidr(ip.version)
        if cidr is None:  # the snapshot checks make this unreachable
            continue
        addresses.append(Address(pod.host_interface, cidr.network_address + 1, pod=label))
        # ptp asks for scope host on both families; the kernel keeps it only for IPv4.
        routes.append(
            Route(
                dst=ip_network(ip),
                ifname=pod.host_interface,
                scope="host" if ip.version == 4 else "universe",
                metric=_metric(cidr),
                proto=proto,
                peer=label,
            )
        )
    return routes, addresses


def _metric(net: IPNetwork) -> int:
    return IPV6_DEFAULT_METRIC if net.version == 6 else 0


def _masquerade(snapshot: Snapshot, version: int) -> Masquerade:
    """The cluster pod subnet exempt, then the extra non-masquerade CIDRs, of one family."""
    cluster = snapshot.cluster
    exempt = (*cluster.pod_subnets, *cluster.non_masquerade_cidrs)
    return wanted(version, (n for n in exempt if n.version == version))
