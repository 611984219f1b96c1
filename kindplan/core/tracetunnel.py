"""The cross-subnet tunnel in a packet's walk (trace.py): which node a tunnel gateway leads to,
and what the hop says of the encapsulation and the decapsulation. Pure."""

from __future__ import annotations

from kindplan.core.addresses import IPAddress, format_ip
from kindplan.core.model import Node
from kindplan.core.routes import DEVICE_NAMES
from kindplan.core.traceworld import Namespace, TableRoute, World
from kindplan.core.tunnel import PORT, VNI, tunnel_gateway, tunnel_mac


def tunnel_peer(world: World, gateway: IPAddress) -> Node | None:
    """The node whose tunnel gateway (core/tunnel.py) `gateway` is."""
    v = gateway.version
    for node in world.snapshot.nodes:
        ip, cidr = node.internal_ip(v), node.pod_cidr(v)
        if ip is not None and cidr is not None and tunnel_gateway(cidr, tunnel_mac(ip)) == gateway:
            return node
    return None


def tunnel_notes(
    world: World,
    ns: Namespace,
    iif: str | None,
    chosen: TableRoute,
    following: tuple[tuple[str, str], str] | str,
) -> list[str]:
    """The decapsulation of a packet that came in on a tunnel device, and the encapsulation of
    one that leaves through it: VNI, UDP port, outer addresses, the uplink it crosses."""
    notes = []
    if iif in DEVICE_NAMES:
        notes.append(f"decapsulated: VXLAN VNI {VNI} from UDP port {PORT}, in on {iif}")
    if chosen.route.ifname in DEVICE_NAMES and not isinstance(following, str):
        here, peer = world.snapshot.node(ns.node), world.snapshot.node(following[0][1])
        v = chosen.route.dst.version
        outer_src = here.internal_ip(v) if here is not None else None
        outer_dst = peer.internal_ip(v) if peer is not None else None
        if outer_src is not None and outer_dst is not None:
            notes.append(
                f"encapsulated: VXLAN VNI {VNI}, outer {format_ip(outer_src)} -> "
                f"{format_ip(outer_dst)} UDP port {PORT}, out through {world.uplink.name}"
            )
    return notes


def tunnel_next(world: World, gateway: IPAddress, dev: str) -> tuple[tuple[str, str], str] | str:
    """Where a packet sent through tunnel device `dev` to `gateway` comes out: the peer node,
    in on its device of the same name (decapsulated), or 'dropped: why'."""
    peer = tunnel_peer(world, gateway)
    if peer is None:
        return f"dropped: no node's tunnel gateway is {format_ip(gateway)} on {dev}"
    return ("node", peer.name), dev
