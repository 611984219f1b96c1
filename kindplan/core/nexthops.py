"""Nexthop objects (Linux 5.3+): what one is, the id kindplan gives each peer's, and which families
route their peers through them (--route-style). Pure.

Why: IPv4's fib_info de-duplication hash leaves the gateway out, so 5,000 peer routes with 5,000
gateways share one bucket and each insert scans the earlier ones (quadratic system time,
bench/fibinfo.py). A route `PodCIDR nhid N` keeps its gateway in the object `id N via IP dev
UPLINK` instead, found by id, and inserts in constant time. IPv6's routes have no such scan:
there a nexthop object only adds a message per peer.

The id of a peer's object is derived, not allocated, so that a converged node needs no writes
and every node gives a peer the same id: kindplan's route protocol in the top byte (each
instance of kindplan its own 2^24 ids), the family in the next bit, then the index of the peer's
PodCIDR in the cluster's pod subnet of that family (10.244.3.0/24 in 10.244.0.0/16: 3). A peer
whose PodCIDR has no such index (outside the subnet, or an index past 2^23) gets a plain route.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from kindplan.core.addresses import IPAddress, IPNetwork, format_ip, parse_ip

ROUTE_STYLES = ("plain", "nexthop", "auto")
DEFAULT_ROUTE_STYLE = "auto"
# auto: IPv4 peer routes go through nexthop objects from this many IPv4 peers on, when the kernel
# has them. Below it the scan costs a few milliseconds (bench/fibinfo.py: 1,000 routes 45 ms
# plain, 37 ms through objects) and `ip route` reads as the plain kindnet tables; IPv6 stays
# plain (no scan: 5,000 routes 99 ms plain, more through objects, which double the messages).
AUTO_MIN_PEERS = 1000
_INDEX_BITS = 23  # per family: the index of a PodCIDR in its pod subnet
ID_SPAN = 1 << _INDEX_BITS  # the ids of one family


class Nexthop(NamedTuple):
    """A nexthop object: `id ID via GATEWAY dev IFNAME proto PROTO`. kindplan makes only such
    single-path ones; an observed group, blackhole or FDB object says so in `other` (never
    kindplan's to change, whatever its protocol)."""

    id: int
    version: int  # the family of its gateway (the object's)
    gateway: IPAddress | None
    ifname: str
    proto: int
    peer: str = ""  # the node it leads to; not identity, not read back from the kernel
    other: str = ""  # "" for a gateway object; else what it is ("group 1/2", "blackhole", "fdb")

    def owned_by(self, proto: int) -> bool:
        """kindplan's to replace or delete: its protocol, and of the kind kindplan makes."""
        return self.proto == proto and not self.other

    def same(self, other: Nexthop) -> bool:
        """Does `other` (observed) hold what this one (desired) says?"""
        return self[:5] == other[:5] and not other.other


def nexthop_id(proto: int, version: int, index: int) -> int:
    """The id kindplan gives the object of the peer whose PodCIDR has `index` in its subnet."""
    return proto << 24 | (1 << _INDEX_BITS if version == 6 else 0) | index


def cidr_index(cidr: IPNetwork, subnets: tuple[IPNetwork, ...]) -> int | None:
    """The index of `cidr` among the PodCIDRs of its size in the pod subnet of its family, or
    None (outside it, or an index past the id's bits)."""
    subnet = next((s for s in subnets if s.version == cidr.version), None)
    if subnet is None or cidr.prefixlen < subnet.prefixlen:
        return None
    if cidr.network_address not in subnet:
        return None
    shift = cidr.max_prefixlen - cidr.prefixlen
    index = (int(cidr.network_address) - int(subnet.network_address)) >> shift
    return index if index < ID_SPAN else None


def nexthop_families(style: str, peers: dict[int, int], supported: bool) -> tuple[int, ...]:
    """The families whose peer routes go through nexthop objects: `style` (plain, nexthop, auto)
    given how many peers of each family the node routes and whether the kernel has nexthop
    objects. `nexthop` on a kernel without them is the caller's error to raise.

    >>> nexthop_families("auto", {4: 1000, 6: 1000}, True), nexthop_families("auto", {4: 999}, True)
    ((4,), ())
    """
    if style == "plain" or not supported:
        return ()
    if style == "nexthop":
        return (4, 6)
    return (4,) if peers.get(4, 0) >= AUTO_MIN_PEERS else ()


def nexthop_command(nexthop: Nexthop) -> str:
    """`nexthop replace id N via GW dev DEV proto P`, as ip(8) takes it."""
    return f"nexthop replace {nexthop_text(nexthop)}"


def nexthop_text(nexthop: Nexthop) -> str:
    """An object in ip(8)'s words (`ip nexthop` shows it so, protocol by number)."""
    if nexthop.other:
        return f"id {nexthop.id} {nexthop.other} proto {nexthop.proto}"
    via = f"via {format_ip(nexthop.gateway)} " if nexthop.gateway is not None else ""
    return f"id {nexthop.id} {via}dev {nexthop.ifname} proto {nexthop.proto}"


def encode_nexthop(nexthop: Nexthop) -> dict[str, Any]:
    """An object as the journal writes it (schemas/journal.schema.json)."""
    return {
        "id": nexthop.id,
        "version": nexthop.version,
        "gateway": format_ip(nexthop.gateway) if nexthop.gateway is not None else None,
        "ifname": nexthop.ifname,
        "proto": nexthop.proto,
        "peer": nexthop.peer,
    }


def decode_nexthop(d: dict[str, Any]) -> Nexthop:
    """The object `encode_nexthop` wrote as `d`."""
    version = int(d["version"])
    if version not in (4, 6):
        raise ValueError(f"nexthop family {version!r}")
    gateway = parse_ip(d["gateway"]) if d["gateway"] is not None else None
    if gateway is not None and gateway.version != version:
        raise ValueError(f"nexthop gateway {gateway} is not IPv{version}")
    ident = int(d["id"])
    if not 0 < ident < 1 << 32:
        raise ValueError(f"nexthop id {ident}")
    return Nexthop(ident, version, gateway, str(d["ifname"]), int(d["proto"]), str(d["peer"]))
