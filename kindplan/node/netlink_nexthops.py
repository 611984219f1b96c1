"""rtnetlink nexthop objects (RTM_NEWNEXTHOP and kin, Linux 5.3+): the request of each write,
the dump request, and the Nexthop a dumped message describes. Bytes in, values out (netlink.py
sends and reads). A write to an object goes in the same batches as the route writes around it
(write_message chooses the encoder), so that an object is in the kernel before the routes that
use it and a plan's thousands of objects cost no more round trips than its routes.
"""

from __future__ import annotations

import hashlib
import socket
import struct
from typing import NamedTuple

from kindplan.core.nexthops import Nexthop
from kindplan.node.netlink_codec import (
    F_CREATE,
    F_EXCL,
    F_REPLACE,
    F_REQUEST,
    HEADER,
    U32,
    attr,
    attrs,
    ip_address,
)
from kindplan.node.netlink_routes import RTM_NEWROUTE, RTN_UNICAST, RouteWrite, route_message

RTM_NEWNEXTHOP, RTM_DELNEXTHOP, RTM_GETNEXTHOP = 104, 105, 106
NHA_ID, NHA_GROUP, NHA_BLACKHOLE, NHA_OIF, NHA_GATEWAY, NHA_FDB = 1, 2, 4, 5, 6, 11
_NHMSG = struct.Struct("=BBBBI")  # struct nhmsg: family, scope, protocol, reserved, flags
_FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}
_VERSION = {socket.AF_INET: 4, socket.AF_INET6: 6}
NEXTHOP_DUMP = _NHMSG.pack(0, 0, 0, 0, 0)  # every object, both families


class NexthopWrite(NamedTuple):
    """One write of a nexthop object: "add" (fails if the id is taken), "replace" or "del"."""

    verb: str
    nexthop: Nexthop
    ifindex: int  # its device (0 for a delete, which names only the id)


# One struct per message kind, as the route writes have (netlink_routes._REQUESTS): a first
# apply in the nexthop style writes 5,000 objects and 5,000 routes through them.
_NEW_NEXTHOP = {
    size: struct.Struct(f"=IHHII BBBBI HHI HHI HH{size}s".replace(" ", "")) for size in (4, 16)
}
_DEL_NEXTHOP = struct.Struct("=IHHII BBBBI HHI".replace(" ", ""))
# A route through an object: rtmsg, RTA_TABLE, RTA_DST, RTA_PRIORITY, RTA_NH_ID.
_NHID_ROUTE = {
    size: struct.Struct(f"=IHHII BBBBBBBBI HHI HH{size}s HHI HHI".replace(" ", ""))
    for size in (4, 16)
}
RTA_DST, RTA_PRIORITY, RTA_TABLE, RTA_NH_ID = 1, 6, 15, 30


def nexthop_message(write: NexthopWrite, seq: int) -> bytes:
    """The whole netlink message for one object write, with sequence number `seq`."""
    nexthop = write.nexthop
    if write.verb == "del":
        fields = (_DEL_NEXTHOP.size, RTM_DELNEXTHOP, F_REQUEST, seq, 0, 0, 0, 0, 0, 0)
        return _DEL_NEXTHOP.pack(*fields, 8, NHA_ID, nexthop.id)
    flags = F_REQUEST | F_CREATE | (F_REPLACE if write.verb == "replace" else F_EXCL)
    if nexthop.gateway is None:  # never kindplan's own: a device-only object
        body = _NHMSG.pack(_FAMILY[nexthop.version], 0, nexthop.proto, 0, 0)
        body += attr(NHA_ID, U32.pack(nexthop.id)) + attr(NHA_OIF, U32.pack(write.ifindex))
        return HEADER.pack(HEADER.size + len(body), RTM_NEWNEXTHOP, flags, seq, 0) + body
    gateway = nexthop.gateway.packed
    layout = _NEW_NEXTHOP[len(gateway)]
    return layout.pack(
        *(layout.size, RTM_NEWNEXTHOP, flags, seq, 0),
        *(_FAMILY[nexthop.version], 0, nexthop.proto, 0, 0),
        *(8, NHA_ID, nexthop.id, 8, NHA_OIF, write.ifindex, 4 + len(gateway), NHA_GATEWAY),
        gateway,
    )


def write_message(write: RouteWrite | NexthopWrite, seq: int) -> bytes:
    """The message of a route or an object write."""
    if type(write) is RouteWrite:  # the common case first, without isinstance's protocol
        special = write.route.special
        if (
            special is not None
            and write.verb != "del"
            and not write.raw  # a foreign route put back as the kernel had it: route_message
            and special == (*_UNICAST, special[3], None)
        ):
            return _nhid_route_message(write, seq)
        return route_message(write, seq)
    assert isinstance(write, NexthopWrite)
    return nexthop_message(write, seq)


# The RouteSpecial of a route through an object, but its id (and no source prefix after it).
_UNICAST = ("unicast", 0, ())


