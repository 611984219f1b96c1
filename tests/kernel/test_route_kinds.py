"""Every kind of route the kernel can hold at a destination kindplan routes: observed, shown as
it is, a conflict while foreign, replaced when kindplan's own, and restored exactly by rollback.
"""

from __future__ import annotations

import operator
import time

import pytest
from nodes import Node, kindplan
from shell import sh
from test_converged import fast_path_taken

from kindplan.node.kernel import Kernel
from kindplan.node.netns import enter_netns

pytestmark = pytest.mark.root

PEER = "10.244.1.0/24"  # k8s-guide-worker's PodCIDR, via 172.18.0.11, seen from worker2
PEER_ROUTE = "10.244.1.0/24 via 172.18.0.11 dev eth0 proto 75 "


def show(node: Node, dst: str, *family: str) -> list[str]:
    return sh("ip", "-n", node.ns, *family, "route", "show", dst, "proto", "all").splitlines()


def rollback(node: Node) -> None:
    back = kindplan("rollback", "--netns", node.ns, "--state-dir", str(node.tmp / "state"))
    assert back.returncode == 0, back.stdout + back.stderr


def adopt_then_rollback(node: Node, dst: str, *family: str) -> None:
    """--adopt replaces the foreign route; rollback puts it back exactly as it was."""
    before = show(node, dst, *family)
    adopted = node.apply("--adopt")
    assert adopted.returncode == 0, adopted.stdout + adopted.stderr
    assert show(node, dst, *family) != before
    assert node.plan("--detailed-exitcode").returncode == 0
    rollback(node)
    assert show(node, dst, *family) == before


@pytest.mark.parametrize("kind", ["blackhole", "unreachable", "prohibit", "throw"])
def test_a_foreign_route_of_any_type_is_a_conflict(seed_worker2: Node, kind: str) -> None:
    node = seed_worker2
    sh("ip", "-n", node.ns, "route", "add", kind, PEER)
    plan = node.plan("--detailed-exitcode")
    assert plan.returncode == 2
    assert f"conflict: route {PEER} is foreign ({kind} proto 3)" in plan.stdout
    assert f"+ route {PEER}" not in plan.stdout
    refused = node.apply()
    assert refused.returncode == 1
    assert "File exists" not in refused.stdout + refused.stderr
    assert show(node, PEER) == [f"{kind} {PEER} "]  # ip hides proto boot
    adopt_then_rollback(node, PEER)


def test_a_blackhole_of_kindplans_own_protocol_is_replaced(seed_worker2: Node) -> None:
    node = seed_worker2
    sh("ip", "-n", node.ns, "route", "add", "blackhole", PEER, "proto", "75")
    plan = node.plan()
    assert f"~ route {PEER} via 172.18.0.11 dev eth0 proto 75" in plan.stdout
    assert "was blackhole proto 75" in plan.stdout
    assert node.apply().returncode == 0
    assert show(node, PEER) == [PEER_ROUTE]


def test_an_ipv6_blackhole_is_a_conflict(dual_worker: Node) -> None:
    node, dst = dual_worker, "fd00:10:244:2::/64"
    sh("ip", "-n", node.ns, "-6", "route", "add", "blackhole", dst, "metric", "1024")
    plan = node.plan("--detailed-exitcode")
    assert plan.returncode == 2
    assert f"conflict: route {dst} is foreign (blackhole proto 3 metric 1024)" in plan.stdout
    adopt_then_rollback(node, dst, "-6")


def test_multipath_routes_are_shown_with_their_paths_and_restored(seed_worker2: Node) -> None:
    node = seed_worker2
    sh("ip", "-n", node.ns, "route", "add", PEER, "proto", "static",
       "nexthop", "via", "172.18.0.10", "dev", "eth0", "weight", "2",
       "nexthop", "via", "172.18.0.11", "dev", "eth0")  # fmt: skip
    plan = node.plan()
    assert (
        f"conflict: route {PEER} is foreign (proto 4 nexthop via 172.18.0.10 dev eth0 weight 2 "
        "nexthop via 172.18.0.11 dev eth0 weight 1)"
    ) in plan.stdout
    assert "dev ''" not in plan.stdout and "dev ?" not in plan.stdout
    adopt_then_rollback(node, PEER)


def test_ipv6_multipath_is_restored(dual_worker: Node) -> None:
    node, dst = dual_worker, "fd00:10:244:2::/64"
    sh("ip", "-n", node.ns, "-6", "route", "add", dst, "proto", "static",
       "nexthop", "via", "fc00:f853:ccd:e793::4", "dev", "eth0",
       "nexthop", "via", "fc00:f853:ccd:e793::5", "dev", "eth0")  # fmt: skip
    plan = node.plan()
    assert "nexthop via fc00:f853:ccd:e793::4 dev eth0 weight 1" in plan.stdout
    adopt_then_rollback(node, dst, "-6")


