"""The cross-subnet VXLAN path as values: kindplan's device of each family, a peer's neighbour
entry (its tunnel address -> its tunnel MAC) and FDB entry (its tunnel MAC -> its InternalIP),
how each is derived from the snapshot alone, and how each reads (ip(8)/bridge(8) words, the
journal's JSON). Pure and a leaf: routes.py names the devices from here.

Everything a node needs to reach an off-link peer through the tunnel is a function of the peer's
InternalIP and PodCIDR (docs/design.md, "Nodes on several subnets"): no annotation, no control
plane. flannel's vxlan backend (DirectRouting) and Calico's VXLANCrossSubnet make the same split
between on-link peers (direct routes) and the others (encapsulated).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from ipaddress import IPv6Address
from typing import Any

from kindplan.core.addresses import IPAddress, IPNetwork, addr_order, format_ip, parse_ip
from kindplan.core.routes import DEVICE_NAMES, DEVICES

CROSS_SUBNET_MODES = ("none", "vxlan")
# The devices' names and how a route through one is written live in routes.py (a route's words
# need them, and routes.py is imported at every start-up, this module only where tunnels are).
VNI = 75  # kindplan's route protocol number; not flannel's 1 nor Calico's 4096
PORT = 4789  # IANA's VXLAN port (the kernel's default is 8472, flannel's)
# What kindplan writes in the device's alias (IFLA_IFALIAS): a device of that name without it is
# someone else's, and is never changed nor deleted.
MARKER = "kindplan: cross-subnet vxlan"
# Outer IPv4 (20) or IPv6 (40) header, UDP (8), VXLAN (8), inner Ethernet (14) bytes.
OVERHEAD = {4: 50, 6: 70}


def tunnel_mac(internal_ip: IPAddress) -> str:
    """The tunnel MAC of the node whose InternalIP this is: locally administered, unicast.

    IPv4: 0a:58 and the address's four bytes, as OVN-Kubernetes derives a pod's MAC (distinct
    for distinct addresses). IPv6: 0a and five bytes of the address's SHA-256 (the low bytes of
    nodes on several subnets may repeat: fd00:1::5, fd00:2::5); the compiler refuses a clash.
    """
    if internal_ip.version == 4:
        raw = b"\x0a\x58" + internal_ip.packed
    else:
        raw = b"\x0a" + hashlib.sha256(internal_ip.packed).digest()[:5]
    return raw.hex(":")


def tunnel_address(pod_cidr: IPNetwork) -> IPAddress:
    """A node's tunnel address in a family: its PodCIDR's network address (flannel's choice),
    which host-local never hands to a pod and which every peer routes already with the PodCIDR.
    It is the source of what the node itself sends through its device."""
    return pod_cidr.network_address


def tunnel_gateway(pod_cidr: IPNetwork, mac: str) -> IPAddress:
    """Where a node's peers route its PodCIDR through their device: IPv4, its tunnel address
    (written `onlink`: no prefix of the device holds it); IPv6, the link-local address of its
    tunnel MAC (EUI-64), on-link on any device: the kernel refuses an IPv6 `onlink` gateway
    that a route of another device covers, as the PodCIDR's direct route does while a peer
    moves off-link ("Nexthop has invalid gateway or device mismatch")."""
    if pod_cidr.version == 4:
        return pod_cidr.network_address
    raw = bytearray(bytes.fromhex(mac.replace(":", "")))
    raw[0] ^= 0x02  # EUI-64: the universal/local bit inverted, ff:fe in the middle
    eui = bytes(raw[:3]) + b"\xff\xfe" + bytes(raw[3:])
    return IPv6Address(b"\xfe\x80" + bytes(6) + eui)


@dataclass(frozen=True, slots=True)
class Vxlan:
    """kindplan's VXLAN device of one family, as desired or as observed."""

    name: str
    version: int
    local: IPAddress  # the node's InternalIP of the family: the outer source
    mac: str  # the node's tunnel MAC: what its peers' neighbour entries name
    mtu: int
    # The node's tunnel address (/32, /128): the source of what the node itself sends through
    # the device, which peers answer through theirs. () while the node has no PodCIDR here.
    addresses: tuple[IPAddress, ...] = ()
    vni: int = VNI
    port: int = PORT
    learning: bool = False
    up: bool = True
    alias: str = MARKER

    @property
    def owned(self) -> bool:
        return self.alias == MARKER

    @property
    def key(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class Neighbour:
    """A permanent neighbour entry on a tunnel device: a peer's tunnel address -> its MAC."""

    ifname: str
    address: IPAddress
    mac: str
    peer: str = ""  # the node it is for; words only, not compared

    @property
    def key(self) -> tuple[str, tuple[int, int]]:
        return (self.ifname, addr_order(self.address))

    def same(self, other: Neighbour) -> bool:
        return (self.ifname, self.address, self.mac) == (other.ifname, other.address, other.mac)


@dataclass(frozen=True, slots=True)
class FdbEntry:
    """A permanent FDB entry on a tunnel device: a peer's tunnel MAC -> its InternalIP."""

    ifname: str
    mac: str
    dst: IPAddress
    peer: str = ""  # words only, as Neighbour's

    @property
    def key(self) -> tuple[str, str]:
        return (self.ifname, self.mac)

    def same(self, other: FdbEntry) -> bool:
        return (self.ifname, self.mac, self.dst) == (other.ifname, other.mac, other.dst)


# -- how they read: ip(8) and bridge(8) words, the journal's JSON --------------------------------


def vxlan_text(v: Vxlan) -> str:
    addresses = "".join(f" address {format_ip(a)}/{a.max_prefixlen}" for a in v.addresses)
    learning = "learning" if v.learning else "nolearning"
    return (
        f"vxlan {v.name} id {v.vni} local {format_ip(v.local)} dstport {v.port} {learning} "
        f"mac {v.mac} mtu {v.mtu}{addresses}"
    )


def vxlan_commands(v: Vxlan) -> list[str]:
    """The device as `ip -batch` lines (render's routes.batch)."""
    learning = "learning" if v.learning else "nolearning"
    lines = [
        f"link add {v.name} address {v.mac} mtu {v.mtu} type vxlan id {v.vni} "
        f"local {format_ip(v.local)} dstport {v.port} {learning}",
        f'link set {v.name} alias "{v.alias}" up',
    ]
    flag = " nodad" if v.version == 6 else ""
    lines += [
        f"address replace {format_ip(a)}/{a.max_prefixlen} dev {v.name}{flag}" for a in v.addresses
    ]
    return lines


def neighbour_text(n: Neighbour) -> str:
    return f"{format_ip(n.address)} lladdr {n.mac} dev {n.ifname}"


def neighbour_command(n: Neighbour) -> str:
    return f"neigh replace {neighbour_text(n)} nud permanent"


def fdb_text(f: FdbEntry) -> str:
    return f"{f.mac} dev {f.ifname} dst {format_ip(f.dst)}"


def fdb_command(f: FdbEntry) -> str:
    """bridge(8)'s words (`bridge -batch`: ip(8) has no FDB command)."""
    return f"fdb replace {fdb_text(f)} self permanent"


def encode_vxlan(v: Vxlan) -> dict[str, Any]:
    return {
        "name": v.name,
        "version": v.version,
        "local": format_ip(v.local),
        "mac": v.mac,
        "mtu": v.mtu,
        "addresses": [format_ip(a) for a in v.addresses],
        "vni": v.vni,
        "port": v.port,
        "learning": v.learning,
        "up": v.up,
        "alias": v.alias,
    }


def decode_vxlan(d: dict[str, Any]) -> Vxlan:
    name, version = str(d["name"]), int(d["version"])
    if DEVICES.get(version) != name:
        raise ValueError(f"not a device of kindplan's: {name!r} (IPv{version})")
    return Vxlan(
        name,
        version,
        parse_ip(d["local"]),
        _mac(d["mac"]),
        int(d["mtu"]),
        tuple(parse_ip(a) for a in d["addresses"]),
        int(d["vni"]),
        int(d["port"]),
        bool(d["learning"]),
        bool(d["up"]),
        str(d["alias"]),
    )


def encode_neighbour(n: Neighbour) -> dict[str, Any]:
    return {"ifname": n.ifname, "address": format_ip(n.address), "mac": n.mac, "peer": n.peer}


def decode_neighbour(d: dict[str, Any]) -> Neighbour:
    return Neighbour(_device(d["ifname"]), parse_ip(d["address"]), _mac(d["mac"]), str(d["peer"]))


def encode_fdb(f: FdbEntry) -> dict[str, Any]:
    return {"ifname": f.ifname, "mac": f.mac, "dst": format_ip(f.dst), "peer": f.peer}


def decode_fdb(d: dict[str, Any]) -> FdbEntry:
    return FdbEntry(_device(d["ifname"]), _mac(d["mac"]), parse_ip(d["dst"]), str(d["peer"]))


def _device(name: object) -> str:
    """A journal names only kindplan's devices: an entry on any other is not one of its own."""
    if name not in DEVICE_NAMES:
        raise ValueError(f"not a device of kindplan's: {name!r}")
    return str(name)


def _mac(text: object) -> str:
    parts = str(text).split(":")
    if len(parts) != 6 or not all(len(p) == 2 and p.isascii() and p.isalnum() for p in parts):
        raise ValueError(f"not a MAC address: {text!r}")
    int("".join(parts), 16)  # ValueError if not hex
    return str(text).lower()
