"""IP addresses and networks: their types, a fast parser and formatter, and their sort order.

Parsing and formatting go through inet_pton/inet_ntop (C) rather than ipaddress's Python code:
a snapshot of 5,000 nodes is tens of thousands of them.
"""

from __future__ import annotations

import socket as _socket
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network


def net_order(net: IPNetwork) -> tuple[int, int, int]:
    """Sort key that puts IPv4 before IPv6 and orders networks numerically."""
    return (net.version, int(net.network_address), net.prefixlen)


def addr_order(addr: IPAddress) -> tuple[int, int]:
    return (addr.version, int(addr))


# Parsing through inet_pton is about 5 times faster than ipaddress's string parser, which matters
# at 5,000 nodes; anything unusual falls back to ipaddress, so both accept and refuse the same.
_FAMILIES = (
    (_socket.AF_INET, IPv4Address, IPv4Network),
    (_socket.AF_INET6, IPv6Address, IPv6Network),
)


def parse_ip(text: str) -> IPAddress:
    """An IPv4 or IPv6 address; ValueError if `text` is not one."""
    family, address_type, _ = _family_of(text)
    try:
        return address_type(int.from_bytes(_socket.inet_pton(family, text), "big"))
    except (OSError, TypeError):
        return ip_address(text)


def _family_of(text: str) -> tuple[int, type[IPAddress], type[IPNetwork]]:
    # Only IPv6 is written with colons: one inet_pton, not a failed one first (an exception
    # for each of 10,000 addresses).
    return _FAMILIES[1] if ":" in text else _FAMILIES[0]


def parse_cidr(text: str) -> IPNetwork:
    """A network in CIDR form; ValueError if malformed or if host bits are set."""
    address, slash, prefix = text.partition("/")
    if slash and prefix.isdigit() and prefix.isascii() and prefix[0] != "0":
        family, _, network_type = _family_of(address)
        try:
            packed = _socket.inet_pton(family, address)
        except (OSError, TypeError):
            packed = b""
        length = int(prefix)
        if packed and length <= len(packed) * 8:
            return network_type((int.from_bytes(packed, "big"), length), strict=True)
    return ip_network(text, strict=True)


def format_ip(addr: IPAddress) -> str:
    """str(addr), faster (inet_ntoa and inet_ntop in C: half the instructions for IPv4, and
    ipaddress compresses IPv6 hextets in Python).

    glibc and ipaddress agree on RFC 5952's form except where glibc writes a dotted IPv4 tail
    (::ffff:a.b.c.d); those fall back to ipaddress, so the output never depends on the platform.
    """
    # int() and to_bytes rather than .packed: one Python call a format, not two (30,000 of
    # them in a first apply through nexthop objects: the words, the journal, the objects').
    if isinstance(addr, IPv4Address):
        return _socket.inet_ntoa(int(addr).to_bytes(4, "big"))
    text = _socket.inet_ntop(_socket.AF_INET6, int(addr).to_bytes(16, "big"))
    return str(addr) if "." in text else text


def format_net(net: IPNetwork) -> str:
    return f"{format_ip(net.network_address)}/{net.prefixlen}"
