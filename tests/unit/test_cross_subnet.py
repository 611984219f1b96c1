"""--cross-subnet vxlan in the pure core and against the fakes: which peers are tunneled, what the
tunnel is made of (all derived from the snapshot), the plan's order, a peer moving in and out of
the node's subnet in one plan, ownership of a device by its marker, the journal form of every
tunnel change, and the undo order. tests/kernel/test_vxlan_segments.py sends real packets."""

from __future__ import annotations

import json
from dataclasses import replace
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from fakes import FakeIptables, FakeKernel, FakeNode

from kindplan.core import crosssubnet
from kindplan.core.changes import AddRoute, Change, ReplaceRoute, decode_change
from kindplan.core.compiler import compile_desired
from kindplan.core.diff import diff, not_in_effect
from kindplan.core.guard import TUNNEL_PEERS, removed_state
from kindplan.core.model import (
    Cluster,
    DesiredState,
    HostFacts,
    Link,
    Node,
    ObservedState,
    Options,
    Snapshot,
)
from kindplan.core.tunnel import (
    FdbEntry,
    Neighbour,
    Vxlan,
    decode_vxlan,
    tunnel_gateway,
    tunnel_mac,
)
from kindplan.core.tunnelchanges import (
    DelFdb,
    DelNeighbour,
    DelVxlan,
    WriteFdb,
    WriteNeighbour,
    WriteVxlan,
)
from kindplan.errors import InvalidInputError
from kindplan.node.engine import apply_opened, make_plan
from kindplan.node.journal import undo_all
from kindplan.node.ports import NodeHandles

ROOT = Path(__file__).resolve().parents[2]
V4 = (ip_network("10.244.0.0/16"),)
DUAL = (ip_network("10.244.0.0/16"), ip_network("fd00:10:244::/56"))
SEGMENT_A = (ip_network("172.18.0.0/24"), ip_network("fc00:18::/64"))


def _node(name: str, v4: str, v6: str | None, index: int) -> Node:
    ips = (ip_address(v4), *((ip_address(v6),) if v6 else ()))
    cidrs = (ip_network(f"10.244.{index}.0/24"),)
    if v6:
        cidrs += (ip_network(f"fd00:10:244:{index}::/64"),)
    return Node(name, ips, cidrs)


def _snapshot(dual: bool = False, mode: str = "none") -> Snapshot:
    nodes = (
        _node("a1", "172.18.0.2", "fc00:18::2" if dual else None, 1),
        _node("a2", "172.18.0.3", "fc00:18::3" if dual else None, 2),
        _node("b1", "172.19.0.2", "fc00:19::2" if dual else None, 3),
    )
    return Snapshot(Cluster(DUAL if dual else V4, cross_subnet=mode), nodes)


FACTS = HostFacts("eth0", 1500, SEGMENT_A)


def _desired(
    dual: bool = False, mode: str | None = "vxlan", facts: HostFacts = FACTS
) -> DesiredState:
    return compile_desired(_snapshot(dual), "a1", facts, cross_subnet=mode)


def _observed(**fields: Any) -> ObservedState:
    uplink = Link("eth0", 2, 1500, True, ((ip_address("172.18.0.2"), 24),))
    base = ObservedState((uplink,), (), (), (), None)
    return replace(base, **fields)


def test_only_the_peer_off_the_subnet_goes_through_the_tunnel() -> None:
    desired = _desired()
    routes = {str(r.dst): r for r in desired.routes}
    assert routes["10.244.2.0/24"].gateway == ip_address("172.18.0.3")  # a2: direct, as ever
    assert routes["10.244.2.0/24"].ifname == "eth0"
    b1 = routes["10.244.3.0/24"]
    assert (b1.ifname, b1.gateway) == ("kindplan.vxlan4", ip_address("10.244.3.0"))
    assert desired.tunnels == (
        Vxlan(
            "kindplan.vxlan4",
            4,
            ip_address("172.18.0.2"),
            "0a:58:ac:12:00:02",
            1450,
            (ip_address("10.244.1.0"),),
        ),
    )
    assert desired.neighbours == (
        Neighbour("kindplan.vxlan4", ip_address("10.244.3.0"), "0a:58:ac:13:00:02", "b1"),
    )
    assert desired.fdb == (
        FdbEntry("kindplan.vxlan4", "0a:58:ac:13:00:02", ip_address("172.19.0.2"), "b1"),
    )
    assert desired.cni.mtu == 1450  # room for 50 bytes of IPv4 encapsulation


def test_none_mode_and_unknown_networks_keep_the_direct_routes() -> None:
    for desired in (_desired(mode="none"), _desired(facts=HostFacts("eth0", 1500))):
        b1 = next(r for r in desired.routes if str(r.dst) == "10.244.3.0/24")
        assert (b1.ifname, b1.gateway) == ("eth0", ip_address("172.19.0.2"))
        assert desired.neighbours == desired.fdb == ()
        assert desired.cni.mtu == 1500  # no peer needs the tunnel: the pods keep the full MTU
    assert _desired(mode="none").tunnels == ()
    # The snapshot's field stands when no flag is given.
    snapshot = _snapshot(mode="vxlan")
    assert compile_desired(snapshot, "a1", FACTS).neighbours


