"""rtnetlink route messages: the request for each route write, the dump request of a table, and
the Route a dumped message describes, with the memo and the layouts that make a converged
node's dump cheap to read again. Bytes in, values out (netlink.py sends and reads).

Writing 5,000 routes through pyroute2 (0.9.7, IPRoute().route per route) took about 2.6 s here,
some 0.5 ms of Python per route, and dumping them about 0.4 s; here a route is one struct.pack or
unpack.
"""

from __future__ import annotations

import hashlib
import operator
import socket
import struct
from collections.abc import Callable
from ipaddress import IPv4Network, IPv6Network
from typing import Any, NamedTuple

from kindplan.core.addresses import IPAddress, IPNetwork
from kindplan.core.routes import NextHop, Route, RouteSpecial
from kindplan.node.netlink_codec import (
    ATTR,
    F_CREATE,
    F_EXCL,
    F_REPLACE,
    F_REQUEST,
    HEADER,
    U32,
    attr,
    attr_spans,
    attrs,
    ip_address,
    request,
)

RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTA_DST, RTA_SRC, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_TABLE = 1, 2, 4, 5, 6, 15
RTA_MULTIPATH, RTA_CACHEINFO, RTA_VIA, RTA_NH_ID = 9, 12, 18, 30
RTN_UNICAST = 1
RTNH_F_ONLINK = 4
# The route types of the main table that decide where traffic to a destination goes (local,
# broadcast and the like live in the local table).
RTN_KINDS = {1: "unicast", 6: "blackhole", 7: "unreachable", 8: "prohibit", 9: "throw"}
RTN_NUMBERS = {name: number for number, name in RTN_KINDS.items()}
SCOPES = {0: "universe", 200: "site", 253: "link", 254: "host", 255: "nowhere"}
SCOPE_NUMBERS = {name: number for number, name in SCOPES.items()}

_RTMSG = struct.Struct(
    "=BBBBBBBBI"
)  # family, dst_len, src_len, tos, table, proto, scope, type, flags
_FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}


class RouteWrite(NamedTuple):
    """One route write (a named tuple: 10,000 of them are made per full apply, and a frozen
    dataclass costs several times more to construct)."""

    verb: str  # "add" (fails if the key exists), "replace", "del"
    route: Route
    ifindex: int  # the route's interface (0 for a delete, which matches by key)
    nexthop_indexes: tuple[int, ...] = ()  # the interface of each of the route's nexthops
    # RTNH_F_ONLINK: the gateway is on the device though no prefix of it says so (a peer's
    # tunnel address on kindplan's VXLAN device, which only its neighbour entry places there).
    onlink: bool = False
    raw: bytes = b""  # the kernel's own body of a foreign route to put back (netlink_rawroute)


def dump_request(family: int, table: int) -> bytes:
    """The body of RTM_GETROUTE for the routes of `table` in `family` (the kernel filters by
    table: the socket asks for strict checking)."""
    return _RTMSG.pack(family, 0, 0, 0, table & 0xFF, 0, 0, 0, 0) + attr(RTA_TABLE, U32.pack(table))


class RouteMemo:
    """What the dumps of one socket taught: the Route of each message of the last dump, by its
    content, for the link names it was parsed with (a converged node answers every dump with
    the same messages; one a dump lacks is forgotten), and the layouts of route messages by
    their length (_route_fields)."""

    def __init__(self) -> None:
        self._parsed: dict[bytes, Route | None] = {}
        self._names: dict[int, str] = {}
        self._layouts: dict[int, Layout] = {}

    def routes(
        self, answers: list[tuple[int, bytes]], table: int, names: dict[int, str]
    ) -> list[Route]:
        """The routes of `table` among the answers of route dumps, in their order."""
        found = []
        if names != self._names:
            self._parsed, self._names = {}, dict(names)
        known, parsed, layouts = self._parsed, {}, self._layouts
        for kind, message in answers:
            content = route_content(message)
            if content in known:
                route = known[content]
            else:
                route = _parse_route(kind, message, table, names, layouts)
            parsed[content] = route
            if route is not None:
                found.append(route)
        self._parsed = parsed
        return found

    def bodies(self, answers: list[tuple[int, bytes]], wanted: set[Route]) -> dict[Route, bytes]:
        """The body (all but the netlink header) of each message among the answers of the last
        dump whose route is one of `wanted`."""
        found = {}
        for _, message in answers:
            route = self._parsed.get(route_content(message))
            if route is not None and route in wanted:
                found[route] = message[HEADER.size :]
        return found


