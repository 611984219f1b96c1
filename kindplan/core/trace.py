"""trace_packet: a packet's walk through the cluster, hop by hop, as the kernel routes it. Pure.

The namespaces it walks through are traceworld.py's. Route choice as the kernel makes it: the
local table first, then the main table's longest prefix, the lowest metric among equal prefixes;
a route via a gateway that is not on-link from its device is one the kernel refuses to hold, so
it is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from kindplan.core.addresses import IPAddress, format_ip
from kindplan.core.masq.dialects import MasqWords, dialect
from kindplan.core.masq.value import EXEMPT, MASQUERADE, MasqObserved
from kindplan.core.model import FORWARDING_SYSCTLS, HostPort
from kindplan.core.routes import DEVICE_NAMES
from kindplan.core.tracepolicy import PolicyCheck, policy_check
from kindplan.core.tracetunnel import tunnel_next, tunnel_notes
from kindplan.core.traceworld import (
    POD_IF,
    Endpoint,
    Namespace,
    TableRoute,
    World,
    pod_name,
    route_listing,
)
from kindplan.errors import UsageError

MAX_HOPS = 32  # a routing loop ends the walk here


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
    policy: PolicyCheck | None = None  # the node's NetworkPolicy table on this packet


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
        raise UsageError("--to: neither end is in the cluster")
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


def _step(world: World, at: tuple[str, str], iif: str | None, packet: Packet, index: int) -> _Step:
    """One namespace: hostPort DNAT (nodes), the route lookup, SNAT (nodes), the next hop."""
    ns = world.namespaces[at]
    src, dst, port = packet.src, packet.dst, packet.port
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
    stop = _stop(ns, iif, dst, (kind, chosen, notes))
    policy, stop = _policy(world, ns, iif, Packet(src, dst, port, packet.proto), (kind, stop))
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
        policy,
    )
    out = Packet(new_src, dst, port, packet.proto)
    if stop is not None or chosen is None:
        return _Step(hop, out, None, stop or ("dropped", "no route"))
    next_ip = chosen.route.gateway or dst
    if chosen.route.ifname in DEVICE_NAMES:  # through the cross-subnet tunnel (tracetunnel.py)
        following = tunnel_next(world, next_ip, chosen.route.ifname)
    else:
        following = _neighbour(world, ns, chosen, next_ip)
    tunnel = tunnel_notes(world, ns, iif, chosen, following)
    if tunnel:
        hop = replace(hop, notes=(*hop.notes, *tunnel))
    if isinstance(following, str):
        end_kind, why = following.split(":", 1)
        if skipped:  # say why a packet for a peer's pod left the cluster instead
            why += f" (off-link peer: {skipped[0]})"
        return _Step(hop, out, None, (end_kind, why.strip()))
    return _Step(hop, out, following)


def _policy(
    world: World,
    ns: Namespace,
    iif: str | None,
    packet: Packet,
    looked: tuple[str, tuple[str, str] | None],
) -> tuple[PolicyCheck | None, tuple[str, str] | None]:
    """The node's policy table on a packet that came in (forward, or input when it is for the
    node), and the walk's end: dropped when the table drops it."""
    kind, stop = looked
    if ns.kind != "node" or iif is None or (stop is not None and kind != "local"):
        return None, stop
    check = policy_check(
        world,
        ns.name,
        local=kind == "local",
        packet=(packet.src, packet.dst, packet.proto, packet.port),
    )
    if check is not None and not check.allowed:
        return check, ("dropped", check.text.removeprefix("dropped: "))
    return check, stop


def _stop(
    ns: Namespace,
    iif: str | None,
    dst: IPAddress,
    looked: tuple[str, TableRoute | None, list[str]],
) -> tuple[str, str] | None:
    """Where the walk ends in this namespace, (end kind, why), or None: it goes on. `looked` is
    what lookup() found; its notes get why, where the route lookup did not say it."""
    kind, chosen, notes = looked
    version = dst.version
    if kind == "local":
        return ("delivered", f"{format_ip(dst)} is an address of {ns.label}")
    if chosen is None:
        why = f"no route to {format_ip(dst)} in {ns.label}"
        return ("dropped", why + (f" ({notes[-1]})" if notes else ""))
    if iif is not None and ns.kind == "pod":
        notes.append("a pod does not forward: the address is not its own")
        return ("dropped", f"{format_ip(dst)} is not an address of this pod")
    if iif is not None and version not in ns.forwarding:
        notes.append(f"{FORWARDING_SYSCTLS[version]} is not 1")
        return ("dropped", f"{ns.label} does not forward IPv{version}")
    return None


def lookup(ns: Namespace, dst: IPAddress) -> tuple[str, TableRoute | None, list[str]]:
    """The kernel's choice: local table, then longest prefix and lowest metric of the main one."""
    # The local table: the namespace's own addresses, and loopback (127.0.0.0/8 on lo, ::1), which
    # every namespace, a pod's too, holds and never sends anywhere.
    if dst.is_loopback or any(addr == dst for addr, _ in ns.local):
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
            and route.ifname not in DEVICE_NAMES  # a tunnel's gateway: onlink, or link-local
            and not _on_link(ns, gateway, route.ifname)
        ):
            why = "; kindnet needs every node on one link" if candidate.origin == "kindplan" else ""
            skipped.append(
                f"{route_listing(route)} cannot exist: gateway {format_ip(gateway)} is not "
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
    desired = route_listing(want.route) if want else want_kind
    observed = route_listing(chosen.route) if chosen else kind
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
                f"{chain} CNI-HOSTPORT-DNAT (hostPort of pod {pod_name(pod)})",
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
    """SNAT on the way out of a node: portmap's hairpin masquerade, then the node's masquerade
    (its value: the first rule that matches decides), whose hook takes only destinations that
    are not LOCAL (a routed packet's never is)."""
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
    found = next((m for m in ns.masq if m.version == version), None)
    if found is None or found.masq is None:
        return src, (), [f"no {_words(found).holder} (IPv{version}): nothing is masqueraded"]
    words = dialect(found.backend)
    if found.hooks == 0:
        return src, (), [f"no {words.words.hook} (IPv{version}): nothing is masqueraded"]
    notes = [f"rule not understood, taken as not matching: {rule}" for rule in found.unread]
    decided = found.masq.decide(dst)
    if decided is None:
        return src, (), [*notes, f"no rule of {words.words.rules} matched: source kept"]
    path, text = words.words.path, words.rule_text(decided)
    if decided.action == EXEMPT:
        return src, (Nat("return", path, text, format_ip(src), format_ip(src)),), notes
    if decided.action == MASQUERADE and out is not None:
        return out, (Nat("snat", path, text, format_ip(src), format_ip(out)),), notes
    notes.append(f"target MASQUERADE not followed: {text}")
    return src, (), notes


def _words(found: MasqObserved | None) -> MasqWords:
    """The words of the backend that holds the masquerade (of the node's default, if none)."""
    return dialect(found.backend if found is not None else "iptables").words


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
            return ("pod", pod_name(pod)), POD_IF
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
