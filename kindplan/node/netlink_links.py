"""rtnetlink link and address messages: the dump requests, what a dumped message says, and the
request that adds or deletes an address. Bytes in, values out (netlink.py sends and reads)."""

from __future__ import annotations

import socket
import struct

from kindplan.core.addresses import IPAddress
from kindplan.core.model import Link
from kindplan.node.netlink_codec import F_CREATE, F_EXCL, HEADER, U32, attr, attrs, ip_address, text

RTM_NEWLINK, RTM_GETLINK = 16, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
IFLA_IFNAME, IFLA_MTU, IFLA_LINKINFO, IFLA_INFO_KIND = 3, 4, 18, 1
IFA_ADDRESS, IFA_LOCAL = 1, 2  # on a point-to-point address IFA_ADDRESS is the peer
IFF_UP = 0x1
_FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}

_IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index

LINK_DUMP = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)  # the body of RTM_GETLINK: every link
ADDRESS_DUMP = _IFADDR.pack(socket.AF_UNSPEC, 0, 0, 0, 0)  # of RTM_GETADDR: every address

LinkFields = tuple[int, str, int, bool, str]  # index, name, mtu, up, kind


def parse_link(message: bytes) -> LinkFields:
    """(index, name, mtu, up, kind) of an RTM_NEWLINK; kind "veth", "bridge"..., "" for none."""
    _, _, index, flags, _ = _IFINFO.unpack_from(message, HEADER.size)
    found = dict(attrs(message, HEADER.size + _IFINFO.size))
    name = text(found.get(IFLA_IFNAME, b""))
    mtu = found.get(IFLA_MTU, b"")
    info = dict(attrs(found.get(IFLA_LINKINFO, b""), 0))
    kind = text(info.get(IFLA_INFO_KIND, b""))
    return index, name, U32.unpack(mtu)[0] if len(mtu) == 4 else 0, bool(flags & IFF_UP), kind


def parse_address(message: bytes) -> tuple[int, IPAddress, int] | None:
    """(link index, address, prefix length) of an RTM_NEWADDR (None: it names no address)."""
    _, prefixlen, _, _, index = _IFADDR.unpack_from(message, HEADER.size)
    found = dict(attrs(message, HEADER.size + _IFADDR.size))
    raw = found.get(IFA_LOCAL, found.get(IFA_ADDRESS))  # IPv6 has IFA_ADDRESS only
    return None if raw is None else (index, ip_address(raw), prefixlen)


def links_with_addresses(
    links: list[LinkFields], addresses: list[tuple[int, IPAddress, int]]
) -> tuple[Link, ...]:
    """The Links, each with its addresses, in name order."""
    by_index: dict[int, list[tuple[IPAddress, int]]] = {}
    for index, address, prefixlen in addresses:
        by_index.setdefault(index, []).append((address, prefixlen))
    found = [
        Link(
            name,
            index,
            mtu,
            up,
            tuple(sorted(by_index.get(index, []), key=lambda a: (a[0].version, int(a[0]), a[1]))),
            kind,
        )
        for index, name, mtu, up, kind in links
    ]
    return tuple(sorted(found, key=lambda link: link.name))


def address_request(
    verb: str, index: int, address: IPAddress, prefixlen: int
) -> tuple[int, int, bytes]:
    """(type, flags beyond F_REQUEST | F_ACK, body) of the request that adds ("add": fails if it
    exists) or deletes ("del") an address on link `index`."""
    packed = address.packed
    kind, flags = (RTM_NEWADDR, F_CREATE | F_EXCL) if verb == "add" else (RTM_DELADDR, 0)
    body = _IFADDR.pack(_FAMILY[address.version], prefixlen, 0, 0, index)
    body += attr(IFA_LOCAL, packed) + attr(IFA_ADDRESS, packed)  # as ip(8) sends it
    return kind, flags, body