_MESSAGE = operator.itemgetter(1)  # the message of a dump's (type, message)


def route_digest(answers: list[tuple[int, bytes]]) -> bytes:
    """A digest of the answers of route dumps (no parse; the converged fast path: equal bytes
    parse to equal routes for equal link names)."""
    # One update of the joined contents: the same digest as one per message, a Python step less.
    return hashlib.sha256(b"".join(map(route_content, map(_MESSAGE, answers)))).digest()


def _request_struct(size: int, delete: bool, gateway: bool) -> struct.Struct:
    """A whole route request in one struct: header, rtmsg, then RTA_TABLE, RTA_DST and
    RTA_PRIORITY (and RTA_OIF, RTA_GATEWAY for a write), for addresses of `size` bytes."""
    fmt = "=IHHII" + "BBBBBBBBI" + "HHI" + f"HH{size}s" + "HHI"
    if not delete:
        fmt += "HHI" + (f"HH{size}s" if gateway else "")
    return struct.Struct(fmt)


# One pack per route instead of one per attribute: 10,000 requests are built in about half the
# time (their Python is a tenth of a full apply's writes; the kernel's work is the rest).
_REQUESTS = {
    (size, delete, gateway): _request_struct(size, delete, gateway)
    for size in (4, 16)
    for delete in (False, True)
    for gateway in (False, True)
}


def route_message(write: RouteWrite, seq: int) -> bytes:
    """The whole netlink message for one route write, with sequence number `seq`: without
    NLM_F_ACK (the kernel answers only a refusal; netlink.py ends each batch with a barrier)."""
    route, verb = write.route, write.verb
    if write.raw and verb != "del":  # a foreign route put back as the kernel had it
        # Imported here: a converged apply never replays one (a module costs it ~5 M instructions).
        from kindplan.node.netlink_rawroute import replay_message

        return replay_message(write.raw, verb, (write.ifindex, write.nexthop_indexes), seq)
    if not route.plain:
        return _general_route_message(write, seq)
    dst = route.dst.network_address.packed
    size = len(dst)
    table = route.table if route.table < 256 else 252  # RT_TABLE_COMPAT; RTA_TABLE says which
    if verb == "del":
        kind, flags = RTM_DELROUTE, F_REQUEST
        scope, rtype = 255, 0  # RT_SCOPE_NOWHERE and RTN_UNSPEC: match any, by key
    else:
        kind = RTM_NEWROUTE
        flags = F_REQUEST | F_CREATE | (F_REPLACE if verb == "replace" else F_EXCL)
        scope, rtype = SCOPE_NUMBERS[route.scope], RTN_UNICAST
    gateway = route.gateway.packed if route.gateway is not None and verb != "del" else None
    request = _REQUESTS[(size, verb == "del", gateway is not None)]
    family = socket.AF_INET if size == 4 else socket.AF_INET6
    fields = [
        *(request.size, kind, flags, seq, 0),
        *(
            family,
            route.dst.prefixlen,
            0,
            0,
            table,
            route.proto,
            scope,
            rtype,
            RTNH_F_ONLINK if write.onlink else 0,
        ),
        *(8, RTA_TABLE, route.table, 4 + size, RTA_DST, dst, 8, RTA_PRIORITY, route.metric),
    ]
    if verb != "del":
        fields += (8, RTA_OIF, write.ifindex)
    if gateway is not None:
        fields += (4 + size, RTA_GATEWAY, gateway)
    return request.pack(*fields)


