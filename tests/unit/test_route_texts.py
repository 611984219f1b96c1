"""The words and journal JSON of the routes a first apply writes by the thousand, written out at
once (routes._common_text, routes.route_json, journal._encode_undo), are exactly those of the
general path (_target's words, json.dumps of encode_route) for every route they answer, and
they answer the routes kindplan writes."""

from __future__ import annotations

import itertools
import json
from ipaddress import ip_address, ip_network

from kindplan.core.changes import AddRoute, DelRoute
from kindplan.core.routes import (
    DEVICES,
    NextHop,
    Route,
    RouteSpecial,
    _common_text,
    encode_route,
    route_command,
    route_json,
    route_text,
)
from kindplan.node.journal import _encode_undo, undo_all

DSTS = (ip_network("10.244.1.0/24"), ip_network("fd00:10:244:1::/64"), ip_network("0.0.0.0/0"))
GATEWAYS = (None, ip_address("198.18.0.11"), ip_address("2001:db8::b"))
IFNAMES = ("eth0", "", DEVICES[4], DEVICES[6], 'we"ird\\näme')
SPECIALS = (
    None,
    RouteSpecial(nh_id=1258291201),
    RouteSpecial(kind="blackhole"),
    RouteSpecial(tos=0x10),
    RouteSpecial(nexthops=(NextHop(ip_address("198.18.0.12"), "eth0", 2),)),
    RouteSpecial(src=ip_network("fd00::/64")),
)


def _routes() -> list[Route]:
    routes = []
    for dst, gateway, ifname, special in itertools.product(DSTS, GATEWAYS, IFNAMES, SPECIALS):
        for scope, metric, proto, table, peer in (
            ("universe", 0, 75, 254, "node-0001"),
            ("host", 1024, 3, 100, ""),
            ("link", 7, 75, 254, "ns/pod\u2028\x01"),
        ):
            routes.append(Route(dst, ifname, gateway, scope, metric, proto, table, peer, special))
    return routes


def test_the_common_words_are_the_general_ones() -> None:
    answered = 0
    for route in _routes():
        general = route_command(route).removeprefix("route replace ")
        common = _common_text(route)
        assert common in (None, general), route
        assert route_text(route) == general
        answered += common is not None
    assert answered > 50  # the fast path answers, not only the general one


def test_the_journals_json_is_json_dumps_of_encode_route() -> None:
    answered = 0
    for route in _routes():
        written = route_json(route)
        assert written in (None, json.dumps(encode_route(route), separators=(",", ":"))), route
        answered += written is not None
    assert answered > 50


def test_an_undo_line_is_json_dumps_of_the_changes() -> None:
    changes = [AddRoute(route) for route in _routes()] + [DelRoute(_routes()[0])]
    undo = undo_all(changes)
    assert _encode_undo(undo) == json.dumps([c.encode() for c in undo], separators=(",", ":"))


def test_kindplans_own_routes_take_the_fast_path() -> None:
    peer = Route(DSTS[0], "eth0", GATEWAYS[1], peer="node-0001")
    through_object = peer._replace(special=RouteSpecial(nh_id=7))
    pod = Route(ip_network("10.244.0.5/32"), "veth1", None, "host", peer="ns/a")
    for route in (peer, through_object, pod):
        assert _common_text(route) is not None
        assert route_json(route) is not None
