"""`kindplan plan` and `apply` with NetworkPolicies end to end: the real compile, the real nft,
the plan in pods and policies (text and JSON) before an apply, nothing after it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from nodes import SEED, Node
from shell import sh

pytestmark = pytest.mark.root

ALLOW_WEB_0 = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"namespace": "default", "name": "allow-web-0"},
    "spec": {
        "podSelector": {"matchLabels": {"app": "web-1"}},
        "ingress": [
            {"from": [{"podSelector": {"matchLabels": {"app": "web-0"}}}], "ports": [{"port": 80}]}
        ],
    },
}


def with_policy(tmp: Path, *policies: dict[str, object]) -> Path:
    doc = yaml.safe_load(SEED.read_text())
    for pod in doc["pods"]:
        pod["labels"] = {"app": pod["name"]}
    doc["networkPolicies"] = list(policies)
    path = tmp / "policy.json"
    path.write_text(json.dumps(doc))
    return path


def test_plan_names_pods_and_policies_then_apply_converges(seed_worker2: Node) -> None:
    snapshot = with_policy(seed_worker2.tmp, ALLOW_WEB_0)
    planned = seed_worker2.plan(snapshot=snapshot)
    assert planned.returncode == 0, planned.stderr
    assert "default/web-1 ingress: + isolated" in planned.stdout
    assert "default/web-1 ingress: + from default/web-0 on TCP 80 by policy allow-web-0" in (
        planned.stdout
    )
    assert "web-2 ingress" not in planned.stdout  # not selected: not isolated
    as_json = json.loads(seed_worker2.plan("--json", snapshot=snapshot).stdout)
    assert any("allow-web-0" in json.dumps(line) for line in as_json["policy"])

    applied = seed_worker2.apply(snapshot=snapshot)
    assert applied.returncode == 0, applied.stderr
    listing = sh(
        "ip", "netns", "exec", seed_worker2.ns, "nft", "list", "table", "inet", "kindplan-policy"
    )
    assert 'comment "default/allow-web-0 ingress rule 0"' in listing
    assert "10.244.1.2" in listing  # web-0, the peer, on the other node

    again = seed_worker2.plan(snapshot=snapshot)
    assert again.returncode == 0, again.stderr
    assert "No changes." in again.stdout and "ingress:" not in again.stdout

    # The policy gone: the table goes, and the plan says the pod is no longer isolated.
    without = with_policy(seed_worker2.tmp)
    dropped = seed_worker2.plan(snapshot=without)
    assert "default/web-1 ingress: - isolated" in dropped.stdout
    assert "default/web-1 ingress: - from default/web-0 on TCP 80 by policy allow-web-0" in (
        dropped.stdout
    )
