"""rtnetlink messages of the cross-subnet tunnel: a VXLAN link (IFLA_LINKINFO/IFLA_INFO_DATA), its
permanent neighbour entries (RTM_NEWNEIGH, NUD_PERMANENT) and FDB entries (AF_BRIDGE, NDA_DST),
the dump requests of each and what a dumped message says. Bytes in, values out (tunnels.py
sends and reads through netlink.py).
"""

from __future__ import annotations

import socket
import struct

from kindplan.core.addresses import IPAddress
from kindplan.core.tunnel import FdbEntry, Neighbour, Vxlan
from kindplan.node.netlink_codec import (
    F_CREATE,
    F_EXCL,
    F_REPLACE,
    HEADER,
    U32,
    attr,
    attrs,
    ip_address,
    text,
)

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR = 20, 21
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINKINFO, IFLA_IFALIAS = 1, 3, 4, 18, 20
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
IFLA_VXLAN_ID, IFLA_VXLAN_LOCAL, IFLA_VXLAN_LEARNING = 1, 4, 7
IFLA_VXLAN_PORT, IFLA_VXLAN_LOCAL6 = 15, 17
IFA_ADDRESS, IFA_LOCAL, IFA_F_NODAD = 1, 2, 0x02
NDA_DST, NDA_LLADDR, NDA_IFINDEX = 1, 2, 8
NUD_PERMANENT, NTF_SELF = 0x80, 0x02
IFF_UP = 0x1
AF_BRIDGE = 7
_FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}

_IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_NDMSG = struct.Struct("=BxxxiHBB")  # family, ifindex, state, flags, type
_U16_BE = struct.Struct("!H")
_ATTR = struct.Struct("=HH")

LINK_DUMP = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
Request = tuple[int, int, bytes]  # (message type, flags beyond F_REQUEST | F_ACK, body)


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def mac_text(raw: bytes) -> str:
    return raw.hex(":")


# -- the device ----------------------------------------------------------------------------------


def _info_data(v: Vxlan, *, create: bool) -> bytes:
    local = attr(IFLA_VXLAN_LOCAL if v.version == 4 else IFLA_VXLAN_LOCAL6, v.local.packed)
    data = attr(IFLA_VXLAN_ID, U32.pack(v.vni)) + local
    data += attr(IFLA_VXLAN_LEARNING, bytes([int(v.learning)]))
    if create:  # the kernel refuses to change the port of a device
        data += attr(IFLA_VXLAN_PORT, _U16_BE.pack(v.port))
    return attr(IFLA_INFO_KIND, b"vxlan\0") + attr(IFLA_INFO_DATA, data)


def link_create(v: Vxlan) -> Request:
    """Make the device, up, with its MAC and MTU (its alias and address follow: link_change,
    address_request)."""
    flags = IFF_UP if v.up else 0
    body = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, flags, IFF_UP)
    body += attr(IFLA_IFNAME, v.name.encode() + b"\0") + attr(IFLA_ADDRESS, mac_bytes(v.mac))
    body += attr(IFLA_MTU, U32.pack(v.mtu)) + attr(IFLA_LINKINFO, _info_data(v, create=True))
    return RTM_NEWLINK, F_CREATE | F_EXCL, body


def link_change(index: int, v: Vxlan) -> list[Request]:
    """Set what may differ on the device at `index`: up, MAC, MTU and alias (the generic link
    attributes), then local and learning (the VXLAN ones: a request that carries the VXLAN
    attributes may not carry IFLA_MTU, "Cannot change mtu")."""
    flags = IFF_UP if v.up else 0
    body = _IFINFO.pack(socket.AF_UNSPEC, 0, index, flags, IFF_UP)
    body += attr(IFLA_ADDRESS, mac_bytes(v.mac)) + attr(IFLA_MTU, U32.pack(v.mtu))
    body += attr(IFLA_IFALIAS, v.alias.encode() + b"\0")
    info = _IFINFO.pack(socket.AF_UNSPEC, 0, index, 0, 0)
    info += attr(IFLA_LINKINFO, _info_data(v, create=False))
    return [(RTM_NEWLINK, 0, body), (RTM_NEWLINK, 0, info)]


def link_delete(index: int) -> Request:
    return RTM_DELLINK, 0, _IFINFO.pack(socket.AF_UNSPEC, 0, index, 0, 0)


def address_request(verb: str, index: int, address: IPAddress) -> Request:
    """Add or delete the device's tunnel address (/32, /128; IPv6 without duplicate address
    detection: a permanent neighbour entry answers for it, never neighbour discovery)."""
    packed = address.packed
    kind, flags = (RTM_NEWADDR, F_CREATE | F_EXCL) if verb == "add" else (RTM_DELADDR, 0)
    nodad = IFA_F_NODAD if address.version == 6 else 0
    body = _IFADDR.pack(_FAMILY[address.version], address.max_prefixlen, nodad, 0, index)
    return kind, flags, body + attr(IFA_LOCAL, packed) + attr(IFA_ADDRESS, packed)


