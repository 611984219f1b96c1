"""Fixtures of the kernel tests: node namespaces of the bundled fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubeapi import FakeKubeAPI
from nodes import DUAL, SEED, Node, build_node

from kindplan.node.netns import enter_netns


@pytest.fixture
def seed_worker2(netns: str, tmp_path: Path) -> Node:
    build_node(netns, ["172.18.0.12/16"], ["vetha1079faf", "veth4b2c9d10"])
    return Node(netns, tmp_path, SEED, "k8s-guide-worker2")


@pytest.fixture
def dual_worker(netns: str, tmp_path: Path) -> Node:
    build_node(
        netns, ["172.18.0.3/16", "fc00:f853:ccd:e793::3/64"], ["veth8e1d2c33", "veth19ab44f0"]
    )
    return Node(netns, tmp_path, DUAL, "dual-worker")


@pytest.fixture
def api(netns: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKubeAPI]:
    """The fake Kubernetes API on the loopback of a node namespace (kind-worker, 172.18.0.2 of
    tests/data/kube/nodelist.json), which kindplan, run inside it, reaches."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)  # kindplan would send loopback HTTP to a proxy
        monkeypatch.delenv(name.upper(), raising=False)
    build_node(netns, ["172.18.0.2/16"], [])
    with enter_netns(netns):
        server = FakeKubeAPI().start()  # its threads live in the namespace
    yield server
    server.stop()
