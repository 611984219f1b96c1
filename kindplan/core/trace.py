"""trace_packet: a packet's walk through the cluster, hop by hop, as the kernel routes it. Pure.

Each network namespace on the path is modelled by what decides a packet's fate there:
- a pod: what ptp gives its eth0 (measured with containernetworking-plugins 1.1.1): IPv4
  `default via GW`, `PODCIDR via GW src POD`, `GW dev eth0 scope link src POD`; IPv6 `GW dev eth0
  metric 1024`, `PODCIDR via GW metric 1024`, `default via GW metric 1024` (GW: the PodCIDR's
  first address, which the host side of every pod veth holds). A pod does not forward.
- a node: its local addresses (InternalIPs, the gateway on each pod veth), its main table
  (kindplan's desired routes, or for a node given with its observed state the routes it has),
  the uplink's connected prefix and default route (not kindplan's: from flags, else assumed),
  portmap's hostPort DNAT, and KIND-MASQ-AGENT behind POSTROUTING's jump.

Route choice as the kernel makes it: the local table first, then the main table's longest
prefix, the lowest metric among equal prefixes; a route via a gateway that is not on-link from
its device is one the kernel refuses to hold, so it is skipped.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import TypeVar

from kindplan.core.compiler import FORWARDING_SYSCTLS, compile_desired
from kindplan.core.model import (
    IPV6_DEFAULT_METRIC,
    HostFacts,
    HostPort,
    IPAddress,
    IPNetwork,
    Node,
    ObservedState,
    Pod,
    Route,
    Snapshot,
    format_ip,
    format_net,
    parse_ip,
)
from kindplan.core.render import MASQ_CHAIN, masq_rules
from kindplan.errors import InvalidInputError

MAX_HOPS = 32  # a routing loop ends the walk here
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
class Masq:
    """KIND-MASQ-AGENT of one family as rules (None: no chain) and POSTROUTING's jumps to it."""

    version: int
    rules: tuple[str, ...] | None
    jumps: int


@dataclass(frozen=True, slots=True)
class Namespace:
    kind: str  # "pod" or "node"
    name: str
    node: str
    local: tuple[tuple[IPAddress, str], ...]  # (address, device), in the device's order
    routes: tuple[TableRoute, ...]
    masq: tuple[Masq, ...] = ()
    forwarding: tuple[int, ...] = ()  # families this namespace forwards
    observed: bool = False

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name}"


@dataclass(frozen=True, slots=True)
class Nat:
    kind: str  # "dnat", "snat" or "return" (the chain decided: no SNAT)
    chain: str
    rule: str
    before: str  # address[:port] before
    after: str


@dataclass(frozen=True, slots=True)
class Hop:
    index: int
    namespace: Namespace
    iif: str | None  # None: the packet starts here
    table: str  # "local" or "main"
    src: IPAddress  # the packet as the route lookup sees it (after DNAT, before SNAT)
    dst: IPAddress
    port: int | None
    type: str  # "local", "unicast" or "unreachable"
    route: TableRoute | None
    dev: str | None
    gateway: IPAddress | None
    nat: tuple[Nat, ...] = ()
    notes: tuple[str, ...] = ()
    drift: str | None = None  # a node with observed state: what its desired state would do


@dataclass(frozen=True, slots=True)
class End:
    kind: str  # "delivered", "leaves" or "dropped"
    at: str
    why: str
    src: IPAddress  # the packet as it arrives or leaves
    dst: IPAddress
    port: int | None


@dataclass(frozen=True, slots=True)
class Trace:
    version: int
    proto: str
    port: int | None
    source: Endpoint
    target: Endpoint
    hops: tuple[Hop, ...]
    end: End


# -- the cluster as namespaces -------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    snapshot: Snapshot
    uplink: Uplink
    namespaces: Mapping[tuple[str, str], Namespace]  # (kind, name) -> namespace
    desired_nodes: Mapping[str, Namespace]  # every node's desired namespace, to tell drift

    def pod(self, name: str) -> Pod:
        return next(p for p in self.snapshot.pods if _pod_name(p) == name)


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


def _pod_name(pod: Pod) -> str:
    return f"{pod.namespace}/{pod.name}"


