"""A pod's gateway address goes on its host veth only: never on the uplink, lo or another link."""

from __future__ import annotations

from pathlib import Path

import pytest
from nodes import SEED, Node, build_node, edit_snapshot
from shell import sh

pytestmark = pytest.mark.root


def test_a_pod_on_the_uplink_is_invalid_input_and_nothing_changes(
    netns: str, tmp_path: Path
) -> None:
    build_node(netns, ["172.18.0.12/16"], ["veth4b2c9d10"])
    snapshot = edit_snapshot(
        SEED,
        tmp_path / "uplink.yaml",
        lambda t: t.replace("hostInterface: vetha1079faf", "hostInterface: eth0"),
    )
    node = Node(netns, tmp_path, snapshot, "k8s-guide-worker2")
    before = sh("ip", "-n", netns, "-4", "addr", "show", "eth0")
    for result in (node.plan(), node.apply()):
        assert result.returncode == 65, result.stdout + result.stderr
        assert result.stderr == (
            "error: pod default/web-1: hostInterface eth0 is the node's uplink, not a pod's veth\n"
        )
    assert sh("ip", "-n", netns, "-4", "addr", "show", "eth0") == before
    assert all("proto 75" not in line for line in node.routes())


def test_a_pod_interface_that_is_not_a_veth_is_skipped(netns: str, tmp_path: Path) -> None:
    build_node(netns, ["172.18.0.12/16"], ["veth4b2c9d10"])
    sh("ip", "-n", netns, "link", "add", "vetha1079faf", "type", "bridge")  # a veth's name
    sh("ip", "-n", netns, "link", "set", "vetha1079faf", "up")
    node = Node(netns, tmp_path, SEED, "k8s-guide-worker2")
    plan = node.plan()
    assert "warning: vetha1079faf of pod default/web-1 is bridge, not a veth; skipped" in (
        plan.stdout
    )
    assert "10.244.2.1/32 dev vetha1079faf" not in plan.stdout
    assert node.apply().returncode == 0
    assert "10.244.2.1" not in sh("ip", "-n", netns, "addr", "show", "vetha1079faf")
    assert "10.244.2.1/32" in sh("ip", "-n", netns, "addr", "show", "veth4b2c9d10")
    assert not [line for line in node.routes() if "vetha1079faf" in line]
