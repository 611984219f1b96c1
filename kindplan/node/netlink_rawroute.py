"""A foreign route written back exactly: the message body the kernel dumped for it (rtmsg and
every attribute), kept by the journal when an apply replaces or deletes the route, checked as
untrusted when read back, and replayed by a rollback. So a route comes back with what kindplan
does not model: onlink (RTNH_F_ONLINK, also of each multipath nexthop), the preferred source
(RTA_PREFSRC), the realm (RTA_FLOW), RTA_METRICS (mtu, advmss, rtt, initcwnd, IPv6 hoplimit...),
IPv6 pref (RTA_PREF), and an expiring IPv6 route expiring.

The journal is root-equivalent input (DESIGN): what check_raw lets through can only be a route
request for the very route its change names (family, table, destination, source prefix, TOS,
metric, type, protocol), made of route attributes with the sizes the kernel gives them, nothing
nested but metrics and nexthops of their own form (no encapsulation, no MPLS, no trailing bytes).
The request's header is kindplan's (RTM_NEWROUTE, create and exclusive or replace); interface
indexes are taken from the route's names now, not from the bytes (an index changes with its
device).
"""

from __future__ import annotations

import socket
import struct

from kindplan.core.routes import Route
from kindplan.node.netlink_codec import (
    ATTR,
    F_ACK,
    F_CREATE,
    F_EXCL,
    F_REPLACE,
    F_REQUEST,
    U32,
    attr,
    request,
)

RTM_NEWROUTE = 24
RTA_DST, RTA_SRC, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_PREFSRC = 1, 2, 4, 5, 6, 7
RTA_METRICS, RTA_MULTIPATH, RTA_FLOW, RTA_CACHEINFO, RTA_TABLE = 8, 9, 11, 12, 15
RTA_VIA, RTA_PREF, RTA_EXPIRES, RTA_NH_ID = 18, 20, 23, 30
# rtm_type by the kind a Route names (netlink_routes.RTN_KINDS, the other way round)
RTN_NUMBERS = {"unicast": 1, "blackhole": 6, "unreachable": 7, "prohibit": 8, "throw": 9}
RTNH_F_ONLINK = 4  # the only flag of a route or nexthop that a request may carry back
RTAX_MAX, RTAX_CC_ALGO = 17, 16  # route metrics: u32s, but the congestion control's name
USER_HZ = 100  # rta_cacheinfo.rta_expires counts in clock ticks

_RTMSG = struct.Struct(
    "=BBBBBBBBI"
)  # family, dst_len, src_len, tos, table, proto, scope, type, flags
_RTNH = struct.Struct("=HBBi")  # struct rtnexthop: len, flags, hops, ifindex
_FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}
# The attributes a restored route may carry, and the size of each: "a" an address of the route's
# family, "v" an RTA_VIA, None any (nested: checked on its own), else that many bytes.
_SIZES: dict[int, int | str | None] = {
    RTA_DST: "a", RTA_SRC: "a", RTA_OIF: 4, RTA_GATEWAY: "a", RTA_PRIORITY: 4, RTA_PREFSRC: "a",
    RTA_METRICS: None, RTA_MULTIPATH: None, RTA_FLOW: 4, RTA_CACHEINFO: 32, RTA_TABLE: 4,
    RTA_VIA: "v", RTA_PREF: 1, RTA_EXPIRES: 4, RTA_NH_ID: 4,
}  # fmt: skip
_HOP_SIZES: dict[int, int | str | None] = {RTA_GATEWAY: "a", RTA_VIA: "v", RTA_FLOW: 4}
# Route metrics (RTA_METRICS): u32s, but the congestion control's name (a string).
_METRIC_SIZES: dict[int, int | str | None] = {
    kind: (None if kind == RTAX_CC_ALGO else 4) for kind in range(1, RTAX_MAX + 1)
}
# What a route through a nexthop object must not name again (the kernel refuses both at once).
_PATH = (RTA_OIF, RTA_GATEWAY, RTA_VIA, RTA_MULTIPATH, RTA_FLOW)


def check_raw(route: Route, raw: bytes) -> None:
    """ValueError unless `raw` is a route message body for `route` itself, of the form above."""
    if len(raw) < _RTMSG.size:
        raise ValueError("raw route attributes shorter than a route header")
    family, dst_len, src_len, tos, table, proto, _, rtype, _ = _RTMSG.unpack_from(raw)
    src = route.src
    expect = (
        _FAMILY[route.dst.version], route.dst.prefixlen, src.prefixlen if src else 0,
        route.tos, route.proto, RTN_NUMBERS[route.kind],
    )  # fmt: skip
    if (family, dst_len, src_len, tos, proto, rtype) != expect:
        raise ValueError(f"raw route attributes of another route than {route.dst}")
    size = 4 if family == socket.AF_INET else 16
    found = _attributes(raw, _RTMSG.size, _SIZES, size)
    zeros = bytes(size)  # what an absent address attribute stands for
    said = (
        found.get(RTA_DST, zeros), found.get(RTA_SRC, zeros),
        found.get(RTA_PRIORITY, bytes(4)), found.get(RTA_TABLE, U32.pack(table)),
    )  # fmt: skip
    named = (
        route.dst.network_address.packed, src.network_address.packed if src else zeros,
        U32.pack(route.metric), U32.pack(route.table),
    )  # fmt: skip
    if said != named:
        raise ValueError(f"raw route attributes of another route than {route.dst}")
    if RTA_METRICS in found:
        _attributes(found[RTA_METRICS], 0, _METRIC_SIZES, 0)
    if RTA_MULTIPATH in found:
        hops = _hops(found[RTA_MULTIPATH], size)
        if hops != len(route.nexthops):
            raise ValueError(
                f"raw route attributes with {hops} nexthops, not {len(route.nexthops)}"
            )