def build_world(
    snapshot: Snapshot, uplink: Uplink, observed: Mapping[str, ObservedState] | None = None
) -> World:
    """Every pod and node as a namespace; nodes in `observed` as they are, not as desired."""
    nodes = {node.name: node for node in snapshot.nodes}
    pods = {_pod_name(pod): pod for pod in snapshot.pods if pod.node in nodes}
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
        _pod_name(pod),
        pod.node,
        tuple((ip, POD_IF) for ip in pod.ips),
        tuple(TableRoute(r, "ptp") for r in routes),
    )


def _any(version: int) -> IPNetwork:
    return ip_network("0.0.0.0/0" if version == 4 else "::/0")


def _desired_node(snapshot: Snapshot, node: Node, uplink: Uplink) -> Namespace:
    desired = compile_desired(snapshot, node.name, HostFacts(uplink.name))
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
        gateway = next((g for g in uplink.gateways if g.version == v), None)
        metric = IPV6_DEFAULT_METRIC if v == 6 else 0
        routes.append(
            TableRoute(
                Route(_any(v), uplink.name, gateway, metric=metric, proto=PROTO_BOOT),
                "node" if gateway else "assumed",
            )
        )
    local = [(ip, uplink.name) for ip in node.internal_ips]
    local += [(a.address, a.ifname) for a in desired.addresses]
    return Namespace(
        "node",
        node.name,
        node.name,
        tuple(local),
        tuple(routes),
        tuple(Masq(c.version, masq_rules(c), 1) for c in desired.masq),
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
        tuple(Masq(m.version, m.rules, m.jumps) for m in state.masq),
        forwarding,
        observed=True,
    )


# -- endpoints ---------------------------------------------------------------------------------


def resolve(snapshot: Snapshot, text: str, where: str) -> Endpoint:  # noqa: C901  # fixed on another branch
    """A pod (namespace/name, or a name that only one pod has), a node, or an address."""
    try:
        address = parse_ip(text)
    except ValueError:
        address = None
    if address is not None:
        for pod in snapshot.pods:
            if address in pod.ips:
                return Endpoint("pod", _pod_name(pod), (address,), pod.node)
        for node in snapshot.nodes:
            gateways = [c.network_address + 1 for c in node.pod_cidrs]
            if address in node.internal_ips or address in gateways:  # its pod veths hold those
                return Endpoint("node", node.name, (address,), node.name)
        owner = next((n for n in snapshot.nodes for c in n.pod_cidrs if address in c), None)
        if owner is not None and where == "--from":
            # A packet has to start somewhere: in a pod the snapshot does not list, it cannot.
            cidr = next(c for c in owner.pod_cidrs if address in c)
            raise InvalidInputError.one(
                where,
                f"{format_ip(address)} is in node {owner.name}'s PodCIDR {cidr} but no pod of the "
                "snapshot has it: name a pod, or list the node's pods (pods:, or --cni-cache-dir)",
            )
        return Endpoint("outside", format_ip(address), (address,))
    named = snapshot.node(text)
    if named is not None:
        return Endpoint("node", named.name, named.internal_ips, named.name)
    pods = [p for p in snapshot.pods if text in (_pod_name(p), p.name)]
    if len(pods) == 1:
        return Endpoint("pod", _pod_name(pods[0]), pods[0].ips, pods[0].node)
    if pods:
        names = ", ".join(_pod_name(p) for p in pods)
        raise InvalidInputError.one(where, f"{text!r} names several pods ({names}): say which")
    raise InvalidInputError.one(where, f"{text!r} is no pod, node or IP address of the snapshot")


def families(source: Endpoint, target: Endpoint, only: int | None = None) -> tuple[int, ...]:
    """The IP families both ends have (the one asked for, if any), IPv4 first."""
    found = tuple(
        v for v in (4, 6) if source.ip(v) and target.ip(v) and (only is None or v == only)
    )
    if not found:
        raise InvalidInputError.one(
            "--to",
            f"{source.label} and {target.label} share no IP family"
            + (f" (asked for IPv{only})" if only else ""),
        )
    return found


# -- the walk ----------------------------------------------------------------------------------


