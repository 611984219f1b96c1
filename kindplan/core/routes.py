"""Routes as the kernel keys them, and how one reads: ip(8)'s words, and the journal's JSON."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from itertools import compress
from json.encoder import encode_basestring_ascii as _json_text  # json.dumps's, in C
from typing import Any, NamedTuple

from kindplan.core.addresses import (
    IPAddress,
    IPNetwork,
    format_ip,
    format_net,
    parse_cidr,
    parse_ip,
)

DEFAULT_ROUTE_PROTO = 75  # kindplan's own route protocol number: how it recognises its routes
# The pods' MTU when neither the snapshot nor the command line says (model.py's default too);
# here, beside the route protocol's, since the command line's help names both without the
# model's 16 dataclasses (a third of `kindplan --help`'s instructions).
DEFAULT_MTU = 1500
# Protocol numbers the kernel and other routing software write (linux/rtnetlink.h, rt_protos):
# kindplan deletes every stale route with its number, so it must never take one of these.
RESERVED_ROUTE_PROTOS = frozenset(
    {0, 1, 2, 3, 4, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 42, 99, 186, 187, 188, 189, 192}
)
MAIN_TABLE = 254
RTPROT_KERNEL = 2  # routes the kernel derives from addresses: never anyone's to delete
IPV6_DEFAULT_METRIC = 1024  # the kernel stores metric 0 on an IPv6 route as 1024

# kindplan's cross-subnet VXLAN devices (core/tunnel.py), one per family: each family of pods
# rides on the underlay of its own family, as the direct routes do. 15 bytes: IFNAMSIZ - 1.
DEVICES = {4: "kindplan.vxlan4", 6: "kindplan.vxlan6"}
DEVICE_NAMES = frozenset(DEVICES.values())


def onlink(ifname: str, gateway: IPAddress | None) -> bool:
    """Is a route through `ifname` via `gateway` written onlink (an IPv4 tunnel gateway)?"""
    return gateway is not None and gateway.version == 4 and ifname == DEVICES[4]


# Route types (rtm_type) kindplan observes in the main table: a blackhole, unreachable, prohibit
# or throw route at a destination decides where its traffic goes as much as a unicast one does.
ROUTE_KINDS = ("unicast", "blackhole", "unreachable", "prohibit", "throw")
UNICAST = "unicast"


class NextHop(NamedTuple):
    """One path of a multipath route (RTA_MULTIPATH)."""

    gateway: IPAddress | None  # of the route's family, or of the other one (RTA_VIA)
    ifname: str
    weight: int = 1


class RouteSpecial(NamedTuple):
    """What sets apart a route that kindplan observes but never writes itself."""

    kind: str = UNICAST  # one of ROUTE_KINDS; only a unicast route has a gateway or paths
    tos: int = 0
    nexthops: tuple[NextHop, ...] = ()  # a multipath route's paths (then no gateway or ifname)
    nh_id: int = 0  # a route through a nexthop object (RTA_NH_ID); its path is in nexthops
    # An IPv6 source-specific route's source prefix (RTA_SRC, `ip -6 route add DST from SRC`):
    # part of the kernel's key, so it is another route than the one at DST (never kindplan's).
    src: IPNetwork | None = None


_ORDINARY = RouteSpecial()


class _RouteFields(NamedTuple):
    dst: IPNetwork
    ifname: str
    gateway: IPAddress | None  # of the route's family; of the other one: RTA_VIA (IPv4 via IPv6)
    scope: str  # "universe" or "host" (IPv4 pod routes, as ptp makes them)
    metric: int
    proto: int
    table: int
    peer: str  # the node (peer route) or pod (host route) this route serves; not identity
    special: RouteSpecial | None  # None: a unicast route through a gateway or a device
    # The kernel's identity of the route, (table, dst, TOS, metric), derived from the fields
    # above as (table, family, address, prefix length, TOS << 32 | metric) (a metric is a u32):
    # sorting and diffing 10,000 routes ask for it several times each, and hash it each time.
    key: tuple[int, ...]  # and, for a source-specific route, its source prefix (RTA_SRC)


class Route(_RouteFields):
    """A route as the kernel keys it: (table, dst, TOS, metric); the rest is what it points at.

    An immutable named tuple rather than a frozen dataclass: a full apply at 5,000 dual-stack
    nodes makes some 30,000 of them, and a frozen dataclass takes three times the instructions
    to build (an object.__setattr__ per field). The rare kinds of route (another type, TOS,
    multipath, a nexthop object) keep their fields in one `special`, so that the routes
    kindplan makes and compares by the thousand carry one field more, not four.
    """

    __slots__ = ()

    # The kernel's fields of a route, positional as in a tuple: the compiler and the netlink
    # parser build tens of thousands this way, so the size rules' limits do not fit here.
    def __new__(  # noqa: PLR0913, PLR0917
        cls,
        dst: IPNetwork,
        ifname: str,
        gateway: IPAddress | None = None,
        scope: str = "universe",
        metric: int = 0,
        proto: int = DEFAULT_ROUTE_PROTO,
        table: int = MAIN_TABLE,
        peer: str = "",
        special: RouteSpecial | None = None,
    ) -> Route:
        key: tuple[int, ...] = (table, dst.version, int(dst.network_address), dst.prefixlen, metric)
        if special is not None:
            if special == _ORDINARY:
                special = None
            elif special.tos or special.src is not None:
                key = _special_key(key, special)
        return tuple.__new__(
            cls, (dst, ifname, gateway, scope, metric, proto, table, peer, special, key)
        )

    def _replace(self, **changes: Any) -> Route:
        """A copy with `changes`, its key derived again."""
        fields = dict(zip(self._fields[:-1], self[:-1], strict=True))  # all but the key
        return Route(**(fields | changes))

    @property
    def kind(self) -> str:
        return self.special.kind if self.special is not None else UNICAST

    @property
    def tos(self) -> int:
        return self.special.tos if self.special is not None else 0

    @property
    def nexthops(self) -> tuple[NextHop, ...]:
        return self.special.nexthops if self.special is not None else ()

    @property
    def nh_id(self) -> int:
        return self.special.nh_id if self.special is not None else 0

    @property
    def src(self) -> IPNetwork | None:
        return self.special.src if self.special is not None else None

    @property
    def plain(self) -> bool:
        """A unicast route through one gateway of its own family or one device: the only kind
        kindplan itself writes."""
        gateway = self.gateway
        return self.special is None and (gateway is None or gateway.version == self.dst.version)

    def owned_by(self, proto: int) -> bool:
        """Is this route the one of whoever writes route protocol number `proto`? A route is
        kindplan's when owned_by(Options.route_proto): the only routes it deletes, replaces or
        counts as its own (owned_routes() and foreign_routes() sort many at once)."""
        return self.proto == proto


def _special_key(key: tuple[int, ...], special: RouteSpecial) -> tuple[int, ...]:
    """The key of a route with a TOS (in the metric's place: the kernel keys by both) or a source
    prefix (after the five of every key, so it sorts after the route at its destination)."""
    if special.tos:
        key = (*key[:4], special.tos << 32 | key[4])
    if special.src is not None:
        key += (int(special.src.network_address), special.src.prefixlen)
    return key


# Sorts routes by their key, read in C (a lambda costs a Python call for each of 10,000).
ROUTE_ORDER = operator.attrgetter("key")
_PROTO = operator.itemgetter(Route._fields.index("proto"))  # a Route's protocol, read in C


def owned_routes(routes: Sequence[Route], proto: int) -> list[Route]:
    """The routes that are owned_by(proto), in their order; filtered in C, not with a Python
    call per route (a watch round counts kindplan's among 10,000 every time)."""
    return list(compress(routes, map(proto.__eq__, map(_PROTO, routes))))


def foreign_routes(routes: Sequence[Route], proto: int) -> list[Route]:
    """The routes that are not owned_by(proto), in their order; filtered in C as owned_routes()."""
    return list(compress(routes, map(proto.__ne__, map(_PROTO, routes))))


def route_for(route: Route) -> str:
    """Whom a route serves: `peer NODE`, `pod NAMESPACE/NAME`, or "" (an observed route)."""
    if not route.peer:
        return ""
    return f"peer {route.peer}" if route.gateway is not None else f"pod {route.peer}"


# -- how a route reads: ip(8)'s words, and the journal's JSON -----------------------------------


def route_command(route: Route) -> str:
    """`route replace ...` as ip(8) takes it, with every field that is part of the desired state."""
    kind = [] if route.kind == UNICAST else [route.kind]
    return " ".join(["route", "replace", *kind, format_net(route.dst), *_target(route)])


def route_text(route: Route) -> str:
    """A route in ip(8)'s words: its destination and what it points at."""
    common = _common_text(route)
    return common if common is not None else route_command(route).removeprefix("route replace ")


def _common_text(route: Route) -> str | None:
    """route_text of a route of the kinds a first apply writes by the thousand (a peer's, through
    its gateway or a nexthop object, a pod's): _target's words without asking it each of its
    questions (a tenth of the main thread's work while the kernel takes a batch); None for any
    other route. tests/unit/test_route_texts.py holds the two to the same words."""
    special, gateway, ifname = route.special, route.gateway, route.ifname
    nhid = ""
    if special is not None:
        if special.kind != UNICAST or special.tos or special.nexthops or special.src is not None:
            return None
        nhid = f"nhid {special.nh_id} " if special.nh_id else ""
    if not ifname or ifname in DEVICE_NAMES:
        return None
    via = ""
    if gateway is not None:
        if gateway.version != route.dst.version:
            return None
        via = f"via {format_ip(gateway)} "
    scope = "" if route.scope == "universe" else f"scope {route.scope} "
    metric = f" metric {route.metric}" if route.metric else ""
    return f"{format_net(route.dst)} {nhid}{via}dev {ifname} {scope}proto {route.proto}{metric}"


def route_target(route: Route) -> str:
    """What a route points at, its destination left out: `blackhole proto 3`, `via ... dev ...`."""
    kind = [] if route.kind == UNICAST else [route.kind]
    return " ".join([*kind, *_target(route)])


def route_was(old: Route) -> str:
    """What an observed route points at (its destination aside), as ip(8) would say it."""
    if not old.plain:  # blackhole, multipath, a nexthop object...: ip's words, with their paths
        return route_target(old)
    via = f"via {old.gateway} " if old.gateway else ""
    return f"{via}dev {old.ifname or '?'} proto {old.proto}".strip()


def _target(route: Route) -> list[str]:
    words = [] if route.src is None else ["from", format_net(route.src)]
    if route.tos:
        words += ["tos", f"0x{route.tos:02x}"]
    if route.nh_id:
        words += ["nhid", str(route.nh_id)]
    if route.gateway is not None:
        words += ["via", *_via(route.dst.version, route.gateway)]
    if route.ifname:
        words += ["dev", route.ifname]
        if route.ifname in DEVICE_NAMES and onlink(route.ifname, route.gateway):
            words.append("onlink")  # a peer's IPv4 tunnel address (kernel.py writes it so)
    if route.scope != "universe":
        words += ["scope", route.scope]
    words += ["proto", str(route.proto)]
    if route.metric:
        words += ["metric", str(route.metric)]
    for hop in route.nexthops:
        words.append("nexthop")
        if hop.gateway is not None:
            words += ["via", *_via(route.dst.version, hop.gateway)]
        words += ["dev", hop.ifname or "?", "weight", str(hop.weight)]
    return words


def _via(version: int, gateway: IPAddress) -> list[str]:
    """A gateway as ip(8) takes it: one of the other family is named by its family (RTA_VIA)."""
    family = [] if gateway.version == version else ["inet6" if gateway.version == 6 else "inet"]
    return [*family, format_ip(gateway)]


def encode_route(r: Route) -> dict[str, Any]:
    """A route as the journal writes it (schemas/journal.schema.json)."""
    d: dict[str, Any] = {
        "dst": format_net(r.dst),  # inet_ntop: str() of 10,000 IPv6 networks takes 0.1 s
        "ifname": r.ifname,
        "gateway": format_ip(r.gateway) if r.gateway else None,
        "scope": r.scope,
        "metric": r.metric,
        "proto": r.proto,
        "table": r.table,
        "peer": r.peer,
    }
    if r.special is not None:  # a route observed, to be restored exactly as it was
        d |= {
            "kind": r.kind,
            "tos": r.tos,
            "nexthops": [
                [format_ip(h.gateway) if h.gateway else None, h.ifname, h.weight]
                for h in r.nexthops
            ],
            "nhId": r.nh_id,
        }
        if r.src is not None:
            d["src"] = format_net(r.src)
    return d


def route_json(r: Route) -> str | None:
    """json.dumps(encode_route(r), separators=(",", ":")) of a route of the kinds a first apply
    writes by the thousand (as _common_text), written out at once: the journal's line of a
    batch of 1,000 without a dict per route; None for any other route."""
    special, gateway = r.special, r.gateway
    tail = ""
    if special is not None:
        if special.kind != UNICAST or special.tos or special.nexthops or special.src is not None:
            return None
        tail = f',"kind":"unicast","tos":0,"nexthops":[],"nhId":{special.nh_id}'
    via = "null" if not gateway else f'"{format_ip(gateway)}"'
    return (
        f'{{"dst":"{format_net(r.dst)}","ifname":{_json_text(r.ifname)},"gateway":{via},'
        f'"scope":{_json_text(r.scope)},"metric":{int(r.metric)},"proto":{int(r.proto)},'
        f'"table":{int(r.table)},"peer":{_json_text(r.peer)}{tail}}}'
    )


def decode_route(d: dict[str, Any]) -> Route:
    """The route `encode_route` wrote as `d`."""
    kind = str(d.get("kind", UNICAST))
    if kind not in ROUTE_KINDS:
        raise ValueError(f"unknown route kind {kind!r}")
    return Route(
        parse_cidr(d["dst"]),
        str(d["ifname"]),
        parse_ip(d["gateway"]) if d["gateway"] else None,
        str(d["scope"]),
        int(d["metric"]),
        int(d["proto"]),
        int(d["table"]),
        str(d["peer"]),
        RouteSpecial(
            kind,
            int(d.get("tos", 0)),
            tuple(
                NextHop(parse_ip(gateway) if gateway else None, str(ifname), int(weight))
                for gateway, ifname, weight in d.get("nexthops", ())
            ),
            int(d.get("nhId", 0)),
            parse_cidr(d["src"]) if d.get("src") else None,
        ),
    )