def test_dual_stack_has_a_device_per_family_and_ipv6_goes_via_the_mac_link_local() -> None:
    desired = _desired(dual=True)
    assert [t.name for t in desired.tunnels] == ["kindplan.vxlan4", "kindplan.vxlan6"]
    v6 = desired.tunnels[1]
    assert v6.local == ip_address("fc00:18::2") and v6.mtu == 1430
    assert v6.addresses == (ip_address("fd00:10:244:1::"),)
    route = next(r for r in desired.routes if str(r.dst) == "fd00:10:244:3::/64")
    mac = tunnel_mac(ip_address("fc00:19::2"))
    assert route.gateway == tunnel_gateway(ip_network("fd00:10:244:3::/64"), mac)
    assert str(route.gateway).startswith("fe80::")
    assert desired.cni.mtu == 1430  # the larger IPv6 overhead counts


def test_tunnel_macs_are_local_unicast_and_a_clash_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for ip in ("172.19.0.2", "fc00:19::2"):
        first = int(tunnel_mac(ip_address(ip))[:2], 16)
        assert first & 1 == 0 and first & 2 == 2
    monkeypatch.setattr(crosssubnet, "tunnel_mac", lambda ip: "0a:00:00:00:00:01")
    with pytest.raises(InvalidInputError, match="the same tunnel MAC"):
        _desired()


def test_a_bare_node_gets_the_device_and_entries_before_the_routes() -> None:
    plan = diff(_desired(), _observed(), conflist_path="/x")
    kinds = [type(c).__name__ for c in plan.changes]
    assert kinds.index("WriteVxlan") < kinds.index("WriteNeighbour") < kinds.index("AddRoute")
    assert kinds.index("WriteFdb") < kinds.index("AddRoute")


def _converged(desired: DesiredState) -> ObservedState:
    return _observed(
        tunnels=desired.tunnels,
        neighbours=tuple(replace(n, peer="") for n in desired.neighbours),
        fdb=tuple(replace(f, peer="") for f in desired.fdb),
        routes=desired.routes,
    )


TUNNEL_KINDS = ("vxlan", "neighbour", "fdb", "route")


def _tunnel_part(plan_changes: tuple[Change, ...]) -> list[str]:
    return [type(c).__name__ for c in plan_changes if c.kind in TUNNEL_KINDS]


def test_a_converged_tunnel_plans_nothing_and_a_moved_peer_switches_in_one_plan() -> None:
    desired = _desired()
    now = _converged(desired)
    assert _tunnel_part(diff(desired, now, conflist_path="/x").changes) == []
    # b1 comes into a1's subnet: its route goes direct, its entries go, after the route
    closer = HostFacts("eth0", 1500, (ip_network("172.16.0.0/12"),))
    plan = diff(_desired(facts=closer), now, conflist_path="/x")
    assert _tunnel_part(plan.changes) == ["ReplaceRoute", "DelNeighbour", "DelFdb"]
    replaced = next(c for c in plan.changes if isinstance(c, ReplaceRoute))
    assert replaced.route.ifname == "eth0"
    # and back out of it: the entries come first, then the route through the tunnel
    back = diff(desired, _converged(_desired(facts=closer)), conflist_path="/x")
    assert _tunnel_part(back.changes) == ["WriteNeighbour", "WriteFdb", "ReplaceRoute"]


def test_none_mode_takes_the_tunnel_away_after_the_routes() -> None:
    now = _converged(_desired())
    plan = diff(_desired(mode="none"), now, conflist_path="/x")
    assert _tunnel_part(plan.changes) == ["ReplaceRoute", "DelNeighbour", "DelFdb", "DelVxlan"]


def test_a_device_of_that_name_without_the_marker_is_left_alone() -> None:
    desired = _desired()
    theirs = replace(desired.tunnels[0], alias="", vni=9)
    plan = diff(desired, _observed(tunnels=(theirs,)), conflist_path="/x")
    assert any("is not kindplan's" in w for w in plan.warnings)
    assert not any(c.kind in ("vxlan", "neighbour", "fdb") for c in plan.changes)
    assert not any(
        isinstance(c, AddRoute) and c.route.ifname == "kindplan.vxlan4" for c in plan.changes
    )
    # and a node that no longer wants a tunnel does not delete it either
    gone = diff(_desired(mode="none"), _observed(tunnels=(theirs,)), conflist_path="/x")
    assert not any(isinstance(c, DelVxlan) for c in gone.changes)


SCHEMA = json.loads((ROOT / "schemas" / "journal.schema.json").read_text())