def _general_route_message(write: RouteWrite, seq: int) -> bytes:
    """The message for a route of any kind kindplan observes (a rollback restores such a route
    exactly as it was): attribute by attribute, since these are few."""
    route, verb = write.route, write.verb
    dst = route.dst.network_address.packed
    if verb == "del":
        kind, flags = RTM_DELROUTE, F_REQUEST
        scope, rtype = 255, 0
    else:
        kind = RTM_NEWROUTE
        flags = F_REQUEST | F_CREATE | (F_REPLACE if verb == "replace" else F_EXCL)
        scope, rtype = SCOPE_NUMBERS.get(route.scope, 0), RTN_NUMBERS[route.kind]
    table = route.table if route.table < 256 else 252
    src = route.src
    body = _RTMSG.pack(
        _FAMILY[route.dst.version], route.dst.prefixlen, src.prefixlen if src else 0, route.tos,
        table, route.proto, scope, rtype, 0,
    )  # fmt: skip
    body += attr(RTA_TABLE, U32.pack(route.table)) + attr(RTA_PRIORITY, U32.pack(route.metric))
    if route.dst.prefixlen:
        body += attr(RTA_DST, dst)
    if src is not None:
        body += attr(RTA_SRC, src.network_address.packed)
    if verb != "del" and route.kind == "unicast":
        if route.nh_id:
            body += attr(RTA_NH_ID, U32.pack(route.nh_id))
        elif route.nexthops:
            paths = b""
            for hop, index in zip(route.nexthops, write.nexthop_indexes, strict=True):
                gateway = _gateway_attr(route.dst.version, hop.gateway)
                paths += _RTNH.pack(_RTNH.size + len(gateway), 0, hop.weight - 1, index) + gateway
            body += attr(RTA_MULTIPATH, paths)
        else:
            body += _gateway_attr(route.dst.version, route.gateway)
            if write.ifindex:
                body += attr(RTA_OIF, U32.pack(write.ifindex))
    return request(kind, flags, seq, body)


def _gateway_attr(version: int, gateway: IPAddress | None) -> bytes:
    """RTA_GATEWAY for a gateway of the route's family, RTA_VIA for one of the other."""
    if gateway is None:
        return b""
    if gateway.version == version:
        return attr(RTA_GATEWAY, gateway.packed)
    return attr(RTA_VIA, struct.pack("=H", _FAMILY[gateway.version]) + gateway.packed)


_CACHEINFO = ATTR.pack(ATTR.size + 32, RTA_CACHEINFO)  # struct rta_cacheinfo: 8 u32


def route_content(message: bytes) -> bytes:
    """What a route message says about the route: its type and body, not the header's sequence
    number, nor the RTA_CACHEINFO of an IPv6 route, whose expiry (a route learned from router
    advertisements) counts down between two dumps of an unchanged table.

    The kernel writes RTA_CACHEINFO after every attribute _walk_route reads (rt6_fill_node), so
    its last occurrence is it or lies behind it: whatever is cut never changes a parsed Route.
    IPv4 route messages carry none (and their addresses could hold the same four bytes).
    """
    if message[HEADER.size] == socket.AF_INET6:
        at = message.rfind(_CACHEINFO, HEADER.size + _RTMSG.size)
        if at > 0:
            return message[4:6] + message[HEADER.size : at] + message[at + 36 :]
    return message[4:6] + message[HEADER.size :]