def trace_packet(
    world: World,
    source: Endpoint,
    target: Endpoint,
    version: int,
    *,
    port: int | None = None,
    proto: str = "tcp",
) -> Trace:
    """The walk of one packet from `source` to `target` in one IP family."""
    first_src, first_dst = source.ip(version), target.ip(version)
    assert first_src is not None and first_dst is not None
    src, dst = first_src, first_dst
    if source.kind == "outside" and target.kind == "outside":
        raise InvalidInputError.one("--to", "neither end is in the cluster")
    hops: list[Hop] = []

    asked_port = port  # the port asked for; a hostPort's DNAT changes `port` on the way

    def finish(kind: str, at: str, why: str) -> Trace:
        end = End(kind, at, why, src, dst, port)
        return Trace(version, proto, asked_port, source, target, tuple(hops), end)

    at: tuple[str, str]
    iif: str | None = None
    if source.kind == "outside":
        # From outside, only a node's InternalIP is reached (a hostPort, say).
        node = world.snapshot.node(target.node or "")
        if target.kind != "node" or node is None or dst not in node.internal_ips:
            return finish(
                "dropped",
                source.name,
                f"{format_ip(dst)} is reached only from inside the cluster: kindnet routes "
                "PodCIDRs on the nodes, and a host outside has no route to them",
            )
        at, iif = ("node", node.name), world.uplink.name
    else:
        at = (source.kind, source.name)
    while True:
        step = _step(world, at, iif, Packet(src, dst, port, proto), len(hops) + 1)
        hops.append(step.hop)
        src, dst, port = step.packet.src, step.packet.dst, step.packet.port
        if step.stop is not None:
            return finish(step.stop[0], step.hop.namespace.label, step.stop[1])
        if len(hops) >= MAX_HOPS:
            return finish("dropped", step.hop.namespace.label, f"routing loop: {MAX_HOPS} hops")
        assert step.following is not None
        at, iif = step.following


@dataclass(frozen=True, slots=True)
class Packet:
    src: IPAddress
    dst: IPAddress
    port: int | None
    proto: str


@dataclass(frozen=True, slots=True)
class _Step:
    hop: Hop
    packet: Packet  # as it leaves the hop
    following: tuple[tuple[str, str], str] | None  # the next namespace and its incoming device
    stop: tuple[str, str] | None = None  # (end kind, why)


def _step(world: World, at: tuple[str, str], iif: str | None, packet: Packet, index: int) -> _Step:  # noqa: C901  # fixed on another branch
    """One namespace: hostPort DNAT (nodes), the route lookup, SNAT (nodes), the next hop."""
    ns = world.namespaces[at]
    src, dst, port = packet.src, packet.dst, packet.port
    version = dst.version
    nats: list[Nat] = []
    marked = False
    if ns.kind == "node":
        dnat = _host_port_dnat(world, ns, packet, local_out=iif is None)
        if dnat is not None:
            dst, port, nat, marked = dnat
            nats.append(nat)
    kind, chosen, notes = lookup(ns, dst)
    skipped = list(notes)  # routes the kernel could not hold: an off-link peer's
    drift = _drift(world, ns, dst, kind, chosen) if ns.observed else None
    stop: tuple[str, str] | None = None
    if kind == "local":
        stop = ("delivered", f"{format_ip(dst)} is an address of {ns.label}")
    elif chosen is None:
        why = f"no route to {format_ip(dst)} in {ns.label}"
        stop = ("dropped", why + (f" ({notes[-1]})" if notes else ""))
    elif iif is not None and ns.kind == "pod":
        notes.append("a pod does not forward: the address is not its own")
        stop = ("dropped", f"{format_ip(dst)} is not an address of this pod")
    elif iif is not None and version not in ns.forwarding:
        notes.append(f"{FORWARDING_SYSCTLS[version]} is not 1")
        stop = ("dropped", f"{ns.label} does not forward IPv{version}")
    new_src = src
    if stop is None and chosen is not None and ns.kind == "node":
        new_src, snat, more = _postrouting(ns, src, dst, chosen.route.ifname, marked=marked)
        nats += snat
        notes += more
    hop = Hop(
        index,
        ns,
        iif,
        "local" if kind == "local" else "main",
        src,
        dst,
        port,
        kind,
        chosen,
        "lo" if kind == "local" else (chosen.route.ifname if chosen else None),
        chosen.route.gateway if chosen else None,
        tuple(nats),
        tuple(notes),
        drift,
    )
    out = Packet(new_src, dst, port, packet.proto)
    if stop is not None or chosen is None:
        return _Step(hop, out, None, stop or ("dropped", "no route"))
    following = _neighbour(world, ns, chosen, chosen.route.gateway or dst)
    if isinstance(following, str):
        end_kind, why = following.split(":", 1)
        if skipped:  # say why a packet for a peer's pod left the cluster instead
            why += f" (off-link peer: {skipped[0]})"
        return _Step(hop, out, None, (end_kind, why.strip()))
    return _Step(hop, out, following)


