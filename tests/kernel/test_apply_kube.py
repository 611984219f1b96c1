"""`kindplan plan|apply --kube` run once: one list of the nodes from the API, one plan or apply,
the exit status of any one-shot command. Against the fake API server (tests/kubeapi.py), which
lives in the node's namespace with kindplan (run by `ip netns exec`), so the HTTP traffic stays
on the namespace's loopback.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kubeapi import PATHS, FakeKubeAPI, load
from watcher import has_route

pytestmark = pytest.mark.root

NODE = "kind-worker"  # 172.18.0.2, PodCIDR 10.244.2.0/24 in tests/data/kube/nodelist.json
PEERS = {"10.244.0.0/24": "172.18.0.3", "10.244.1.0/24": "172.18.0.4"}


def run(
    netns: str, tmp_path: Path, api: FakeKubeAPI, command: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    """`kindplan COMMAND --kube` for kind-worker, inside `netns` (the node it works on)."""
    args = [command, "--kube", "--kubeconfig", str(api.write_kubeconfig(tmp_path / "kubeconfig"))]
    args += ["--node", NODE, "--conf-dir", str(tmp_path / "cni")]
    args += ["--state-dir", str(tmp_path / "state"), "--cni-cache-dir", str(tmp_path / "none")]
    return subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-m", "kindplan.cli", *args, *extra],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def worker3(version: str) -> dict[str, Any]:
    node = copy.deepcopy(load("nodelist.json")["items"][1])
    node["metadata"].update(name="kind-worker3", resourceVersion=version)
    node["spec"].update(podCIDR="10.244.3.0/24", podCIDRs=["10.244.3.0/24"])
    node["status"]["addresses"] = [{"type": "InternalIP", "address": "172.18.0.5"}]
    return {"type": "ADDED", "object": {"kind": "Node", "apiVersion": "v1", **node}}


def test_apply_kube_once_lists_the_nodes_and_converges(
    netns: str, api: FakeKubeAPI, tmp_path: Path
) -> None:
    subnet = ("--pod-subnet", "10.244.0.0/16")
    planned = run(netns, tmp_path, api, "plan", *subnet, "--detailed-exitcode")
    assert planned.returncode == 2, planned.stderr
    assert "+ route 10.244.0.0/24 via 172.18.0.3" in planned.stdout

    applied = run(netns, tmp_path, api, "apply", *subnet)
    assert applied.returncode == 0, applied.stderr
    assert applied.stderr == ""
    for dst, via in PEERS.items():
        assert f"route {dst} via {via} dev eth0 proto 75" in applied.stdout
        assert has_route(netns, dst)
    # the API's policy default/web-allow-80 selects no pod here: a table, its sets empty
    assert "added nftables: table inet kindplan-policy (new," in applied.stdout
    assert "Apply complete: 5 to add, 1 to change, 0 to delete." in applied.stdout
    assert (tmp_path / "cni" / "10-kindnet.conflist").exists()
    # One list of each kind per command (a consistent read, as kubectl's), no watch.
    nodes = api.lists("nodes")
    assert len(nodes) == 2 and all("resourceVersion" not in r.query for r in nodes)
    assert [r.path for r in api.requests] == list(PATHS) * 2
    assert all(r.authorization == f"Bearer {api.token}" for r in api.requests)

    again = run(netns, tmp_path, api, "apply", *subnet)
    assert (again.returncode, again.stdout, again.stderr) == (0, "No changes.\n", "")

    api.send("nodes", worker3("2001"))  # a node joined: the next apply routes it
    joined = run(netns, tmp_path, api, "apply", *subnet)
    assert joined.returncode == 0, joined.stderr
    assert "route 10.244.3.0/24 via 172.18.0.5 dev eth0 proto 75" in joined.stdout
    assert has_route(netns, "10.244.3.0/24")


def test_plan_kube_saved_and_applied_with_the_subnet_inferred(
    netns: str, api: FakeKubeAPI, tmp_path: Path
) -> None:
    """Without --pod-subnet the subnet is inferred and said; a saved plan keeps the node list."""
    saved = tmp_path / "plan.json"
    planned = run(netns, tmp_path, api, "plan", "--out", str(saved))
    assert planned.returncode == 0, planned.stderr
    assert planned.stderr.startswith(
        "warning: --pod-subnet: not given; inferred 10.244.0.0/22 (the smallest cover of the "
        "nodes' PodCIDRs)"
    )
    api.stop()  # the saved plan holds the nodes: applying it asks the API nothing
    command = ["ip", "netns", "exec", netns, sys.executable, "-m", "kindplan.cli", "apply"]
    applied = subprocess.run(
        [*command, "--plan", str(saved), "--state-dir", str(tmp_path / "state")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert applied.returncode == 0, applied.stderr
    assert all(has_route(netns, dst) for dst in PEERS)


def test_unreachable_api_server_fails_in_one_line_and_changes_nothing(
    netns: str, api: FakeKubeAPI, tmp_path: Path
) -> None:
    api.stop()  # its port is closed now: connections are refused
    result = run(netns, tmp_path, api, "apply", "--pod-subnet", "10.244.0.0/16")
    assert result.returncode == 1
    port = api.url.rpartition(":")[2]
    assert result.stderr == (
        f"error: kubernetes API ({api.url}): 127.0.0.1:{port}: cannot connect: Connection refused\n"
    )
    assert result.stdout == ""
    assert not any(has_route(netns, dst) for dst in PEERS)
    assert not (tmp_path / "cni").exists()
