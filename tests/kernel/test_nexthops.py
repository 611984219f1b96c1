"""Peer routes through nexthop objects (--route-style nexthop) in real namespaces: what the kernel
holds, zero writes when converged, a switch between styles both ways with an exact rollback, an
id someone else holds, foreign routes of either style, a stale object, and the kernel's own
route lookup.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from nodes import SEED, Node, kernel_events, kindplan
from shell import sh
from test_watch import PEERS, seed, watch_args, with_nodes
from watcher import Watcher, has_route, replace_file, wait_until

pytestmark = pytest.mark.root

# Seen from dual-worker (fixtures/dual-stack): dual-control-plane's and dual-worker2's PodCIDRs.
# Ids (core/nexthops.py): protocol 75 << 24, the IPv6 bit 1 << 23, the PodCIDR's index.
V4_IDS = {"10.244.0.0/24": 75 << 24, "10.244.2.0/24": (75 << 24) + 2}
V6_BASE = (75 << 24) + (1 << 23)
V6_IDS = {"fd00:10:244::/64": V6_BASE, "fd00:10:244:2::/64": V6_BASE + 2}
GATEWAYS = {
    "10.244.0.0/24": "172.18.0.2",
    "10.244.2.0/24": "172.18.0.4",
    "fd00:10:244::/64": "fc00:f853:ccd:e793::2",
    "fd00:10:244:2::/64": "fc00:f853:ccd:e793::4",
}
PEER = "10.244.2.0/24"


def nexthops(node: Node) -> list[str]:
    return [line.strip() for line in sh("ip", "-n", node.ns, "nexthop", "show").splitlines()]


def peer_routes(node: Node, *family: str) -> list[str]:
    return [
        line.strip()
        for line in sh("ip", "-n", node.ns, *family, "route", "show", "proto", "75").splitlines()
        if " via " in line
    ]


def ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_nexthop_style_routes_each_peer_through_its_object(dual_worker: Node) -> None:
    node = dual_worker
    ok(node.apply("--route-style", "nexthop"))
    assert nexthops(node) == [
        f"id {ident} via {GATEWAYS[dst]} dev eth0 scope link proto 75"
        for dst, ident in [*V4_IDS.items(), *V6_IDS.items()]
    ]
    assert peer_routes(node) == [
        f"{dst} nhid {ident} via {GATEWAYS[dst]} dev eth0" for dst, ident in V4_IDS.items()
    ]
    assert peer_routes(node, "-6") == [
        f"{dst} nhid {ident} via {GATEWAYS[dst]} dev eth0 metric 1024 pref medium"
        for dst, ident in V6_IDS.items()
    ]
    # The kernel's own lookup goes where kindplan's trace says, through the object.
    assert "via 172.18.0.4 dev eth0" in sh("ip", "-n", node.ns, "route", "get", "10.244.2.9")
    assert "via fc00:f853:ccd:e793::4 dev eth0" in sh(
        "ip", "-n", node.ns, "route", "get", "fd00:10:244:2::9"
    )
    # Converged: no change planned, and an apply writes nothing.
    assert node.plan("--route-style", "nexthop", "--detailed-exitcode").returncode == 0
    with kernel_events(node.ns) as events:
        ok(node.apply("--route-style", "nexthop"))
    assert events == []


def test_a_switch_between_styles_is_one_apply_and_rolls_back_exactly(dual_worker: Node) -> None:
    node = dual_worker
    ok(node.apply("--route-style", "plain"))
    plain = (peer_routes(node), peer_routes(node, "-6"))
    assert all("nhid" not in r for r in plain[0] + plain[1])
    switched = node.apply("--route-style", "nexthop")
    ok(switched)
    lines = switched.stdout.splitlines()
    first_route = next(i for i, line in enumerate(lines) if "changed route" in line)
    assert all("added nexthop" in line for line in lines[first_route - 4 : first_route])
    via = (peer_routes(node), peer_routes(node, "-6"), nexthops(node))
    assert len(via[2]) == 4 and all("nhid" in r for r in via[0] + via[1])
    back = node.apply("--route-style", "plain")  # the routes go plain, then their objects go
    ok(back)
    assert (peer_routes(node), peer_routes(node, "-6")) == plain
    assert nexthops(node) == []
    assert back.stdout.index("changed route") < back.stdout.index("removed nexthop")
    # Rollback, one generation at a time: exactly the nexthop style, then exactly plain.
    state = str(node.tmp / "state")
    ok(node_rollback(node, state))
    assert (peer_routes(node), peer_routes(node, "-6"), nexthops(node)) == via
    ok(node_rollback(node, state))
    assert (peer_routes(node), peer_routes(node, "-6")) == plain
    assert nexthops(node) == []


def node_rollback(node: Node, state: str) -> subprocess.CompletedProcess[str]:
    return kindplan("rollback", "--netns", node.ns, "--state-dir", state)


def test_an_id_held_by_anothers_object_is_left_alone(dual_worker: Node) -> None:
    node = dual_worker
    taken = V4_IDS[PEER]
    sh("ip", "-n", node.ns, "nexthop", "add", "id", str(taken), "via", "172.18.0.9", "dev", "eth0")
    applied = node.apply("--route-style", "nexthop")
    ok(applied)
    assert f"nexthop id {taken} is taken by another's object" in applied.stderr + applied.stdout
    assert f"id {taken} via 172.18.0.9 dev eth0 scope link" in nexthops(node)
    assert f"{PEER} via 172.18.0.4 dev eth0" in peer_routes(node)  # plain instead
    assert node.plan("--route-style", "nexthop", "--detailed-exitcode").returncode == 0


def test_a_foreign_plain_route_where_kindplan_wants_an_nhid_one(dual_worker: Node) -> None:
    """kindnetd's route (plain, proto boot) is right where traffic goes: named, not a conflict;
    --adopt takes it over as kindplan's nhid route, and rollback puts it back."""
    node = dual_worker
    sh("ip", "-n", node.ns, "route", "add", PEER, "via", "172.18.0.4", "dev", "eth0")
    plan = node.plan("--route-style", "nexthop")
    assert "correct but not owned by kindplan" in plan.stdout
    assert "conflict" not in plan.stdout
    ok(node.apply("--route-style", "nexthop", "--adopt"))
    assert f"{PEER} nhid {V4_IDS[PEER]} via 172.18.0.4 dev eth0" in peer_routes(node)
    ok(node_rollback(node, str(node.tmp / "state")))
    assert (
        sh("ip", "-n", node.ns, "route", "show", PEER).strip() == f"{PEER} via 172.18.0.4 dev eth0"
    )
    assert nexthops(node) == []


