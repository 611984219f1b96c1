"""The kernel's own body of a foreign route, as the journal keeps it: checked as untrusted against
the route its change names, and replayed as a route request of kindplan's making."""

from __future__ import annotations

import socket
import struct
from ipaddress import ip_address, ip_network

import pytest

from kindplan.core.changes import AddRoute, DelRoute, ReplaceRoute, decode_change
from kindplan.core.routes import Route, RouteSpecial, decode_route, encode_route
from kindplan.node.netlink_codec import HEADER, attr
from kindplan.node.netlink_rawroute import check_raw, replay_message

RTMSG = struct.Struct("=BBBBBBBBI")
ROUTE = Route(ip_network("10.244.1.0/24"), "eth0", ip_address("10.99.0.1"), proto=3)


def body(*attrs: bytes, dst_len: int = 24, flags: int = 4, table: int = 254) -> bytes:
    header = RTMSG.pack(socket.AF_INET, dst_len, 0, 0, table, 3, 0, 1, flags)
    return header + b"".join(attrs)


GOOD = body(
    attr(15, struct.pack("=I", 254)),  # RTA_TABLE
    attr(1, bytes([10, 244, 1, 0])),  # RTA_DST
    attr(5, bytes([10, 99, 0, 1])),  # RTA_GATEWAY
    attr(4, struct.pack("=I", 2)),  # RTA_OIF
    attr(8, attr(2, struct.pack("=I", 1400))),  # RTA_METRICS: RTAX_MTU
    attr(11, struct.pack("=I", 5)),  # RTA_FLOW (realm)
)


def test_the_kernels_body_of_the_route_passes() -> None:
    check_raw(ROUTE, GOOD)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (GOOD[:6], "shorter than a route header"),
        (GOOD.replace(bytes([10, 244, 1, 0]), bytes([10, 244, 7, 0])), "another route"),
        (body(attr(1, bytes([10, 244, 1, 0])), table=253), "another route"),
        (GOOD + attr(22, b"\0" * 8), "attribute 22 is not a route's own"),  # RTA_ENCAP
        (GOOD + attr(21, b"\0\0"), "attribute 21 is not a route's own"),  # RTA_ENCAP_TYPE
        (GOOD + b"\1\0", "bytes after the last attribute"),
        (GOOD + attr(1, bytes([10, 244, 1, 0])), "attribute 1 is not a route's own"),  # twice
        (GOOD + attr(7, bytes(16)), "attribute 7 of 16 bytes"),  # an IPv6 RTA_PREFSRC
        (body(attr(1, bytes([10, 244, 1, 0])), dst_len=16), "another route"),
        (body(attr(1, bytes([10, 244, 1, 0])), attr(8, attr(99, b"1234"))), "attribute 99"),
        (body(attr(1, bytes([10, 244, 1, 0])), attr(0x8000 | 8, b"")), "is not a route's own"),
        (body(attr(1, bytes([10, 244, 1, 0])), attr(9, b"\x08\0\0\0\2\0\0\0")), "1 nexthops"),
    ],
)
def test_anything_else_is_refused(raw: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        check_raw(ROUTE, raw)


def test_the_replay_is_kindplans_request_with_todays_interface_indexes() -> None:
    message = replay_message(GOOD + attr(12, bytes(32)), "add", (7, ()), 9)
    length, kind, flags, seq, _ = HEADER.unpack_from(message)
    assert (length, kind, seq) == (len(message), 24, 9)
    assert flags == 0x1 | 0x4 | 0x400 | 0x200  # request, ack, create, exclusive
    rest = message[HEADER.size :]
    assert RTMSG.unpack_from(rest)[8] == 4  # onlink kept
    assert attr(4, struct.pack("=I", 7)) in rest  # RTA_OIF of eth0 now, not the dumped 2
    assert attr(4, struct.pack("=I", 2)) not in rest
    assert attr(11, struct.pack("=I", 5)) in rest and attr(12, bytes(32)) not in rest


def test_flags_the_kernel_refuses_in_a_request_are_dropped() -> None:
    dead_linkdown = body(attr(1, bytes([10, 244, 1, 0])), flags=4 | 1 | 16)
    message = replay_message(dead_linkdown, "replace", (0, ()), 1)
    assert RTMSG.unpack_from(message, HEADER.size)[8] == 4


def test_an_expiring_ipv6_route_is_replayed_with_rta_expires() -> None:
    cacheinfo = struct.pack("=IIiIIIII", 0, 0, 59_950, 0, 0, 0, 0, 0)  # 599.5 s in ticks
    raw = RTMSG.pack(socket.AF_INET6, 64, 0, 0, 254, 3, 0, 1, 0) + attr(12, cacheinfo)
    message = replay_message(raw, "add", (0, ()), 1)
    assert message.endswith(attr(23, struct.pack("=I", 600)))


def test_route_changes_journal_their_raw_body_and_read_it_back() -> None:
    ours = Route(ip_network("10.244.1.0/24"), "eth0", ip_address("172.18.0.11"))
    replace = ReplaceRoute(ours, ROUTE, old_raw=GOOD)
    undo = replace.undo()
    assert isinstance(undo, ReplaceRoute) and undo.raw == GOOD and undo.route == ROUTE
    assert decode_change(undo.encode()).raw == GOOD
    added = DelRoute(ROUTE, raw=GOOD).undo()
    assert isinstance(added, AddRoute) and decode_change(added.encode()) == added
    assert "raw" not in AddRoute(ROUTE).encode()  # as every journal before it
    assert decode_change({"type": "AddRoute", "route": encode_route(ROUTE)}).raw == b""


def test_a_source_specific_route_has_its_own_key() -> None:
    dst = ip_network("fd00:10:244:2::/64")
    plain = Route(dst, "eth0", ip_address("fc00::4"), metric=1024)
    src = plain._replace(special=RouteSpecial(src=ip_network("2001:db8:1::/64")))
    assert src.key != plain.key and src.key[:5] == plain.key
    assert decode_route(encode_route(src)) == src
    assert encode_route(src)["src"] == "2001:db8:1::/64"


def test_an_apply_journals_only_raw_bodies_the_reader_takes_back() -> None:
    """A foreign route with what check_raw refuses (an encapsulation) is journaled by its fields
    alone: bytes the reader refuses would make the whole generation impossible to undo."""
    from fakes import FakeKernel

    from kindplan.core.changes import Plan
    from kindplan.node.apply import with_raw_routes

    encapsulated = ROUTE._replace(dst=ip_network("10.244.5.0/24"))
    bodies = {
        ROUTE: GOOD,
        encapsulated: body(attr(1, bytes([10, 244, 5, 0])), attr(22, b"\0" * 8)),
    }

    class Dumped(FakeKernel):
        def raw_routes(self, routes: object) -> dict[Route, bytes]:
            return bodies

    ours = Route(ip_network("10.244.1.0/24"), "eth0", ip_address("172.18.0.11"))
    plan = Plan("n", (ReplaceRoute(ours, ROUTE), DelRoute(encapsulated), DelRoute(ours)))
    changes = with_raw_routes(plan, Dumped(), proto=75).changes
    assert [getattr(c, "old_raw", None) or getattr(c, "raw", b"") for c in changes] == [
        GOOD,
        b"",
        b"",
    ]