def _examples() -> list[Change]:
    desired = _desired(dual=True)
    device, neighbour, entry = desired.tunnels[1], desired.neighbours[0], desired.fdb[0]
    return [
        WriteVxlan(device, None),
        WriteVxlan(device, replace(device, mtu=1400)),
        DelVxlan(device),
        WriteNeighbour(neighbour, None),
        WriteNeighbour(neighbour, replace(neighbour, mac="0a:00:00:00:00:09")),
        DelNeighbour(neighbour),
        WriteFdb(entry, None),
        WriteFdb(entry, replace(entry, dst=ip_address("172.19.0.9"))),
        DelFdb(entry),
    ]


@pytest.mark.parametrize("change", _examples(), ids=lambda c: type(c).__name__)
def test_every_tunnel_change_round_trips_through_the_journal(change: Change) -> None:
    line = {"undo": [change.encode()]}
    jsonschema.validate(line, SCHEMA)
    assert decode_change(json.loads(json.dumps(change.encode()))) == change
    assert change.undo() is not None and change.undo() != change
    assert change.describe()


def test_a_journal_naming_another_device_is_refused() -> None:
    encoded = WriteVxlan(_desired().tunnels[0], None).encode()
    encoded["vxlan"]["name"] = "eth0"
    with pytest.raises(ValueError, match="not a device of kindplan's"):
        decode_change(encoded)
    with pytest.raises(ValueError, match="not a MAC address"):
        decode_vxlan({**encoded["vxlan"], "name": "kindplan.vxlan4", "mac": "zz"})


def test_undo_tears_down_routes_then_entries_then_the_device() -> None:
    plan = diff(_desired(), _observed(), conflist_path="/x")
    applied = [c for c in plan.changes if c.kind in ("vxlan", "neighbour", "fdb", "route")]
    undo = [type(c).__name__ for c in undo_all(applied)]
    assert undo.index("DelRoute") < undo.index("DelNeighbour") < undo.index("DelVxlan")
    assert undo.index("DelFdb") < undo.index("DelVxlan")
    teardown = undo_all([DelNeighbour(_desired().neighbours[0]), DelVxlan(_desired().tunnels[0])])
    assert [type(c).__name__ for c in teardown] == ["WriteVxlan", "WriteNeighbour"]


def test_the_guard_counts_tunnel_peers() -> None:
    assert removed_state(DelNeighbour(_desired().neighbours[0]))[TUNNEL_PEERS] == 1
    assert not removed_state(WriteNeighbour(_desired().neighbours[0], None))


def test_apply_through_the_fakes_converges_and_verifies(tmp_path: Path) -> None:
    eth0 = Link("eth0", 2, 1500, True, ((ip_address("172.18.0.2"), 24),), "veth")
    node = FakeNode(FakeKernel([eth0], sysctls={"net.ipv4.ip_forward": "0"}), FakeIptables())
    options = Options("a1", str(tmp_path), cross_subnet="vxlan")
    handles = NodeHandles(node.kernel, node.iptables)
    planned, report = apply_opened(_snapshot(), options, handles)
    assert report is not None and report.ok, report
    assert node.kernel.tunnels["kindplan.vxlan4"].local == ip_address("172.18.0.2")
    again = make_plan(_snapshot(), options, node.kernel, node.iptables)
    assert again.plan.empty
    assert not not_in_effect(planned.plan.changes, again.observed)


def test_trace_shows_the_encapsulation_and_the_decapsulation() -> None:
    from kindplan.core.trace import trace_packet
    from kindplan.core.traceworld import Uplink, build_world, resolve
    from kindplan.inputs.files import load_snapshot

    snapshot = load_snapshot(str(ROOT / "fixtures" / "cross-subnet" / "snapshot.yaml")).snapshot
    networks = (ip_network("172.18.0.0/24"), ip_network("172.19.0.0/24"))
    world = build_world(snapshot, Uplink("eth0", networks))
    source = resolve(snapshot, "default/web-1", "--from")
    target = resolve(snapshot, "default/web-2", "--to")
    trace = trace_packet(world, source, target, 4)
    assert trace.end.kind == "delivered"
    out, into = trace.hops[1], trace.hops[2]
    assert (out.dev, out.gateway) == ("kindplan.vxlan4", ip_address("10.244.3.0"))
    assert (
        "encapsulated: VXLAN VNI 75, outer 172.18.0.2 -> 172.19.0.2 UDP port 4789, out through eth0"
    ) in out.notes
    assert into.namespace.name == "seg-b-1" and into.iif == "kindplan.vxlan4"
    assert any(n.startswith("decapsulated: VXLAN VNI 75") for n in into.notes)
    # the same segment: no tunnel, as ever
    same = trace_packet(world, source, resolve(snapshot, "seg-a-2", "--to"), 4)
    assert all(h.dev != "kindplan.vxlan4" for h in same.hops)