def test_a_foreign_nhid_route_where_kindplan_wants_a_plain_one(dual_worker: Node) -> None:
    node = dual_worker
    sh("ip", "-n", node.ns, "nexthop", "add", "id", "7", "via", "172.18.0.9", "dev", "eth0")
    sh("ip", "-n", node.ns, "route", "add", PEER, "nhid", "7")
    plan = node.plan("--route-style", "plain")
    assert f"conflict: route {PEER} is foreign (nhid 7 via 172.18.0.9 dev eth0 proto 3)" in (
        plan.stdout
    )
    ok(node.apply("--route-style", "plain", "--adopt"))
    assert f"{PEER} via 172.18.0.4 dev eth0" in peer_routes(node)
    assert "id 7 via 172.18.0.9 dev eth0 scope link" in nexthops(node)  # not ours
    ok(node_rollback(node, str(node.tmp / "state")))
    assert sh("ip", "-n", node.ns, "route", "show", PEER).strip() == (
        f"{PEER} nhid 7 via 172.18.0.9 dev eth0"
    )


def test_a_stale_object_goes_unless_a_foreign_route_uses_it(dual_worker: Node) -> None:
    node = dual_worker
    ok(node.apply("--route-style", "nexthop"))
    used = V4_IDS["10.244.0.0/24"]
    sh("ip", "-n", node.ns, "route", "add", "192.0.2.0/24", "nhid", str(used))
    applied = node.apply("--route-style", "plain")
    ok(applied)
    said = applied.stdout + applied.stderr
    assert "foreign route 192.0.2.0/24 (proto 3) uses it: left in place" in said
    assert [n.split()[1] for n in nexthops(node)] == [str(used)]
    assert "192.0.2.0/24 nhid" in sh("ip", "-n", node.ns, "route", "show", "192.0.2.0/24")


def test_a_peers_new_internal_ip_is_one_object_write(dual_worker: Node, tmp_path: Path) -> None:
    node = dual_worker
    ok(node.apply("--route-style", "nexthop"))
    moved = tmp_path / "moved.yaml"
    moved.write_text(node.snapshot.read_text().replace("172.18.0.4", "172.18.0.44"))
    plan = node.plan("--route-style", "nexthop", snapshot=moved)
    assert "Plan: 0 to add, 1 to change, 0 to delete." in plan.stdout
    assert f"~ nexthop id {V4_IDS[PEER]} via 172.18.0.44 dev eth0 proto 75" in plan.stdout
    ok(node.apply("--route-style", "nexthop", snapshot=moved))
    assert f"{PEER} nhid {V4_IDS[PEER]} via 172.18.0.44 dev eth0" in peer_routes(node)


def test_the_deletion_guard_holds_objects_back_with_their_routes(seed_worker2: Node) -> None:
    """A node list that lost every peer: the loop holds back the peer routes and their objects
    (deleting an object deletes the routes through it) until the rounds agree."""
    node, ns = seed_worker2, seed_worker2.ns
    snapshot = node.tmp / "snapshot.yaml"
    snapshot.write_text(SEED.read_text())
    args = watch_args(node, snapshot, "--interval", "300ms", "--hold-rounds", "3")
    loop = Watcher([*args, "--route-style", "nexthop"])
    try:
        line = loop.wait_for(r"round 1: applied")
        assert len(nexthops(node)) == 2
        own = [n for n in seed()["nodes"] if n["name"] == node.name]
        replace_file(snapshot, with_nodes(seed(), own))
        for streak in (1, 2):
            line = loop.wait_for(
                r"deletion guard: holding back the removal of 2 of 2 peer route\(s\), 2 of 2 "
                rf"nexthop object\(s\) .*\(asked {streak} times? so far\)",
                after=line,
            )
            assert all(has_route(ns, dst) for dst in PEERS) and len(nexthops(node)) == 2
        loop.wait_for(r"asked for 3 rounds in a row; applying the deletions", after=line)
        wait_until(lambda: not any(has_route(ns, dst) for dst in PEERS) and not nexthops(node))
    finally:
        loop.kill()


