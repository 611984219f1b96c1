"""The lab with peer routes through nexthop objects (lab up --route-style nexthop): every check
passes, no node has a change left, lab trace agrees with the kernel's `ip route get` hop by hop,
and a take-over from kindnetd (its plain routes) ends in kindplan's nhid routes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from shell import sh
from test_lab import NODES, Lab, assert_up_and_clean

pytestmark = pytest.mark.root


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    made = Lab(tmp_path / "labs")
    yield made
    made.run("down")


def test_the_dual_stack_lab_through_nexthop_objects(lab: Lab) -> None:
    assert_up_and_clean(lab, "--dual-stack", "--route-style", "nexthop")
    worker = lab.ns("k8s-guide-worker")
    routes = sh("ip", "-n", worker, "route", "show", "proto", "75")
    assert f"10.244.0.0/24 nhid {75 << 24} via 172.18.0.10 dev eth0" in routes
    assert f"id {(75 << 24) + 2} via 172.18.0.12 dev eth0" in sh("ip", "-n", worker, "nexthop")
    for family in ("4", "6"):
        trace = lab.run("trace", "web-2-0", "web-0-0", "--family", family)
        assert trace.returncode == 0, trace.stdout + trace.stderr
        assert "plan and kernel agree at every hop" in trace.stdout


def test_take_over_from_kindnetd_into_nexthop_objects(lab: Lab) -> None:
    up = lab.run("up", "--kindnetd", "--route-style", "nexthop")
    assert up.returncode == 0, up.stderr
    plan = lab.run("plan", "k8s-guide-worker").stdout
    # kindnetd's plain routes lead where kindplan's nhid ones would: named, not conflicts
    assert "10.244.0.0/24 (peer k8s-guide-control-plane, proto 3 -> 75)" in plan
    assert "conflict" not in plan
    for node in NODES:
        applied = lab.run("apply", node, "--adopt")
        assert applied.returncode == 0, applied.stdout + applied.stderr
    check = lab.run("check")
    assert check.returncode == 0, check.stdout
    worker = lab.ns("k8s-guide-worker")
    assert f"10.244.0.0/24 nhid {75 << 24} via 172.18.0.10 dev eth0 proto 75" in sh(
        "ip", "-n", worker, "route", "show"
    )
    for node in NODES:
        assert lab.run("plan", node, "--detailed-exitcode").returncode == 0