def lookup(ns: Namespace, dst: IPAddress) -> tuple[str, TableRoute | None, list[str]]:
    """The kernel's choice: local table, then longest prefix and lowest metric of the main one."""
    if any(addr == dst for addr, _ in ns.local):
        return "local", None, []
    candidates = sorted(
        (r for r in ns.routes if r.route.dst.version == dst.version and dst in r.route.dst),
        key=lambda r: (-r.route.dst.prefixlen, r.route.metric),
    )
    skipped = []
    for candidate in candidates:
        route = candidate.route
        gateway = route.gateway
        # An observed route is in the kernel, so on-link in its eyes (an `onlink` route, say).
        if (
            gateway is not None
            and candidate.origin != "observed"
            and not _on_link(ns, gateway, route.ifname)
        ):
            why = "; kindnet needs every node on one link" if candidate.origin == "kindplan" else ""
            skipped.append(
                f"{route_text(route)} cannot exist: gateway {format_ip(gateway)} is not "
                f"on-link from {route.ifname} (the kernel refuses the route{why})"
            )
            continue
        return "unicast", candidate, skipped
    return "unreachable", None, skipped


def _on_link(ns: Namespace, gateway: IPAddress, dev: str) -> bool:
    return any(
        r.route.ifname == dev and r.route.gateway is None and gateway in r.route.dst
        for r in ns.routes
        if r.route.dst.version == gateway.version and r.route.dst.prefixlen > 0
    )


def _drift(
    world: World, ns: Namespace, dst: IPAddress, kind: str, chosen: TableRoute | None
) -> str | None:
    """What the node's desired state would choose, where it differs from what it has."""
    want_kind, want, _ = lookup(world.desired_nodes[ns.name], dst)

    def answer(k: str, r: TableRoute | None) -> tuple[str, str | None, IPAddress | None]:
        return (k, r.route.ifname if r else None, r.route.gateway if r else None)

    if answer(kind, chosen) == answer(want_kind, want):
        return None
    desired = route_text(want.route) if want else want_kind
    observed = route_text(chosen.route) if chosen else kind
    return f"desired: {desired}; observed: {observed}"


def _host_port_dnat(
    world: World, ns: Namespace, packet: Packet, *, local_out: bool
) -> tuple[IPAddress, int, Nat, bool] | None:
    """portmap's DNAT for a hostPort of a pod on this node (any LOCAL destination address)."""
    src, dst, port, proto = packet.src, packet.dst, packet.port, packet.proto
    if port is None or not any(addr == dst for addr, _ in ns.local):
        return None
    node = world.snapshot.node(ns.node)
    for pod in world.snapshot.pods:
        if pod.node != ns.node:
            continue
        pod_ip = next((ip for ip in pod.ips if ip.version == dst.version), None)
        for hp in pod.host_ports:
            if pod_ip is None or not _publishes(hp, dst, port, proto):
                continue
            chain = "OUTPUT" if local_out else "PREROUTING"
            to = _at(pod_ip, hp.container_port)
            rule = f"-p {proto} --dport {port} -j DNAT --to-destination {to}"
            cidr = node.pod_cidr(dst.version) if node else None
            # portmap marks for masquerade what comes from the node's own PodCIDR or loopback
            # (CNI-HOSTPORT-SETMARK, then CNI-HOSTPORT-MASQ in POSTROUTING).
            marked = src.is_loopback or (cidr is not None and src in cidr)
            nat = Nat(
                "dnat",
                f"{chain} CNI-HOSTPORT-DNAT (hostPort of pod {_pod_name(pod)})",
                rule,
                _at(dst, port),
                _at(pod_ip, hp.container_port),
            )
            return pod_ip, hp.container_port, nat, marked
    return None


def _publishes(hp: HostPort, dst: IPAddress, port: int, proto: str) -> bool:
    return hp.host_port == port and hp.protocol == proto and hp.host_ip in (None, dst)


def _at(ip: IPAddress, port: int | None) -> str:
    if port is None:
        return format_ip(ip)
    return f"[{format_ip(ip)}]:{port}" if ip.version == 6 else f"{format_ip(ip)}:{port}"