def _attributes(
    data: bytes, offset: int, sizes: dict[int, int | str | None], size: int
) -> dict[int, bytes]:
    """Each attribute's payload by type; ValueError for one not in `sizes`, of another size, with
    flags (nested or byte order), twice, or for bytes that are no attribute."""
    found: dict[int, bytes] = {}
    while offset < len(data):
        if offset + ATTR.size > len(data):
            raise ValueError("raw route attributes: bytes after the last attribute")
        length, kind = ATTR.unpack_from(data, offset)
        if not ATTR.size <= length <= len(data) - offset or kind not in sizes or kind in found:
            raise ValueError(f"raw route attributes: attribute {kind} is not a route's own")
        payload = data[offset + ATTR.size : offset + length]
        expect = sizes[kind]
        if expect == "a":
            expect = size
        elif expect == "v":
            expect = 2 + _via_size(payload)
        if expect is not None and len(payload) != expect:
            raise ValueError(f"raw route attributes: attribute {kind} of {len(payload)} bytes")
        found[kind] = payload
        offset += (length + 3) & ~3
    return found


def _via_size(payload: bytes) -> int:
    """The address size an RTA_VIA names (struct rtvia: a u16 family, then the address)."""
    family = struct.unpack_from("=H", payload)[0] if len(payload) >= 2 else -1
    return {int(socket.AF_INET): 4, int(socket.AF_INET6): 16}.get(int(family), -1)


def _hops(payload: bytes, size: int) -> int:
    """How many nexthops an RTA_MULTIPATH holds; ValueError if one is malformed."""
    count, offset = 0, 0
    while offset < len(payload):
        if offset + _RTNH.size > len(payload):
            raise ValueError("raw route attributes: a nexthop cut short")
        length = _RTNH.unpack_from(payload, offset)[0]
        if not _RTNH.size <= length <= len(payload) - offset:
            raise ValueError("raw route attributes: a nexthop of a wrong length")
        _attributes(payload[offset + _RTNH.size : offset + length], 0, _HOP_SIZES, size)
        count += 1
        offset += (length + 3) & ~3
    return count


def replay_message(raw: bytes, verb: str, indexes: tuple[int, tuple[int, ...]], seq: int) -> bytes:
    """The request that writes `raw` back (`verb` "add" or "replace"): the dumped body, its
    interface indexes those of the route's names now (`indexes`: its device's and its
    nexthops', netlink_routes.RouteWrite's), flags the kernel reports but refuses (dead,
    linkdown, offload...) dropped, an IPv6 expiry (RTA_CACHEINFO) as RTA_EXPIRES."""
    ifindex, nexthop_indexes = indexes
    header = list(_RTMSG.unpack_from(raw))
    header[8] &= RTNH_F_ONLINK
    body = _RTMSG.pack(*header)
    spans = []
    offset = _RTMSG.size
    while offset + ATTR.size <= len(raw):
        length, kind = ATTR.unpack_from(raw, offset)
        spans.append((kind, raw[offset + ATTR.size : offset + length]))
        offset += (max(length, ATTR.size) + 3) & ~3
    by_object = any(kind == RTA_NH_ID for kind, _ in spans)
    for kind, payload in spans:
        if by_object and kind in _PATH:
            continue
        if kind == RTA_OIF:
            body += attr(RTA_OIF, U32.pack(ifindex)) if ifindex else b""
        elif kind == RTA_MULTIPATH:
            body += attr(RTA_MULTIPATH, _replay_hops(payload, nexthop_indexes))
        elif kind == RTA_CACHEINFO:
            body += _expires(payload) if header[0] == socket.AF_INET6 else b""
        else:
            body += attr(kind, payload)
    flags = F_REQUEST | F_ACK | F_CREATE | (F_REPLACE if verb == "replace" else F_EXCL)
    return request(RTM_NEWROUTE, flags, seq, body)


def _replay_hops(payload: bytes, indexes: tuple[int, ...]) -> bytes:
    """An RTA_MULTIPATH's nexthops, each with the interface index of its name now."""
    out, offset = b"", 0
    for index in indexes:
        length, flags, hops, _ = _RTNH.unpack_from(payload, offset)
        inner = payload[offset + _RTNH.size : offset + length]
        out += _RTNH.pack(length, flags & RTNH_F_ONLINK, hops, index) + inner
        out += b"\0" * (-length % 4)
        offset += (length + 3) & ~3
    return out


def _expires(cacheinfo: bytes) -> bytes:
    """RTA_EXPIRES (seconds) for the time an IPv6 route had left when it was dumped (none: it
    does not expire). It comes back with that much left, as when the apply replaced it."""
    ticks = struct.unpack_from("=i", cacheinfo, 8)[0]  # rta_expires
    if ticks <= 0:
        return b""
    return attr(RTA_EXPIRES, U32.pack(max(1, -(-ticks // USER_HZ))))