def test_a_route_through_a_nexthop_object_is_restored(seed_worker2: Node) -> None:
    node = seed_worker2
    sh("ip", "-n", node.ns, "nexthop", "add", "id", "7", "via", "172.18.0.9", "dev", "eth0")
    sh("ip", "-n", node.ns, "route", "add", PEER, "nhid", "7")
    plan = node.plan()
    # As ip(8) shows it: the object's id, then its gateway and device.
    assert f"conflict: route {PEER} is foreign (nhid 7 via 172.18.0.9 dev eth0 proto 3)" in (
        plan.stdout
    )
    adopt_then_rollback(node, PEER)


def test_a_foreign_nhid_route_to_the_right_gateway_is_right(seed_worker2: Node) -> None:
    """Where its traffic goes is what counts: kindplan's plain route through the same gateway."""
    node = seed_worker2
    sh("ip", "-n", node.ns, "nexthop", "add", "id", "7", "via", "172.18.0.11", "dev", "eth0")
    sh("ip", "-n", node.ns, "route", "add", PEER, "nhid", "7")
    plan = node.plan()
    assert "conflict" not in plan.stdout
    assert f"{PEER} (peer k8s-guide-worker, proto 3 -> 75)" in plan.stdout + plan.stderr
    adopt_then_rollback(node, PEER)


def test_an_ipv4_route_via_an_ipv6_gateway_is_restored(dual_worker: Node) -> None:
    node, dst = dual_worker, "10.244.2.0/24"
    sh("ip", "-n", node.ns, "route", "add", dst, "via", "inet6", "fc00:f853:ccd:e793::4",
       "dev", "eth0")  # fmt: skip
    plan = node.plan()
    assert f"conflict: route {dst} is foreign (via inet6 fc00:f853:ccd:e793::4 dev eth0" in (
        plan.stdout
    )
    adopt_then_rollback(node, dst)


def test_a_tos_route_is_not_in_the_way_of_the_tos_0_route(seed_worker2: Node) -> None:
    node = seed_worker2
    sh("ip", "-n", node.ns, "route", "add", PEER, "tos", "0x10", "via", "172.18.0.77")
    plan = node.plan()
    assert "conflict" not in plan.stdout
    assert f"+ route {PEER_ROUTE.strip()} (peer k8s-guide-worker)" in plan.stdout
    assert node.apply().returncode == 0
    assert node.plan("--detailed-exitcode").returncode == 0
    assert sorted(show(node, PEER)) == sorted(
        [PEER_ROUTE, f"{PEER} tos 0x10 via 172.18.0.77 dev eth0 "]
    )


def test_a_lower_metric_ipv6_route_shadowing_kindplans_is_a_conflict(dual_worker: Node) -> None:
    node, dst = dual_worker, "fd00:10:244:2::/64"
    assert node.apply().returncode == 0
    sh("ip", "-n", node.ns, "-6", "route", "add", dst, "via", "fc00:f853:ccd:e793::77",
       "dev", "eth0", "metric", "256")  # fmt: skip
    plan = node.plan("--detailed-exitcode")
    assert plan.returncode == 2
    assert (
        f"conflict: route {dst} metric 256 is foreign (via fc00:f853:ccd:e793::77 dev eth0 "
        "proto 3) and shadows kindplan's"
    ) in plan.stdout
    assert node.apply().returncode == 1
    before = show(node, dst, "-6")
    adopted = node.apply("--adopt")
    assert adopted.returncode == 0, adopted.stdout + adopted.stderr
    assert show(node, dst, "-6") == [
        f"{dst} via fc00:f853:ccd:e793::4 dev eth0 proto 75 metric 1024 pref medium"
    ]
    rollback(node)
    assert show(node, dst, "-6") == before


def test_an_expiring_ipv6_route_leaves_the_converged_node_converged(dual_worker: Node) -> None:
    """An RA-learned route's expiry counts down between two dumps of an unchanged table: the
    route memo and the converged record must not see that as a change."""
    node = dual_worker
    assert node.apply().returncode == 0
    sh("ip", "-n", node.ns, "-6", "route", "add", "2001:db8:5::/64", "via",
       "fc00:f853:ccd:e793::1", "dev", "eth0", "proto", "ra", "expires", "600")  # fmt: skip
    assert node.apply().returncode == 0  # converged: recorded with the expiring route present
    with enter_netns(node.ns):
        kernel = Kernel()
        try:
            kernel.read_links()
            first, digest = kernel.read_routes(), kernel.route_digest()
            time.sleep(1.1)  # the expiry is counted in clock ticks: it has changed since
            again = kernel.read_routes()  # the parse memo's very Route objects
            assert again == first and all(map(operator.is_, again, first))
            assert kernel.route_digest() == digest
        finally:
            kernel.close()
    assert "expires" in "".join(show(node, "2001:db8:5::/64", "-6"))
    assert fast_path_taken(node), "the converged record of the apply still holds"