def test_an_object_changed_under_a_converged_node_is_seen_and_repaired(dual_worker: Node) -> None:
    """The converged record's digest covers the objects as dumped: an object of kindplan's
    pointed elsewhere by someone is not answered from the record, and is written back."""
    from test_converged import record_path

    from kindplan.core.model import Options
    from kindplan.core.planview import format_plan
    from kindplan.node.converged import Remember, converged_record, inputs_digest

    node = dual_worker
    ok(node.apply("--route-style", "nexthop"))
    options = Options(node=node.name, conf_dir=str(node.tmp / "cni"), route_style="nexthop")
    inputs = inputs_digest(node.snapshot.read_bytes(), (), options, node.ns)

    def fast() -> bool:
        remember = Remember(record_path(node), inputs, "", format_plan)
        return converged_record(node.ns, options, remember, lock_timeout=5) is not None

    assert fast()
    ident = str(V4_IDS[PEER])
    sh("ip", "-n", node.ns, "nexthop", "replace", "id", ident, "via", "172.18.0.9", "dev", "eth0",
       "proto", "75")  # fmt: skip
    assert not fast()
    applied = node.apply("--route-style", "nexthop")
    ok(applied)
    assert f"changed nexthop id {ident} via 172.18.0.4 dev eth0 proto 75" in applied.stdout
    assert f"{PEER} nhid {ident} via 172.18.0.4 dev eth0" in peer_routes(node)
    # An object alone (no route through it, so the route table is the same): kindplan's, stale.
    assert fast()
    stray = str((75 << 24) + 99)
    sh("ip", "-n", node.ns, "nexthop", "add", "id", stray, "via", "172.18.0.9", "dev", "eth0",
       "proto", "75")  # fmt: skip
    assert not fast()
    applied = node.apply("--route-style", "nexthop")
    ok(applied)
    assert f"removed nexthop id {stray} via 172.18.0.9 dev eth0 proto 75" in applied.stdout


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_one_family_apply_switch_and_rollback(family: str, netns: str, tmp_path: Path) -> None:
    """The IPv4 seed node and an IPv6-only node: objects and nhid routes, nothing written when
    converged, plain and back, and each generation rolled back exactly."""
    from nodes import build_node

    if family == "ipv4":
        build_node(netns, ["172.18.0.12/16"], [])
        node, flag = Node(netns, tmp_path, SEED, "k8s-guide-worker2"), "-4"
    else:
        build_node(netns, ["fc00:f853:ccd:e793::3/64"], [])
        v6 = SEED.parents[1] / "ipv6-only" / "snapshot.yaml"
        node, flag = Node(netns, tmp_path, v6, "v6-worker"), "-6"
    ok(node.apply("--route-style", "nexthop"))
    via, objects = peer_routes(node, flag), nexthops(node)
    assert len(via) == len(objects) == 2 and all(" nhid " in r for r in via)
    with kernel_events(node.ns) as events:
        ok(node.apply("--route-style", "nexthop"))
    assert events == []
    ok(node.apply("--route-style", "plain"))
    plain = peer_routes(node, flag)
    assert nexthops(node) == [] and not any(" nhid " in r for r in plain)
    state = str(node.tmp / "state")
    ok(node_rollback(node, state))
    assert (peer_routes(node, flag), nexthops(node)) == (via, objects)
    ok(node_rollback(node, state))
    assert peer_routes(node, flag) == [] and nexthops(node) == []


def test_rollback_leaves_an_object_someone_changed_since(dual_worker: Node, tmp_path: Path) -> None:
    """Compare-and-swap: the apply moved a peer's object; someone pointed it elsewhere since;
    rollback leaves it, says how to finish by hand, and undoes the rest."""
    node = dual_worker
    ok(node.apply("--route-style", "nexthop"))
    moved = tmp_path / "moved.yaml"
    moved.write_text(node.snapshot.read_text().replace("172.18.0.4", "172.18.0.44"))
    ok(node.apply("--route-style", "nexthop", snapshot=moved))
    ident = str(V4_IDS[PEER])
    sh("ip", "-n", node.ns, "nexthop", "replace", "id", ident, "via", "172.18.0.9", "dev", "eth0",
       "proto", "75")  # fmt: skip
    back = node_rollback(node, str(node.tmp / "state"))
    said = back.stdout + back.stderr
    assert "if the old object should come back: ip nexthop replace id " + ident in said
    assert f"id {ident} via 172.18.0.9 dev eth0 scope link proto 75" in nexthops(node)
