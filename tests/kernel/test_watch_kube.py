"""`kindplan apply --watch --kube` as a real process, against the fake API server (tests/kubeapi.py,
hand-assembled responses in kube-apiserver's wire format: no real API server can run here).

The node namespace holds everything: the fake server (started from this thread while inside it)
and the loop (run with `ip netns exec`), so the HTTP traffic stays on the namespace's loopback.
"""

from __future__ import annotations

import copy
import signal
from pathlib import Path
from typing import Any

import pytest
from kubeapi import FakeKubeAPI, load
from watcher import Watcher, has_route, wait_until

pytestmark = pytest.mark.root

NODE = "kind-worker"  # 172.18.0.2, PodCIDR 10.244.2.0/24 in tests/data/kube/nodelist.json
PEERS = {"10.244.0.0/24": "172.18.0.3", "10.244.1.0/24": "172.18.0.4"}


def kube_loop(api: FakeKubeAPI, netns: str, tmp_path: Path) -> Watcher:
    """`kindplan apply --watch --kube` for kind-worker, run inside `netns` (a 60 s interval)."""
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
    args = ["--kube", "--kubeconfig", str(kubeconfig), "--node", NODE]
    args += ["--pod-subnet", "10.244.0.0/16", "--interval", "60s"]
    args += ["--conf-dir", str(tmp_path / "cni"), "--state-dir", str(tmp_path / "state")]
    args += ["--cni-cache-dir", str(tmp_path / "no-cni-cache")]
    return Watcher(args, in_netns=netns)


def node_event(kind: str, name: str, ip: str, cidr: str, version: str) -> dict[str, Any]:
    node = copy.deepcopy(load("nodelist.json")["items"][1])
    node["metadata"].update(name=name, resourceVersion=version)
    node["spec"].update(podCIDR=cidr, podCIDRs=[cidr])
    node["status"]["addresses"] = [
        {"type": "InternalIP", "address": ip},
        {"type": "Hostname", "address": name},
    ]
    return {"type": kind, "object": {"kind": "Node", "apiVersion": "v1", **node}}


def test_watch_follows_the_api_server(netns: str, api: FakeKubeAPI, tmp_path: Path) -> None:
    loop = kube_loop(api, netns, tmp_path)
    try:
        line = loop.wait_for(r"round 1: applied")
        assert all(has_route(netns, dst) for dst in PEERS)
        assert (tmp_path / "cni" / "10-kindnet.conflist").exists()
        api.wait_for(
            "the pod watch",
            lambda seen: any(r.path == "/api/v1/pods" and r.watch for r in seen),
        )
        assert all(r.authorization == f"Bearer {api.token}" for r in api.requests)

        api.send(
            "nodes", node_event("ADDED", "kind-worker3", "172.18.0.5", "10.244.3.0/24", "2001")
        )
        added = wait_until(lambda: has_route(netns, "10.244.3.0/24"))
        line = loop.wait_for(r"applied 1 change\(s\): added route 10\.244\.3\.0/24", after=line)

        api.send(
            "nodes", node_event("DELETED", "kind-worker3", "172.18.0.5", "10.244.3.0/24", "2002")
        )
        removed = wait_until(lambda: not has_route(netns, "10.244.3.0/24"))
        print(f"\nAPI watch event -> route added in {added:.3f} s, removed in {removed:.3f} s")
        assert all(has_route(netns, dst) for dst in PEERS)

        api.stop()  # the API server goes away: counted and said, the nodes listed stay
        line = loop.wait_for(r"error kubernetes API: .*the nodes listed before stay", after=line)
        assert all(has_route(netns, dst) for dst in PEERS)

        status, _ = loop.stop(signal.SIGTERM)
        assert status == 0
    finally:
        loop.kill()


def test_unreachable_api_server_applies_nothing_and_says_so(
    netns: str, api: FakeKubeAPI, tmp_path: Path
) -> None:
    api.stop()  # its port is closed now: connections are refused
    loop = kube_loop(api, netns, tmp_path)
    try:
        loop.wait_for(r"error kubernetes API.*nothing applied yet.*kind=source", timeout=30)
        assert not (tmp_path / "cni").exists()
        assert not any(has_route(netns, dst) for dst in PEERS)
        assert loop.stop()[0] == 0
    finally:
        loop.kill()