# The fields _parse_route reads: (family, dst_len, table, proto, scope, dst, gateway, oif,
# metric), addresses packed and b"" when absent, then the route type, TOS, and the payloads of
# RTA_MULTIPATH, RTA_VIA (b"" when absent) and RTA_NH_ID (0 when absent), the source prefix's
# length and RTA_SRC (an IPv6 source-specific route's).
RouteFields = tuple[
    int, int, int, int, int, bytes, bytes, int, int, int, int, bytes, bytes, int, int, bytes
]
# What follows the metric in the fields of a route that a plain Route describes.
_PLAIN = (RTN_UNICAST, 0, b"", b"", 0, 0, b"")
# A layout of route messages of one length: one struct for the whole message past its header
# (rtmsg, then each attribute as a u32 header and its payload), the attribute headers it was
# made from, and what picks the RouteFields out of an unpacked message.
Layout = tuple[struct.Struct, tuple[int, ...], Callable[[tuple[Any, ...]], RouteFields]]
_U32_ATTRS = (RTA_OIF, RTA_PRIORITY, RTA_TABLE, RTA_NH_ID)
_ABSENT = (b"", 0)  # appended to an unpacked message: what an absent attribute reads as


def _route_fields(message: bytes, layouts: dict[int, Layout]) -> RouteFields:
    """The RouteFields of a route message. The kernel writes the routes of a table in a few
    layouts: a message of a length seen before is taken apart by one struct.unpack (its
    attribute headers compared, so a different layout of the same length is caught), not by a
    loop over its attributes, the hot loop of every observation at 10,000 routes."""
    layout = layouts.get(len(message))
    if layout is not None:
        values = layout[0].unpack_from(message, HEADER.size)
        if values[9::2] == layout[1]:
            return layout[2](values + _ABSENT)
    fields, layout = _walk_route(message)
    if layout is not None:
        layouts[len(message)] = layout
    return fields


def _walk_route(message: bytes) -> tuple[RouteFields, Layout | None]:
    """RouteFields from one pass over the attributes, and the layout of such messages (None
    for one no struct describes)."""
    family, dst_len, src_len, tos, table, proto, scope, rtype, _ = _RTMSG.unpack_from(
        message, HEADER.size
    )
    found: dict[int, Any] = {}  # attribute -> its payload (a number for the u32 ones)
    fmt = ["=BBBBBBBBI"]  # the layout: rtmsg, then per attribute its header and payload
    headers: list[int] = []
    at: dict[int, int] = {}  # attribute -> the index of its payload in the unpacked message
    describable = True
    start, end = HEADER.size + _RTMSG.size, len(message)
    walked = start  # where the walk ended: the message's end unless an attribute stopped it
    for offset, length, kind in attr_spans(message, start):
        payload = length - 4
        as_u32 = kind in _U32_ATTRS and payload == 4
        value = message[offset + 4 : offset + length]
        if as_u32 or kind not in _U32_ATTRS:  # a u32 of another size is not read
            found[kind] = U32.unpack(value)[0] if as_u32 else value
        at[kind] = 9 + 2 * len(headers) + 1
        headers.append(U32.unpack_from(message, offset)[0])  # length and type, as unpacked
        padding = min((length + 3) & ~3, end - offset) - length
        fmt.append("I" + ("I" if as_u32 else f"{payload}s") + "x" * padding)
        describable &= as_u32 or kind not in _U32_ATTRS  # else no layout for these messages
        walked = offset + ((length + 3) & ~3)
    get = found.get
    fields: RouteFields = (
        *(family, dst_len, get(RTA_TABLE, table), proto, scope, get(RTA_DST, b"")),
        *(get(RTA_GATEWAY, b""), get(RTA_OIF, 0), get(RTA_PRIORITY, 0), rtype, tos),
        *(get(RTA_MULTIPATH, b""), get(RTA_VIA, b""), get(RTA_NH_ID, 0), src_len),
        get(RTA_SRC, b""),
    )
    compiled = struct.Struct("".join(fmt)) if describable and walked >= end else None
    if compiled is None or HEADER.size + compiled.size != end:
        return fields, None
    empty, zero = 9 + 2 * len(headers), 9 + 2 * len(headers) + 1  # the _ABSENT values
    pick = operator.itemgetter(
        *(0, 1, at.get(RTA_TABLE, 4), 5, 6, at.get(RTA_DST, empty), at.get(RTA_GATEWAY, empty)),
        *(at.get(RTA_OIF, zero), at.get(RTA_PRIORITY, zero), 7, 3),
        *(at.get(RTA_MULTIPATH, empty), at.get(RTA_VIA, empty), at.get(RTA_NH_ID, zero), 2),
        at.get(RTA_SRC, empty),
    )
    return fields, (compiled, tuple(headers), pick)


