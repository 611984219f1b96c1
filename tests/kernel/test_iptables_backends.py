"""kindplan's SNAT chain in every iptables backend and family a node has: only where it is wanted.

iptables-legacy and iptables-nft hook netfilter at the same time: a chain left in the backend a
node switched away from, or for a family the cluster lost, still masquerades.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from nodes import DUAL, Node, kindplan
from shell import sh

from kindplan.node.iptables import _legacy_nat, _nft_nat
from kindplan.node.netns import enter_netns

pytestmark = pytest.mark.root  # both backends: conftest's REQUIRED_TOOLS


def nat(node: Node, tool: str) -> str:
    return sh(tool, "-t", "nat", ns=node.ns)


def switch_to_legacy(node: Node) -> None:
    """Rules in legacy tables make it the backend in use (as kube-proxy's wrapper decides)."""
    for port in range(8):
        sh("iptables-legacy", "-t", "filter", "-A", "INPUT", "-p", "tcp", "--dport",
           str(9000 + port), "-j", "ACCEPT", ns=node.ns)  # fmt: skip


def test_a_chain_left_in_the_backend_no_longer_used_is_removed(seed_worker2: Node) -> None:
    node = seed_worker2
    assert node.apply().returncode == 0
    assert "KIND-MASQ-AGENT" in nat(node, "iptables-nft-save")
    switch_to_legacy(node)

    plan = node.plan()
    assert "+ iptables nat: chain KIND-MASQ-AGENT (new)" in plan.stdout
    assert "- iptables-nft nat: chain KIND-MASQ-AGENT and 1 jump(s)" in plan.stdout
    applied = node.apply()
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "KIND-MASQ-AGENT" in nat(node, "iptables-legacy-save")
    assert "KIND-MASQ-AGENT" not in nat(node, "iptables-nft-save")
    assert node.plan("--detailed-exitcode").returncode == 0

    # The journal says which backend each change went to: rollback puts the chain back in
    # nft, takes it out of legacy, and verifies both.
    state = ["--state-dir", str(node.tmp / "state")]
    back = kindplan("rollback", "--netns", node.ns, *state)
    assert back.returncode == 0, back.stdout + back.stderr
    assert "KIND-MASQ-AGENT" not in nat(node, "iptables-legacy-save")
    assert "-j KIND-MASQ-AGENT" in nat(node, "iptables-nft-save")


def ipv4_only(source: Path, target: Path) -> Path:
    doc = yaml.safe_load(source.read_text())

    def keep(values: list[str]) -> list[str]:
        return [v for v in values if ":" not in v]

    doc["cluster"]["podSubnets"] = keep(doc["cluster"]["podSubnets"])
    doc["cluster"]["nonMasqueradeCIDRs"] = keep(doc["cluster"]["nonMasqueradeCIDRs"])
    for node in doc["nodes"]:
        node["internalIPs"], node["podCIDRs"] = keep(node["internalIPs"]), keep(node["podCIDRs"])
    for pod in doc["pods"]:
        pod["ips"] = keep(pod["ips"])
    target.write_text(yaml.safe_dump(doc))
    return target


def test_a_family_the_cluster_lost_loses_its_chain(dual_worker: Node) -> None:
    node = dual_worker
    assert node.apply().returncode == 0
    assert "-j KIND-MASQ-AGENT" in nat(node, "ip6tables-nft-save")
    single = ipv4_only(DUAL, node.tmp / "ipv4.yaml")
    plan = node.plan(snapshot=single)
    assert "- ip6tables-nft nat: chain KIND-MASQ-AGENT and 1 jump(s)" in plan.stdout
    applied = node.apply(snapshot=single)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "KIND-MASQ-AGENT" not in nat(node, "ip6tables-nft-save")
    assert "-j KIND-MASQ-AGENT" in nat(node, "iptables-nft-save")
    assert node.plan("--detailed-exitcode", snapshot=single).returncode == 0


def test_nat_tables_are_found_per_backend_and_family(netns: str) -> None:
    """What spares a watch round the saves of a backend or family holding nothing."""
    with enter_netns(netns):
        assert _nft_nat() == frozenset() and not _legacy_nat(4) and not _legacy_nat(6)
        sh("ip6tables-nft", "-t", "nat", "-N", "OTHER", ns=netns)
        sh("iptables-legacy", "-t", "nat", "-N", "OTHER", ns=netns)
        assert _nft_nat() == frozenset({6}) and _legacy_nat(4) and not _legacy_nat(6)
        sh("iptables-nft", "-t", "filter", "-N", "OTHER", ns=netns)  # another table: still no nat
        assert _nft_nat() == frozenset({6})
        sh("iptables-nft", "-t", "nat", "-N", "OTHER", ns=netns)
        assert _nft_nat() == frozenset({4, 6})
