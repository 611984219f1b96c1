"""Nexthop objects without root: their ids, the auto rule, the compiled routes and objects, the
diff's order and ownership, the journal form, the deletion guard, and the engine on the fakes
(tests/kernel/test_nexthops.py holds the same stories against the real kernel)."""

from __future__ import annotations

import errno
from dataclasses import replace
from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest
from builders import cluster_doc, load
from fakes import FakeNode, seed_worker2

from kindplan.core.changes import AddRoute, DelRoute, Plan, ReplaceRoute, decode_change
from kindplan.core.compiler import compile_desired, route_style_families
from kindplan.core.diff import diff
from kindplan.core.guard import NEXTHOPS, PEER_ROUTES, split_deletions
from kindplan.core.model import DesiredState, HostFacts, Link, ObservedState, Options
from kindplan.core.nexthop_changes import AddNexthop, DelNexthop, ReplaceNexthop
from kindplan.core.nexthops import (
    AUTO_MIN_PEERS,
    Nexthop,
    cidr_index,
    nexthop_families,
    nexthop_id,
)
from kindplan.core.planview import format_plan, undo_summary
from kindplan.core.render import render_route_batch
from kindplan.core.routes import Route, RouteSpecial
from kindplan.errors import RuntimeFailure
from kindplan.inputs.files import load_snapshot
from kindplan.node.engine import apply_opened, make_plan
from kindplan.node.journal import Journal, undo_all
from kindplan.node.ports import NodeHandles

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "fixtures" / "seed-lab" / "snapshot.yaml"
PATH = "/etc/cni/net.d/10-kindnet.conflist"
GW = ip_address("198.18.0.11")


def test_an_id_is_the_protocol_the_family_and_the_podcidrs_index() -> None:
    subnets = (ip_network("10.244.0.0/16"), ip_network("fd00:10:244::/48"))
    assert cidr_index(ip_network("10.244.3.0/24"), subnets) == 3
    assert cidr_index(ip_network("fd00:10:244:5::/64"), subnets) == 5
    assert cidr_index(ip_network("10.245.0.0/24"), subnets) is None  # outside the subnet
    assert cidr_index(ip_network("10.0.0.0/8"), subnets) is None  # wider than it
    # an index past 23 bits: no id, a plain route
    assert cidr_index(ip_network("fd00:0:0:1::/96"), (ip_network("fd00::/48"),)) is None
    assert nexthop_id(75, 4, 3) == 75 << 24 | 3
    assert nexthop_id(75, 6, 3) == 75 << 24 | 1 << 23 | 3
    assert nexthop_id(76, 4, 0) != nexthop_id(75, 4, 0)  # each protocol its own ids


def test_auto_takes_objects_for_ipv4_from_the_threshold_on_when_the_kernel_has_them() -> None:
    many = {4: AUTO_MIN_PEERS, 6: AUTO_MIN_PEERS}
    assert nexthop_families("auto", many, True) == (4,)  # IPv6 has no fib_info scan
    assert nexthop_families("auto", {4: AUTO_MIN_PEERS - 1}, True) == ()
    assert nexthop_families("auto", many, False) == ()
    assert nexthop_families("nexthop", {}, True) == (4, 6)
    assert nexthop_families("plain", many, True) == ()
    snapshot = load(cluster_doc(AUTO_MIN_PEERS + 1))
    me = snapshot.nodes[0]
    assert route_style_families(snapshot, me, None, True) == (4,)
    assert route_style_families(snapshot, me, "plain", True) == ()
    small = load(cluster_doc(3, routeStyle="nexthop"))
    assert route_style_families(small, small.nodes[0], None, True) == (4, 6)  # the snapshot's


def nexthop_desired(nodes: int = 3) -> DesiredState:
    snapshot = load(cluster_doc(nodes, v6=True))
    return compile_desired(snapshot, "node-0000", HostFacts(), nexthop_families=(4, 6))


def empty(links: tuple[Link, ...] | None = None) -> ObservedState:
    eth0 = Link("eth0", 2, 1500, True, ((ip_address("198.18.0.10"), 15),))
    return ObservedState(links or (eth0,), (), (), (), None)


