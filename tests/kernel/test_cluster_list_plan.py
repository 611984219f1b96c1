"""`kindplan plan` of a kubectl List of the four kinds gives what the equivalent ClusterSnapshot
gives, on a real node namespace whose local pod is known from libcni's cache."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from nodes import build_node, cni_cache_entry, kindplan

pytestmark = pytest.mark.root

SUBNET = "10.244.0.0/16"


def k8s_node(name: str, ip: str, cidr: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name},
        "spec": {"podCIDR": cidr},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
    }


def k8s_pod(namespace: str, name: str, node: str, ip: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"namespace": namespace, "name": name, "labels": {"app": "cart"}},
        "spec": {"nodeName": node, "containers": [{"ports": [{"containerPort": 80}]}]},
        "status": {"phase": "Running", "podIPs": [{"ip": ip}]},
    }


LIST = {
    "apiVersion": "v1",
    "kind": "List",
    "items": [
        k8s_node("w1", "172.18.0.2", "10.244.2.0/24"),
        k8s_node("w2", "172.18.0.3", "10.244.3.0/24"),
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
        k8s_pod("shop", "cart-1", "w1", "10.244.2.5"),
        k8s_pod("shop", "cart-2", "w2", "10.244.3.5"),
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"namespace": "shop", "name": "deny"},
            "spec": {"podSelector": {}},
        },
    ],
}
NATIVE = {
    "apiVersion": "kindplan/v1",
    "kind": "ClusterSnapshot",
    "cluster": {"podSubnets": [SUBNET]},
    "nodes": [
        {"name": "w1", "internalIPs": ["172.18.0.2"], "podCIDRs": ["10.244.2.0/24"]},
        {"name": "w2", "internalIPs": ["172.18.0.3"], "podCIDRs": ["10.244.3.0/24"]},
    ],
    "namespaces": [{"name": "shop"}],
    "pods": [
        {
            "namespace": "shop",
            "name": f"cart-{i}",
            "node": node,
            "ips": [ip],
            "labels": {"app": "cart"},
            "ports": [{"containerPort": 80, "protocol": "TCP"}],
        }
        for i, node, ip in ((1, "w1", "10.244.2.5"), (2, "w2", "10.244.3.5"))
    ],
    "networkPolicies": LIST["items"][5:],
}


def test_plan_of_a_list_is_the_plan_of_the_native_snapshot(netns: str, tmp_path: Path) -> None:
    build_node(netns, ["172.18.0.2/16"], ["vethcart1"])
    cache = tmp_path / "cache"
    cache.mkdir()
    entry = cni_cache_entry("vethcart1", "10.244.2.5")  # shop/cart-1, as the API names it
    (cache / "kindnet-c0ffee-eth0").write_text(json.dumps(entry))
    (tmp_path / "list.yaml").write_text(yaml.safe_dump(LIST))
    (tmp_path / "native.json").write_text(json.dumps(NATIVE))
    plans = []
    for name, extra in (("list.yaml", ["--pod-subnet", SUBNET]), ("native.json", [])):
        result = kindplan(
            "plan",
            str(tmp_path / name),
            "--node",
            "w1",
            "--netns",
            netns,
            "--conf-dir",
            str(tmp_path / "cni"),
            "--cni-cache-dir",
            str(cache),
            *extra,
        )
        assert result.returncode == 0, result.stderr
        plans.append(result.stdout)
    assert plans[0] == plans[1]
    assert "+ address 10.244.2.1/32 dev vethcart1 (pod shop/cart-1)" in plans[0]  # the cache
    assert "10.244.3.5" not in plans[0]  # the other node's pod: a peer, no plumbing here
