"""Builders of snapshot documents on documentation address ranges, for tests."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from kindplan.core.model import Snapshot
from kindplan.inputs.kinds import parse_snapshot

# RFC 5737 and RFC 3849 ranges for node addresses; pod subnets as kind uses them.
V4_NODES = ipaddress.ip_network("198.18.0.0/15")  # benchmarking range (RFC 2544): room for 5,000
V6_NODES = ipaddress.ip_network("2001:db8:ffff::/64")
V4_PODS = "10.244.0.0/16"
V6_PODS = "fd00:10:244::/48"


def node(name: str, ips: list[str], cidrs: list[str]) -> dict[str, Any]:
    return {"name": name, "internalIPs": ips, "podCIDRs": cidrs}


def cluster_doc(count: int, *, v4: bool = True, v6: bool = False, **cluster: Any) -> dict[str, Any]:
    """A ClusterSnapshot document with `count` nodes named node-0000..., one PodCIDR per family."""
    subnets = ([V4_PODS] if v4 else []) + ([V6_PODS] if v6 else [])
    v4_pods = ipaddress.ip_network("10.0.0.0/8") if count > 256 else ipaddress.ip_network(V4_PODS)
    if v4 and count > 256:
        subnets[0] = str(v4_pods)
    nodes = []
    for i in range(count):
        ips, cidrs = [], []
        if v4:
            ips.append(str(V4_NODES.network_address + 10 + i))
            cidrs.append(str(ipaddress.ip_network((int(v4_pods.network_address) + (i << 8), 24))))
        if v6:
            ips.append(str(V6_NODES.network_address + 10 + i))
            cidrs.append(f"fd00:10:244:{i:x}::/64")
        nodes.append(node(f"node-{i:04d}", ips, cidrs))
    return {
        "apiVersion": "kindplan/v1",
        "kind": "ClusterSnapshot",
        "cluster": {"podSubnets": subnets, **cluster},
        "nodes": nodes,
    }


def load(doc: dict[str, Any]) -> Snapshot:
    return parse_snapshot(json.dumps(doc).encode()).snapshot