def _postrouting(
    ns: Namespace, src: IPAddress, dst: IPAddress, dev: str, *, marked: bool
) -> tuple[IPAddress, tuple[Nat, ...], list[str]]:
    """SNAT on the way out of a node: portmap's hairpin masquerade, then KIND-MASQ-AGENT, whose
    jump is only for destinations that are not LOCAL (a routed packet's never is)."""
    version = dst.version
    out = _address_of(ns, dev, version)
    if marked and out is not None:
        rule = "-A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE"
        nat = Nat(
            "snat",
            "POSTROUTING (marked by CNI-HOSTPORT-SETMARK)",
            rule,
            format_ip(src),
            format_ip(out),
        )
        return out, (nat,), []
    masq = next((m for m in ns.masq if m.version == version), None)
    if masq is None or masq.rules is None:
        return src, (), [f"no {MASQ_CHAIN} chain (IPv{version}): nothing is masqueraded"]
    if masq.jumps == 0:
        return (
            src,
            (),
            [f"no POSTROUTING jump to {MASQ_CHAIN} (IPv{version}): nothing is masqueraded"],
        )
    notes = []
    for rule in masq.rules:
        matches, target = _parse_rule(rule)
        if matches is None:
            notes.append(f"rule not understood, taken as not matching: {rule}")
            continue
        if matches and not any(dst in net for net in matches):
            continue
        chain = "POSTROUTING (destination not LOCAL)"
        if target == "RETURN":
            return src, (Nat("return", chain, rule, format_ip(src), format_ip(src)),), notes
        if target == "MASQUERADE" and out is not None:
            return out, (Nat("snat", chain, rule, format_ip(src), format_ip(out)),), notes
        notes.append(f"target {target} not followed: {rule}")
        return src, (), notes
    return src, (), [*notes, f"no rule of {MASQ_CHAIN} matched: source kept"]


def _parse_rule(rule: str) -> tuple[tuple[IPNetwork, ...] | None, str]:
    """(-d networks or () for any, target); None if the rule matches on something else."""
    try:
        words = shlex.split(rule)
    except ValueError:
        return None, ""
    nets: list[IPNetwork] = []
    target = ""
    i = 2  # after -A CHAIN
    while i < len(words):
        word = words[i]
        if word == "-d" and i + 1 < len(words):
            try:
                nets.append(ip_network(words[i + 1], strict=False))
            except ValueError:
                return None, ""
            i += 2
        elif word == "-m" and words[i + 1 : i + 3] == ["comment", "--comment"]:
            i += 4
        elif word == "-j" and i + 1 < len(words):
            target = words[i + 1]
            i += 2
        else:
            return None, ""
    return tuple(nets), target


def _address_of(ns: Namespace, dev: str, version: int) -> IPAddress | None:
    """The address MASQUERADE takes: the first of the family on the outgoing device."""
    return next(
        (a for a, d in ns.local if d == dev and a.version == version and not a.is_link_local),
        None,
    )


def _neighbour(
    world: World, ns: Namespace, chosen: TableRoute, next_ip: IPAddress
) -> tuple[tuple[str, str], str] | str:
    """Where the packet goes next: (namespace key, its incoming device), or 'end kind: why'."""
    dev = chosen.route.ifname
    if ns.kind == "pod":
        pod = world.pod(ns.name)
        return ("node", pod.node), pod.host_interface
    for pod in world.snapshot.pods:
        if pod.node == ns.node and pod.host_interface == dev:
            return ("pod", _pod_name(pod)), POD_IF
    if dev == world.uplink.name:
        for node in world.snapshot.nodes:
            if node.name != ns.node and next_ip in node.internal_ips:
                return ("node", node.name), world.uplink.name
        if chosen.route.dst.prefixlen == 0 and chosen.route.gateway is None:
            return (
                f"leaves: by the node's own default route on {dev} (its gateway is not in the "
                "snapshot; --default-via names it)"
            )
        if chosen.route.dst.prefixlen == 0:
            return f"leaves: by the default route, to the gateway {format_ip(next_ip)} on {dev}"
        return f"leaves: to {format_ip(next_ip)} on {dev}, which is no node of the snapshot"
    return f"dropped: {dev} is no pod's veth on {ns.node} in the snapshot"


def route_text(route: Route) -> str:
    """A route as ip route show writes it."""
    words = ["default" if route.dst.prefixlen == 0 else _dst_text(route.dst)]
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