def _nhid_route_message(write: RouteWrite, seq: int) -> bytes:
    """A route through one nexthop object (`PodCIDR nhid N`): no gateway nor device of its own,
    the object says them."""
    route = write.route
    dst = route.dst.network_address.packed
    layout = _NHID_ROUTE[len(dst)]
    flags = F_REQUEST | F_CREATE | (F_REPLACE if write.verb == "replace" else F_EXCL)
    table = route.table if route.table < 256 else 252  # RT_TABLE_COMPAT; RTA_TABLE says which
    family = socket.AF_INET if len(dst) == 4 else socket.AF_INET6
    return layout.pack(
        *(layout.size, RTM_NEWROUTE, flags, seq, 0),
        *(family, route.dst.prefixlen, 0, 0, table, route.proto, 0, RTN_UNICAST, 0),
        *(8, RTA_TABLE, route.table, 4 + len(dst), RTA_DST, dst, 8, RTA_PRIORITY, route.metric),
        *(8, RTA_NH_ID, route.nh_id),
    )


# The layout the kernel dumps a gateway object in (nh_fill_node: NHA_ID, NHA_OIF, NHA_GATEWAY),
# by message length: taken apart by one unpack, its attribute headers checked, as route messages
# are (netlink_routes._route_fields); any other layout is walked attribute by attribute.
_GATEWAY_OBJECT = {  # message length -> (its struct past the header, the family it needs)
    HEADER.size + _NHMSG.size + 8 + 8 + 4 + size: (
        struct.Struct(f"=BBBBI HHI HHI HH{size}s".replace(" ", "")),
        socket.AF_INET if size == 4 else socket.AF_INET6,
    )
    for size in (4, 16)
}


def parse_nexthop(message: bytes, names: dict[int, str]) -> Nexthop | None:
    """The object of one dumped RTM_NEWNEXTHOP (None for a message that has no id)."""
    layout = _GATEWAY_OBJECT.get(len(message))
    if layout is not None:
        fields = layout[0].unpack_from(message, HEADER.size)
        family, _, proto, _, _, id_head, ident, oif_head, oif, gateway_head, gateway = (
            *fields[:5],
            fields[5:7],
            fields[7],
            fields[8:10],
            fields[10],
            fields[11:13],
            fields[13],
        )
        if (family, id_head, oif_head, gateway_head) == (
            layout[1],
            (8, NHA_ID),
            (8, NHA_OIF),
            (len(message) - 40, NHA_GATEWAY),
        ):
            version = _VERSION[family]
            return Nexthop(ident, version, ip_address(gateway), names.get(oif, ""), proto)
    return _walk_nexthop(message, names)


def _walk_nexthop(message: bytes, names: dict[int, str]) -> Nexthop | None:
    """parse_nexthop for any layout: attribute by attribute."""
    family, _, proto, _, _ = _NHMSG.unpack_from(message, HEADER.size)
    found = dict(attrs(message, HEADER.size + _NHMSG.size))
    if NHA_ID not in found:
        return None
    ident = U32.unpack(found[NHA_ID][:4])[0]
    other = ""
    if NHA_GROUP in found:
        members = struct.iter_unpack("=IBBH", found[NHA_GROUP])  # struct nexthop_grp
        other = "group " + "/".join(str(m[0]) for m in members)
    elif NHA_BLACKHOLE in found:
        other = "blackhole"
    elif NHA_FDB in found:
        other = "fdb"
    gateway = ip_address(found[NHA_GATEWAY]) if NHA_GATEWAY in found else None
    oif = U32.unpack(found[NHA_OIF][:4])[0] if NHA_OIF in found else 0
    version = _VERSION.get(family, gateway.version if gateway is not None else 4)
    return Nexthop(ident, version, gateway, names.get(oif, ""), proto, other=other)


class NexthopMemo:
    """The Nexthop of each message of the last dump, by its content, for the link names it was
    parsed with (as RouteMemo for routes: a converged node's watch round dumps 5,000 objects
    that are all the same as in the round before)."""

    def __init__(self) -> None:
        self._parsed: dict[bytes, Nexthop | None] = {}
        self._names: dict[int, str] = {}

    def nexthops(self, answers: list[tuple[int, bytes]], names: dict[int, str]) -> list[Nexthop]:
        """The objects among the answers of a nexthop dump, in their order."""
        if names != self._names:
            self._parsed, self._names = {}, dict(names)
        known, parsed, found = self._parsed, {}, []
        for kind, message in answers:
            if kind != RTM_NEWNEXTHOP:
                continue
            content = message[HEADER.size :]
            nexthop = known[content] if content in known else parse_nexthop(message, names)
            parsed[content] = nexthop
            if nexthop is not None:
                found.append(nexthop)
        self._parsed = parsed
        return found


def nexthop_digest(answers: list[tuple[int, bytes]]) -> bytes:
    """A digest of the answers of a nexthop dump (their bodies: not the sequence numbers)."""
    h = hashlib.sha256()
    for _, message in answers:
        h.update(message[4:6] + message[HEADER.size :])
    return h.digest()
