"""Options that mean the same everywhere, and messages that name what the user typed (issue 15)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SEED = str(ROOT / "fixtures" / "seed-lab" / "snapshot.yaml")
NODE_LIST = ROOT / "fixtures" / "node-list" / "snapshot.json"
# what the node-list fixture warns about in any case
LIST_WARNINGS = [
    "warning: items[1].status.addresses[1].address (node k8s-guide-worker): second IPv4 "
    "InternalIP 172.18.0.111; using the first, 172.18.0.11",
    "warning: items[3] (node k8s-guide-worker3): no PodCIDR yet; no route to its pods until it "
    "has one",
]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kindplan.cli", *args], capture_output=True, text=True, check=False
    )


def test_plan_takes_the_options_apply_takes(tmp_path: Path) -> None:
    # copied from an apply command line; without --node the host name is the node, and saying
    # that it is (exit 64, before observing anything) shows --state-dir and --lock-timeout parsed
    result = run("plan", SEED, "--state-dir", str(tmp_path), "--lock-timeout", "5")
    host = socket.gethostname()
    assert (result.returncode, result.stdout) == (64, "")
    assert result.stderr == (
        f"error: --node: not given, so it is this machine's host name {host!r}, and there is no "
        f"node named {host!r} in the snapshot (k8s-guide-control-plane, k8s-guide-worker, "
        "k8s-guide-worker2); give --node NAME\n"
    )


def test_render_refuses_a_kernel_route_protocol_as_plan_does(tmp_path: Path) -> None:
    render = run(
        "render", SEED, "--node", "k8s-guide-worker2", "--out", str(tmp_path), "--route-proto", "2"
    )
    plan = run("plan", SEED, "--node", "k8s-guide-worker2", "--route-proto", "2")
    assert render.returncode == plan.returncode == 64
    reason = "2 is used by the kernel or other routing software"
    assert reason in render.stderr and reason in plan.stderr
    assert not tmp_path.joinpath("routes.batch").exists()


def test_check_counts_an_empty_extra_file(tmp_path: Path) -> None:
    assert run("render", SEED, "--all-nodes", "--out", str(tmp_path)).returncode == 0
    (tmp_path / "k8s-guide-worker" / "empty.rules").touch()
    result = run("render", SEED, "--all-nodes", "--check", str(tmp_path))
    assert result.returncode == 1
    assert result.stdout == f"Only in {tmp_path}: k8s-guide-worker/empty.rules (empty)\n"


@pytest.mark.parametrize(
    ("subnets", "error"),
    [
        (  # the flag, not cluster.podSubnets[0]; no PodCIDR is said to be outside it
            "10.244.0.0/166",
            "'10.244.0.0/166' is not a CIDR (a prefix length is 0 to 32 for IPv4)",
        ),
        (
            "10.244.0.0/16,10.245.0.0/16",
            "10.245.0.0/16 is a second IPv4 pod subnet besides 10.244.0.0/16 "
            "(kindnet takes one per family)",
        ),
    ],
)
def test_a_pod_subnet_problem_names_the_flag_once(subnets: str, error: str) -> None:
    result = run("validate", str(NODE_LIST), "--pod-subnet", subnets)
    assert result.returncode == 65
    assert result.stderr.splitlines() == [f"error: --pod-subnet: {error}"]


def test_a_dual_stack_pod_subnet_without_ipv6_nodes_is_a_warning() -> None:
    result = run("validate", str(NODE_LIST), "--pod-subnet", "10.244.0.0/16,fd00:10:244::/56")
    assert (result.returncode, result.stdout) == (0, "ok: 4 nodes, 0 pods, dual-stack\n")
    assert result.stderr.splitlines() == [
        *LIST_WARNINGS,
        "warning: --pod-subnet: fd00:10:244::/56 is IPv6 but no node has an IPv6 PodCIDR; "
        "kindplan still writes the IPv6 SNAT chain",
    ]


def test_one_node_object_from_kubectl_get_node(tmp_path: Path) -> None:
    node = json.loads(NODE_LIST.read_text())["items"][0]  # kubectl get node NAME -o json
    path = tmp_path / "node.json"
    path.write_text(json.dumps(node))
    result = run("validate", str(path), "--pod-subnet", "10.244.0.0/16")
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        "ok: 1 node, 0 pods, IPv4\n",
        "",
    )
    node["spec"]["podCIDRs"] = ["10.245.0.0/24"]
    path.write_text(json.dumps(node))
    bad = run("validate", str(path), "--pod-subnet", "10.244.0.0/16")
    assert bad.returncode == 65
    assert bad.stderr == (  # places in the Node itself: there is no items[0]
        "error: spec.podCIDRs[0]: 10.245.0.0/24 is outside the cluster's pod subnet 10.244.0.0/16\n"
    )