def parse_vxlan(message: bytes, version: int, addresses: tuple[IPAddress, ...]) -> Vxlan:
    """The device a link message describes (`version`: the family its name says). A device of
    another kind, or without kindplan's alias, reads as not owned."""
    _, _, _, flags, _ = _IFINFO.unpack_from(message, HEADER.size)
    found = dict(attrs(message, HEADER.size + _IFINFO.size))
    info = dict(attrs(found.get(IFLA_LINKINFO, b""), 0))
    data = dict(attrs(info.get(IFLA_INFO_DATA, b""), 0))
    mtu = found.get(IFLA_MTU, b"")
    raw_local = data.get(IFLA_VXLAN_LOCAL6 if version == 6 else IFLA_VXLAN_LOCAL)
    alias = text(found.get(IFLA_IFALIAS, b""))
    if text(info.get(IFLA_INFO_KIND, b"")) != "vxlan":
        alias = ""  # not a VXLAN device: whatever its alias says, not kindplan's
    vni, port = data.get(IFLA_VXLAN_ID, b""), data.get(IFLA_VXLAN_PORT, b"")
    return Vxlan(
        name=text(found.get(IFLA_IFNAME, b"")),
        version=version,
        local=ip_address(raw_local) if raw_local else ip_address(bytes(4 if version == 4 else 16)),
        mac=mac_text(found.get(IFLA_ADDRESS, b"")),
        mtu=U32.unpack(mtu)[0] if len(mtu) == 4 else 0,
        addresses=addresses,
        vni=U32.unpack(vni)[0] if len(vni) == 4 else 0,
        port=_U16_BE.unpack(port)[0] if len(port) == 2 else 0,
        learning=data.get(IFLA_VXLAN_LEARNING, b"\0") != b"\0",
        up=bool(flags & IFF_UP),
        alias=alias,
    )


def link_name(message: bytes) -> tuple[int, str]:
    """(index, name) of a link message."""
    _, _, index, _, _ = _IFINFO.unpack_from(message, HEADER.size)
    found = dict(attrs(message, HEADER.size + _IFINFO.size))
    return index, text(found.get(IFLA_IFNAME, b""))


# -- neighbour and FDB entries -------------------------------------------------------------------


def neighbour_dump(version: int, index: int) -> bytes:
    """The body of RTM_GETNEIGH for the entries of one family on link `index` (strict checking:
    the kernel filters by NDA_IFINDEX)."""
    return _NDMSG.pack(_FAMILY[version], 0, 0, 0, 0) + attr(NDA_IFINDEX, U32.pack(index))


def fdb_dump(index: int) -> bytes:
    """The body of RTM_GETNEIGH (AF_BRIDGE) for the FDB of link `index` (ndm_ifindex filters)."""
    return _NDMSG.pack(AF_BRIDGE, index, 0, 0, 0)


def _entry(message: bytes) -> tuple[int, int, int, dict[int, bytes]]:
    """(family, link index, state, attributes) of a neighbour or FDB message: the attributes
    walked in one plain loop (a dump of 5,000 entries is read on every observation)."""
    family, index, state, _, _ = _NDMSG.unpack_from(message, HEADER.size)
    found: dict[int, bytes] = {}
    at, end, unpack = HEADER.size + _NDMSG.size, len(message), _ATTR.unpack_from
    while at + 4 <= end:
        length, kind = unpack(message, at)
        if length < 4 or at + length > end:
            break
        found[kind & 0x3FFF] = message[at + 4 : at + length]
        at += (length + 3) & ~3
    return family, index, state, found


def parse_neighbour(message: bytes, index: int, ifname: str) -> Neighbour | None:
    """A permanent neighbour entry on link `index`, or None (another link, not permanent)."""
    _, at, state, found = _entry(message)
    dst, lladdr = found.get(NDA_DST), found.get(NDA_LLADDR)
    if at != index or not state & NUD_PERMANENT or not dst or not lladdr:
        return None
    return Neighbour(ifname, ip_address(dst), mac_text(lladdr))


def parse_fdb(message: bytes, index: int, ifname: str) -> FdbEntry | None:
    """An FDB entry of the device with a remote (NDA_DST), or None (the device's own addresses,
    which the kernel lists in the same dump without one)."""
    family, at, _, found = _entry(message)
    dst, lladdr = found.get(NDA_DST), found.get(NDA_LLADDR)
    if family != AF_BRIDGE or at != index or not dst or not lladdr:
        return None
    return FdbEntry(ifname, mac_text(lladdr), ip_address(dst))


def neighbour_request(verb: str, index: int, n: Neighbour) -> Request:
    """Write (create or replace, permanent) or delete a neighbour entry on link `index`."""
    family = _FAMILY[n.address.version]
    if verb == "del":
        body = _NDMSG.pack(family, index, 0, 0, 0) + attr(NDA_DST, n.address.packed)
        return RTM_DELNEIGH, 0, body
    body = _NDMSG.pack(family, index, NUD_PERMANENT, 0, 0)
    body += attr(NDA_DST, n.address.packed) + attr(NDA_LLADDR, mac_bytes(n.mac))
    return RTM_NEWNEIGH, F_CREATE | F_REPLACE, body


def fdb_request(verb: str, index: int, f: FdbEntry) -> Request:
    """Write (create or replace, permanent) or delete an FDB entry of the device at `index`."""
    state = 0 if verb == "del" else NUD_PERMANENT
    body = _NDMSG.pack(AF_BRIDGE, index, state, NTF_SELF, 0)
    body += attr(NDA_LLADDR, mac_bytes(f.mac)) + attr(NDA_DST, f.dst.packed)
    if verb == "del":
        return RTM_DELNEIGH, 0, body
    return RTM_NEWNEIGH, F_CREATE | F_REPLACE, body