def _parse_route(
    kind: int,
    message: bytes,
    table: int,
    names: dict[int, str],
    layouts: dict[int, Layout] | None = None,
) -> Route | None:
    if kind != RTM_NEWROUTE:
        return None
    fields = _route_fields(message, {} if layouts is None else layouts)  # None: learn nothing
    family, dst_len, rtm_table, proto, scope, dst, gateway, oif, metric, rtype = fields[:10]
    route_kind = RTN_KINDS.get(rtype)
    if route_kind is None or rtm_table != table:
        return None
    ifname = names.get(oif, "")
    plain = fields[9:] == _PLAIN
    number = int.from_bytes(dst, "big")  # no RTA_DST: the default route
    network: IPNetwork = (
        IPv4Network((number, dst_len))
        if family == socket.AF_INET
        else IPv6Network((number, dst_len))
    )
    route = Route(
        dst=network,
        ifname=ifname,
        gateway=ip_address(gateway) if gateway else None,
        scope=SCOPES.get(scope, str(scope)),
        metric=metric,
        proto=proto,
        table=rtm_table,
    )
    if plain:
        return route
    tos, multipath, via, nh_id, src_len, src = fields[10:]
    address = _via(via) if via else route.gateway
    # A route through one nexthop object keeps the object's gateway and device, as ip(8)
    # shows it (`nhid 7 via 172.18.0.11 dev eth0`): where its traffic goes, compared as a
    # plain route's; a group's are its paths.
    hops = _nexthops(multipath, names) if multipath else ()
    if hops or route_kind != "unicast":
        # No device or gateway of its own (an IPv6 blackhole's "dev lo" is the kernel's):
        # diff.py's comparison of targets relies on it.
        ifname, address = "", None
    special = RouteSpecial(route_kind, tos, hops, nh_id, _source(family, src, src_len))
    return route._replace(ifname=ifname, gateway=address, special=special)


_RTNH = struct.Struct("=HBBi")  # struct rtnexthop: len, flags, hops, ifindex


def _source(family: int, src: bytes, src_len: int) -> IPNetwork | None:
    """The source prefix of a source-specific route (None: any source)."""
    if not src_len:
        return None
    number = int.from_bytes(src, "big")
    if family == socket.AF_INET:
        return IPv4Network((number, src_len), strict=False)
    return IPv6Network((number, src_len), strict=False)


def _via(payload: bytes) -> IPAddress | None:
    """The address of an RTA_VIA (struct rtvia: a u16 family, then the address)."""
    return ip_address(payload[2:]) if len(payload) in (6, 18) else None


def _nexthops(payload: bytes, names: dict[int, str]) -> tuple[NextHop, ...]:
    """The paths of an RTA_MULTIPATH: rtnexthop structs, each followed by its attributes."""
    found = []
    offset = 0
    while offset + _RTNH.size <= len(payload):
        length, _, hops, index = _RTNH.unpack_from(payload, offset)
        if length < _RTNH.size:
            break
        gateway = None
        for kind, value in attrs(payload[: offset + length], offset + _RTNH.size):
            if kind == RTA_GATEWAY:
                gateway = ip_address(value)
            elif kind == RTA_VIA:
                gateway = _via(value)
        found.append(NextHop(gateway, names.get(index, ""), hops + 1))
        offset += (length + 3) & ~3
    return tuple(found)