def test_the_compiled_routes_name_their_objects_and_keep_their_path() -> None:
    desired = nexthop_desired()
    peers = [r for r in desired.routes if r.gateway is not None]
    objects = {n.id: n for n in desired.nexthops}
    assert len(peers) == len(objects) == 4
    for route in peers:
        nexthop = objects[route.nh_id]
        assert (nexthop.gateway, nexthop.ifname, nexthop.peer) == (
            route.gateway,
            route.ifname,
            route.peer,
        )
    batch = render_route_batch(desired)
    first_route = batch.index("route replace")
    assert batch.index("nexthop replace id") < first_route
    assert f"route replace 10.244.1.0/24 nhid {75 << 24 | 1} proto 75\n" in batch


def test_objects_go_in_before_their_routes_and_out_after_them() -> None:
    desired = nexthop_desired()
    plan = diff(desired, empty(), conflist_path=PATH)
    kinds = [type(c).__name__ for c in plan.changes]
    assert kinds.index("AddRoute") > max(i for i, k in enumerate(kinds) if k == "AddNexthop")
    # Observed as made, then nothing desired: the routes go, then their objects.
    ours = tuple(c.route for c in plan.changes if isinstance(c, AddRoute))
    objects = tuple(c.nexthop for c in plan.changes if isinstance(c, AddNexthop))
    held = replace(empty(), routes=ours, nexthops=objects)
    gone = replace(desired, routes=(), nexthops=())
    plan = diff(gone, held, conflist_path=PATH)
    kinds = [type(c).__name__ for c in plan.changes]
    assert kinds.index("DelNexthop") > max(i for i, k in enumerate(kinds) if k == "DelRoute")
    # A rollback of the first plan deletes the routes before the objects (undo_rank).
    undo = [type(c).__name__ for c in undo_all(diff(desired, empty(), conflist_path=PATH).changes)]
    assert undo.index("DelNexthop") > max(i for i, k in enumerate(undo) if k == "DelRoute")


def test_an_id_someone_else_holds_is_left_alone_and_its_peer_routed_plain() -> None:
    desired = nexthop_desired()
    want = desired.nexthops[0]
    foreign = want._replace(proto=3, peer="")
    plan = diff(desired, replace(empty(), nexthops=(foreign,)), conflist_path=PATH)
    assert not any(
        isinstance(c, AddNexthop | ReplaceNexthop | DelNexthop) and c.nexthop.id == want.id
        for c in plan.changes
    )
    route = next(
        c.route
        for c in plan.changes
        if isinstance(c, AddRoute)
        and c.route.peer == want.peer
        and c.route.dst.version == want.version
    )
    assert route.nh_id == 0 and route.gateway == want.gateway
    assert any(f"nexthop id {want.id} is taken" in w for w in plan.warnings)


def test_a_stale_object_is_deleted_unless_a_foreign_route_uses_it() -> None:
    stale = Nexthop(nexthop_id(75, 4, 9), 4, GW, "eth0", 75)
    desired = nexthop_desired()
    observed = replace(empty(), nexthops=(stale,))
    plan = diff(desired, observed, conflist_path=PATH)
    assert DelNexthop(stale) in plan.changes
    user = Route(ip_network("192.0.2.0/24"), "eth0", GW, proto=3)._replace(
        special=replace_special(stale.id)
    )
    plan = diff(desired, replace(observed, routes=(user,)), conflist_path=PATH)
    assert DelNexthop(stale) not in plan.changes
    assert any("foreign route 192.0.2.0/24 (proto 3) uses it" in w for w in plan.warnings)


def replace_special(nh_id: int) -> RouteSpecial:
    return RouteSpecial(nh_id=nh_id)


def test_the_journal_form_round_trips_and_history_names_objects() -> None:
    one = Nexthop(nexthop_id(75, 6, 2), 6, ip_address("2001:db8::2"), "eth0", 75, "node-2")
    moved = one._replace(gateway=ip_address("2001:db8::9"))
    for change in (AddNexthop(one), DelNexthop(one), ReplaceNexthop(one, moved)):
        assert decode_change(change.encode()) == change
        assert decode_change(change.undo().encode()) == change.undo()
    assert undo_summary([DelNexthop(one), DelNexthop(one)]) == "remove 2 nexthop objects"
    with pytest.raises(ValueError, match="is not IPv6"):
        decode_change(
            {
                **AddNexthop(one).encode(),
                "nexthop": {**AddNexthop(one).encode()["nexthop"], "gateway": "192.0.2.1"},
            }
        )


