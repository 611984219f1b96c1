"""Fixtures of the kernel tests: node namespaces of the bundled fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
from nodes import DUAL, SEED, Node, build_node


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
