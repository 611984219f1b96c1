"""compile_tunnels: which peers a node reaches through its VXLAN devices, and everything that path
needs (the devices, the peers' neighbour and FDB entries, their routes). Pure.

A peer is off-link in a family when the node knows its uplink's networks of that family
(HostFacts.networks: the uplink's prefixes on a node, --node-network for render) and the peer's
InternalIP is on none of them; knowing none, every peer is on-link, as before. With
`--cross-subnet none` nothing here is made (the engine warns about off-link peers, as before).
"""

from __future__ import annotations

from dataclasses import dataclass

from kindplan.core.addresses import IPAddress, IPNetwork
from kindplan.core.model import HostFacts, Node, Snapshot
from kindplan.core.routes import DEVICES, IPV6_DEFAULT_METRIC, MAIN_TABLE, Route
from kindplan.core.tunnel import (
    OVERHEAD,
    FdbEntry,
    Neighbour,
    Vxlan,
    tunnel_address,
    tunnel_gateway,
    tunnel_mac,
)
from kindplan.errors import InvalidInputError


@dataclass(frozen=True, slots=True)
class Tunnels:
    devices: tuple[Vxlan, ...] = ()
    neighbours: tuple[Neighbour, ...] = ()
    fdb: tuple[FdbEntry, ...] = ()
    routes: tuple[Route, ...] = ()  # the off-link peers' PodCIDRs via their tunnel addresses
    tunneled: frozenset[tuple[str, int]] = frozenset()  # (peer, family) routed through a device
    mtu: int = 0  # the pods' MTU: the uplink's less the encapsulation, if any peer needs it


def is_off_link(ip: IPAddress, networks: tuple[IPNetwork, ...]) -> bool:
    """On none of the node's networks of its family (knowing none of them: on-link)."""
    known = False
    for net in networks:
        if net.version == ip.version:
            if ip in net:
                return False
            known = True
    return known


def compile_tunnels(
    snapshot: Snapshot, node: Node, facts: HostFacts, proto: int, mode: str
) -> Tunnels:
    """The tunnel state of `node` under cross-subnet `mode` ("none": none at all)."""
    if mode != "vxlan":
        return Tunnels(mtu=facts.mtu)
    devices, neighbours, fdb, routes = [], [], [], []
    tunneled: set[tuple[str, int]] = set()
    mtu = facts.mtu
    for version in snapshot.families:
        local = node.internal_ip(version)
        if local is None:  # no outer source: this family's peers are routed directly
            continue
        name = DEVICES[version]
        own = node.pod_cidr(version)
        devices.append(
            Vxlan(
                name,
                version,
                local,
                tunnel_mac(local),
                facts.mtu - OVERHEAD[version],
                (tunnel_address(own),) if own is not None else (),
            )
        )
        macs = {tunnel_mac(local): node.name}
        metric = IPV6_DEFAULT_METRIC if version == 6 else 0
        for peer in snapshot.nodes:
            ip, cidr = peer.internal_ip(version), peer.pod_cidr(version)
            if peer.name == node.name or ip is None or cidr is None:
                continue
            if not is_off_link(ip, facts.networks):
                continue
            mac = tunnel_mac(ip)
            if macs.setdefault(mac, peer.name) != peer.name:
                raise InvalidInputError.one(
                    f"nodes {macs[mac]} and {peer.name}",
                    f"their IPv{version} InternalIPs give the same tunnel MAC {mac}",
                )
            gateway = tunnel_gateway(cidr, mac)
            neighbours.append(Neighbour(name, gateway, mac, peer.name))
            fdb.append(FdbEntry(name, mac, ip, peer.name))
            routes.append(
                Route(cidr, name, gateway, "universe", metric, proto, MAIN_TABLE, peer.name)
            )
            tunneled.add((peer.name, version))
            mtu = min(mtu, facts.mtu - OVERHEAD[version])
    return Tunnels(
        tuple(devices),
        tuple(sorted(neighbours, key=lambda n: n.key)),
        tuple(sorted(fdb, key=lambda f: f.key)),
        tuple(routes),
        frozenset(tunneled),
        mtu,
    )