def test_the_guard_holds_objects_back_with_the_peer_routes_through_them() -> None:
    routes = tuple(
        Route(ip_network(f"10.244.{i}.0/24"), "eth0", GW, proto=75)._replace(
            special=replace_special(i + 1)
        )
        for i in range(10)
    )
    objects = tuple(Nexthop(i + 1, 4, GW, "eth0", 75) for i in range(10))
    observed = replace(empty(), routes=routes, nexthops=objects)
    changes = (*(DelRoute(r) for r in routes[:8]), *(DelNexthop(n) for n in objects[:8]))
    guarded = split_deletions(Plan("n", changes), observed, 75, 0.5)
    assert guarded.plan.changes == ()  # the objects would take the held routes with them
    assert {k for k, _, _ in guarded.kinds} == {PEER_ROUTES, NEXTHOPS}


@pytest.fixture
def node() -> FakeNode:
    return seed_worker2()


def test_the_engine_applies_the_nexthop_style_and_then_writes_nothing(
    node: FakeNode, tmp_path: Path
) -> None:
    snapshot = load_snapshot(str(SEED)).snapshot
    options = Options(node="k8s-guide-worker2", conf_dir=str(tmp_path), route_style="nexthop")
    handles = NodeHandles(node.kernel, node.iptables)
    _, report = apply_opened(snapshot, options, handles, journal=Journal(tmp_path / "s", None))
    assert report is not None and report.ok, report
    assert node.kernel.nexthops and all(
        r.nh_id in node.kernel.nexthops for r in node.kernel.routes.values() if r.gateway
    )
    before = len(node.kernel.writes)
    assert make_plan(snapshot, options, node.kernel, node.iptables).plan.empty
    assert len(node.kernel.writes) == before
    plain = replace(options, route_style="plain")
    text = format_plan(make_plan(snapshot, plain, node.kernel, node.iptables).plan)
    assert "~ route 10.244.0.0/24 via 172.18.0.10 dev eth0 proto 75" in text
    assert text.index("~ route") < text.index("- nexthop")
    assert all(
        isinstance(c, ReplaceRoute | DelNexthop)
        for c in make_plan(snapshot, plain, node.kernel, node.iptables).plan.changes
    )


def test_the_nexthop_style_on_a_kernel_without_objects_is_an_error(
    node: FakeNode, tmp_path: Path
) -> None:
    node.kernel.nexthops = None
    snapshot = load_snapshot(str(SEED)).snapshot
    options = Options(node="k8s-guide-worker2", conf_dir=str(tmp_path), route_style="nexthop")
    with pytest.raises(RuntimeFailure, match="no nexthop objects"):
        make_plan(snapshot, options, node.kernel, node.iptables)
    auto = replace(options, route_style="auto")
    assert not make_plan(snapshot, auto, node.kernel, node.iptables).desired.nexthops


@pytest.mark.parametrize("gateway", ["198.18.0.11", "2001:db8::b"])
def test_the_packed_messages_say_what_the_attribute_by_attribute_ones_say(gateway: str) -> None:
    """One struct per message (the hot path) against attr() one attribute at a time."""
    from kindplan.node.netlink_codec import HEADER, attr, attrs
    from kindplan.node.netlink_nexthops import (
        NHA_GATEWAY,
        NHA_ID,
        NHA_OIF,
        NexthopWrite,
        _nhid_route_message,
        nexthop_message,
        write_message,
    )
    from kindplan.node.netlink_routes import RouteWrite, _general_route_message

    gw = ip_address(gateway)
    one = Nexthop(nexthop_id(75, gw.version, 3), gw.version, gw, "eth0", 75)
    packed = nexthop_message(NexthopWrite("replace", one, 2), 9)
    body = packed[HEADER.size + 8 :]
    assert body == attr(NHA_ID, one.id.to_bytes(4, "little")) + attr(
        NHA_OIF, (2).to_bytes(4, "little")
    ) + attr(NHA_GATEWAY, gw.packed)
    assert len(packed) == int.from_bytes(packed[:4], "little")
    dst = ip_network("10.244.3.0/24" if gw.version == 4 else "fd00:10:244:3::/64")
    route = Route(dst, "eth0", gw, proto=75, special=RouteSpecial(nh_id=one.id))
    write = RouteWrite("replace", route, 2)
    fast, general = write_message(write, 9), _general_route_message(write, 9)
    # the packed path is the one taken (a RouteSpecial that grew a field once made every nhid
    # route fall back to the general encoder, and this comparison alone could not tell)
    assert fast == _nhid_route_message(write, 9)
    assert fast[: HEADER.size + 12] == general[: HEADER.size + 12]  # header and rtmsg
    assert dict(attrs(fast, HEADER.size + 12)) == dict(attrs(general, HEADER.size + 12))


