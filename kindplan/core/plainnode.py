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
    InternalIPs of the nodes before it and the cluster's pod subnets), else None."""
    ips = _plain_ips(raw["internalIPs"], owner_of_ip, subnet_of)
    cidrs = _plain_cidrs(raw["podCIDRs"])
    if ips is None or cidrs is None or (not tolerant and not (ips and cidrs)):
        return None
    for cidr in cidrs:
        subnet = subnet_of.get(cidr.version)
        if subnet is None or not within(cidr, subnet) or cidr.prefixlen > cidr.max_prefixlen - 2:
            return None
        if ips and not any(ip.version == cidr.version for ip in ips):
            return None
    return ips, cidrs


def _plain_ips(
    texts: list[str], owner_of_ip: dict[IPAddress, str], subnets: dict[int, IPNetwork]
) -> list[IPAddress] | None:
    """A node's InternalIPs if there is nothing to say about any of them (snapshot.py's _node_ips
    would say nothing), else None."""
    ips: list[IPAddress] = []
    for text in texts:
        if "%" in text:  # a zone index
            return None
        try:
            ip = parse_ip(text)
        except ValueError:
            return None
        subnet = subnets.get(ip.version)
        if not_a_gateway(ip) or ip in owner_of_ip or (subnet is not None and ip in subnet):
            return None
        if any(other.version == ip.version for other in ips):  # a second one of its family
            return None
        ips.append(ip)
    return ips


def _plain_cidrs(texts: list[str]) -> list[IPNetwork] | None:
    """A node's PodCIDRs if each is one (snapshot.py's cidr would say nothing) and no two are of one
    family, else None."""
    cidrs: list[IPNetwork] = []
    for text in texts:
        address, _, prefix = text.partition("/")
        if "%" in address or not (prefix.isascii() and prefix.isdigit()):
            return None
        try:
            cidr = parse_cidr(text)
        except ValueError:
            return None
        if any(other.version == cidr.version for other in cidrs):
            return None
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
    n = int(ip)
    if n == 0:
        return "unspecified"
    # Link-local: a gateway on one link only, and kindplan's routes name no link for it.
    if ip.version == 4:
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
