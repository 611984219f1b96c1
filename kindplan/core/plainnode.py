"""The snapshot check's common case: a node about which there is nothing to say.

snapshot.py checks every value and names the place of each problem (`nodes[12].podCIDRs[0]`);
building those names for 15,000 values of a 5,000-node snapshot costs about as much as the
checks. plain_node first tries a node without naming anything: if every value parses and every
check passes, that is the node; if anything would be a problem or a warning, it says None and
snapshot.py checks the node again the long way, so the messages and their places are the same.
The value checks both ways share live here too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from kindplan.core.addresses import IPAddress, IPNetwork, parse_cidr, parse_ip

T = TypeVar("T", bound="IPAddress | IPNetwork")


def plain_node(
    raw: dict[str, Any],
    owner_of_ip: dict[IPAddress, str],
    subnet_of: dict[int, IPNetwork],
    *,
    tolerant: bool,
) -> tuple[list[IPAddress], list[IPNetwork]] | None:
    """The InternalIPs and PodCIDRs of node `raw` if there is nothing to say about it (given the
    InternalIPs of the nodes before it and the cluster's pod subnets), else None.

    Each value's family is read off its text (only IPv6 is written with colons), not asked of
    the parsed object again and again: ipaddress's `version` is a Python call, 10 per node."""
    found = _plain_ips(raw["internalIPs"], owner_of_ip, subnet_of)
    if found is None:
        return None
    ips, ip_families = found
    cidrs = _plain_cidrs(raw["podCIDRs"], subnet_of, ip_families if ips else -1)
    if cidrs is None or (not tolerant and not (ips and cidrs)):
        return None
    return ips, cidrs


def _plain_ips(
    texts: list[str], owner_of_ip: dict[IPAddress, str], subnets: dict[int, IPNetwork]
) -> tuple[list[IPAddress], int] | None:
    """A node's InternalIPs if there is nothing to say about any of them (snapshot.py's _node_ips
    would say nothing), and their families (1 << version each); else None."""
    ips: list[IPAddress] = []
    families = 0
    for text in texts:
        if "%" in text:  # a zone index
            return None
        try:
            ip = parse_ip(text)
        except ValueError:
            return None
        version = 6 if ":" in text else 4
        if families & (1 << version):  # a second one of its family
            return None
        subnet = subnets.get(version)
        if _why_not(int(ip), version) or ip in owner_of_ip or (subnet is not None and ip in subnet):
            return None
        families |= 1 << version
        ips.append(ip)
    return ips, families


def _plain_cidrs(
    texts: list[str], subnets: dict[int, IPNetwork], ip_families: int
) -> list[IPNetwork] | None:
    """A node's PodCIDRs if each is one (snapshot.py's cidr would say nothing), no two are of one
    family, each lies in the pod subnet of its family with room for pods, and (unless
    `ip_families` is -1: no InternalIP) the node has an InternalIP of its family; else None."""
    cidrs: list[IPNetwork] = []
    families = 0
    for text in texts:
        address, _, prefix = text.partition("/")
        if "%" in address or not (prefix.isascii() and prefix.isdigit()):
            return None
        try:
            cidr = parse_cidr(text)
        except ValueError:
            return None
        version = 6 if ":" in address else 4
        bit = 1 << version
        subnet = subnets.get(version)
        if families & bit or not ip_families & bit or subnet is None:
            return None
        # Room for a gateway and a pod: a prefix at most 30 (IPv4) or 126 (IPv6) bits long.
        if not within(cidr, subnet) or cidr.prefixlen > (30 if version == 4 else 126):
            return None
        families |= bit
        cidrs.append(cidr)
    return cidrs


def within(inner: IPNetwork, outer: IPNetwork) -> bool:
    """inner is a subnet of outer (same family); cheaper than ipaddress's subnet_of."""
    return inner.prefixlen >= outer.prefixlen and inner.network_address in outer


def not_a_gateway(ip: IPAddress) -> str:
    """Why a node's InternalIP cannot be a route's gateway; "" if it can be one.

    By prefix on the integer: ipaddress's is_* properties cost microseconds each, and a
    snapshot holds 10,000 InternalIPs.
    """
    return _why_not(int(ip), ip.version)


def _why_not(n: int, version: int) -> str:
    """not_a_gateway of the address `n` of IP `version`."""
    if n == 0:
        return "unspecified"
    # Link-local: a gateway on one link only, and kindplan's routes name no link for it.
    if version == 4:
        if n == 0xFFFFFFFF:
            return "the broadcast address"
        return "link-local" if n >> 16 == 0xA9FE else _WRONG_V4.get(n >> 24, "")
    if n >> 120 == 0xFF:
        return "a multicast address"
    if n >> 118 == 0x3FA:  # fe80::/10
        return "link-local"
    return "a loopback address" if n == 1 else ""


# By first octet: IPv4 addresses no route goes through.
_WRONG_V4 = {127: "a loopback address", **dict.fromkeys(range(224, 240), "a multicast address")}


def by_family(values: Sequence[T]) -> tuple[T, ...]:
    """Addresses or networks, at most one per family, IPv4 first."""
    if len(values) == 2 and values[0].version > values[1].version:
        return (values[1], values[0])
    return tuple(values)
