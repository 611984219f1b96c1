"""compile_desired: one node's complete kindnet state from a validated snapshot. Pure."""

from __future__ import annotations

from ipaddress import ip_network
from operator import itemgetter
from typing import TYPE_CHECKING

from kindplan.core.addresses import IPNetwork, parse_cidr
from kindplan.core.crosssubnet import compile_tunnels
from kindplan.core.masq.dialects import dialect
from kindplan.core.masq.value import MasqObserved, Masquerade, wanted
from kindplan.core.model import (
    FORWARDING_SYSCTLS,
    Address,
    CniConfig,
    DesiredState,
    HostFacts,
    Node,
    ObservedState,
    Options,
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

if TYPE_CHECKING:
    from kindplan.core.nfttable import NftTable


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
    masq_backend: str = "iptables",
    no_masquerade: tuple[IPNetwork, ...] = (),
    cross_subnet: str | None = None,
    nexthop_families: tuple[int, ...] = (),
) -> DesiredState:
    """Everything node `node_name` needs: peer routes (those of `nexthop_families` through
    nexthop objects), pod veth plumbing, conflist, SNAT chains (held by `masq_backend`: a
    backend, never "auto", which masq_backend() settles first), and with `cross_subnet` "vxlan"
    (None: the snapshot's) the tunnel to off-link peers (its routes stay plain: onlink through
    the VXLAN device)."""
    node = find_node(snapshot, node_name)
    # Only a local endpoint (a pod with its host veth) gets plumbing: the other pods of the
    # node are known from the API (NetworkPolicy), their veths from libcni's cache if at all.
    local_pods = [pod for pod in snapshot.pods if pod.node == node.name and pod.host_interface]
    mode = cross_subnet if cross_subnet is not None else snapshot.cluster.cross_subnet
    tunnels = compile_tunnels(snapshot, node, facts, route_proto, mode)
    routes = [*_peer_routes(snapshot, node, facts, route_proto, tunnels.tunneled)]
    nexthops: list[Nexthop] = []
    if nexthop_families:
        routes = _through_nexthops(routes, snapshot, nexthop_families, nexthops)
    routes += tunnels.routes
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
    policy = policy_table(snapshot, node)
    return DesiredState(
        node=node.name,
        routes=tuple(sorted(routes, key=ROUTE_ORDER)),
        addresses=tuple(sorted({a.key: a for a in addresses}.values(), key=lambda a: a.key)),
        sysctls=tuple(Sysctl(FORWARDING_SYSCTLS[v], "1") for v in families),
        cni=CniConfig(snapshot.cluster.cni, tunnels.mtu, node.pod_cidrs),
        masq=tuple(
            dialect(masq_backend).held(_masquerade(snapshot, v, no_masquerade)) for v in families
        ),
        pod_subnets=snapshot.cluster.pod_subnets,
        node_cidrs=frozenset(c for n in snapshot.nodes for c in n.pod_cidrs),
        masq_backend=masq_backend,
        tunnels=tunnels.devices,
        neighbours=tunnels.neighbours,
        fdb=tunnels.fdb,
        nexthops=tuple(sorted(nexthops, key=itemgetter(0))),  # by id
        policy=policy,
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


def _peer_routes(
    snapshot: Snapshot,
    node: Node,
    facts: HostFacts,
    proto: int,
    tunneled: frozenset[tuple[str, int]],
) -> list[Route]:
    """One route per peer PodCIDR via the peer's InternalIP of the same family (kindnet), but
    for the `tunneled` (peer, family) pairs, which go through the tunnel (crosssubnet.py)."""
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
            if tunneled and (peer.name, version) in tunneled:
                continue
            metric = IPV6_DEFAULT_METRIC if version == 6 else 0
            by_family[version].append(
                Route(cidr, uplink, gateway, "universe", metric, proto, MAIN_TABLE, peer.name)
            )
    return by_family[4] + by_family[6]


def policy_table(snapshot: Snapshot, node: Node) -> NftTable | None:
    """The node's NetworkPolicy table; a cluster without policies never loads core/policy."""
    if not snapshot.policies:
        return None
    from kindplan.core.policy.compile import compile_policy

    return compile_policy(snapshot, node)


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


def _masquerade(
    snapshot: Snapshot, version: int, no_masquerade: tuple[IPNetwork, ...] = ()
) -> Masquerade:
    """The cluster pod subnet exempt, then the extra non-masquerade CIDRs (the snapshot's, then
    --no-masquerade-cidr's), of one family."""
    cluster = snapshot.cluster
    exempt = (*cluster.pod_subnets, *cluster.non_masquerade_cidrs, *no_masquerade)
    return wanted(version, (n for n in exempt if n.version == version))


def no_masquerade(options: Options) -> tuple[IPNetwork, ...]:
    """--no-masquerade-cidr's networks (checked by the command line, and by a saved plan's
    reader)."""
    return tuple(parse_cidr(text) for text in options.no_masquerade)


def masq_backend(asked: str, observed: ObservedState | None) -> str:
    """The backend that holds the masquerade: the one asked for, or auto's one rule.

    auto: nftables when kindplan's nftables table or kindnet's holds a masquerade on the node
    now, or when the node has no iptables tools; else iptables. A node keeps the backend it has
    (auto never switches one under foot: `--masq-backend` does, explicitly), a node taken from
    kindnet >= 1.5 stays on nftables, an nftables-only host masquerades at all. Whichever it
    picks, the diff removes kindplan's masquerade from the other backend in the same apply, so
    one path is live; kindnet's table goes with --adopt (and is warned of until then).
    `render`, which observes no node (None), renders iptables' files, as before auto.
    """
    if asked != "auto":
        return asked
    if observed is None:
        return "iptables"
    if "iptables" not in observed.masq_tools or any(map(_in_nftables, observed.masq)):
        return "nftables"
    return "iptables"


def _in_nftables(found: MasqObserved) -> bool:
    return found.backend == "nftables" and (found.masq is not None or found.hooks > 0)