def test_a_plan_with_objects_is_valid_plan_json() -> None:
    from jsonschema import Draft202012Validator

    from kindplan.core.planview import plan_to_json
    from kindplan.resources import load_schema

    plan = diff(nexthop_desired(), empty(), conflist_path=PATH)
    doc = plan_to_json(plan)
    Draft202012Validator(load_schema("plan.schema.json")).validate(doc)
    assert {c["kind"] for c in doc["changes"]} >= {"nexthop", "route"}


def test_a_kernel_without_nexthop_objects_is_probed_once() -> None:
    """Before Linux 5.3 the dump is refused (EOPNOTSUPP): no objects, asked no more; the
    converged record's digest is then the route table's alone."""
    import struct

    from test_netlink_socket import FakeSocket, ack

    from kindplan.node import netlink
    from kindplan.node.kernel import Kernel

    refused = ack(1, errno.EOPNOTSUPP)
    sock = FakeSocket([refused])
    kernel = Kernel(netlink.Netlink(sock))
    assert kernel.read_nexthops() is None
    assert kernel.read_nexthops() is None
    assert len(sock.sent) == 1  # probed once
    kind = struct.unpack_from("=H", sock.sent[0], 4)[0]
    assert kind == 106  # RTM_GETNEXTHOP


@pytest.mark.parametrize("gateway", ["198.18.0.11", "2001:db8::b", None])
def test_a_dumped_object_reads_the_same_by_its_layout_and_by_its_attributes(
    gateway: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel's layout of a gateway object (NHA_ID, NHA_OIF, NHA_GATEWAY) is read by one
    unpack; a message of another layout (here: a group) by the walk; both agree."""
    import socket
    import struct

    from kindplan.node.netlink_codec import HEADER, attr
    from kindplan.node.netlink_nexthops import (
        NHA_GATEWAY,
        NHA_GROUP,
        NHA_ID,
        NHA_OIF,
        RTM_NEWNEXTHOP,
        _walk_nexthop,
        parse_nexthop,
    )

    gw = ip_address(gateway) if gateway else None
    family = socket.AF_INET6 if gw is not None and gw.version == 6 else socket.AF_INET
    body = struct.pack("=BBBBI", family, 253, 75, 0, 0) + attr(NHA_ID, struct.pack("=I", 7))
    if gw is None:
        body += attr(NHA_GROUP, struct.pack("=IBBH", 1, 0, 0, 0) + struct.pack("=IBBH", 2, 0, 0, 0))
    else:
        body += attr(NHA_OIF, struct.pack("=I", 2)) + attr(NHA_GATEWAY, gw.packed)
    message = HEADER.pack(HEADER.size + len(body), RTM_NEWNEXTHOP, 2, 1, 0) + body
    names = {2: "eth0"}
    assert parse_nexthop(message, names) == _walk_nexthop(message, names)
    read = parse_nexthop(message, names)
    assert read is not None and read.id == 7 and read.proto == 75
    if gw is None:
        assert read.other == "group 1/2" and not read.owned_by(75)
    else:
        assert (read.gateway, read.ifname, read.other) == (gw, "eth0", "")
        from kindplan.node import netlink_nexthops

        def walked(*_: object) -> None:
            raise AssertionError("walked: the layout was not recognised")

        monkeypatch.setattr(netlink_nexthops, "_walk_nexthop", walked)
        assert parse_nexthop(message, names) == read  # by the layout alone
