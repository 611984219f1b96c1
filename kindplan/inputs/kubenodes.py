"""Nodes from the Kubernetes API: what is kept of each Node, the pod subnet inferred when none is
given (kubestore.py makes the snapshot of them and the other kinds). Pure: no client, no network.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Any

from kindplan.core.addresses import IPNetwork
from kindplan.errors import Problem

SOURCE = "kubernetes API"


def trim_node(obj: Any) -> Any:
    """The parts of a v1 Node that a node list is read for (nodes.py); the rest is dropped.

    5,000 whole nodes would hold hundreds of MB (status.images alone is kilobytes per node), and
    comparing trimmed nodes tells a change that matters from a status heartbeat.
    """
    if not isinstance(obj, dict):
        return obj
    trimmed: dict[str, Any] = {}
    for part, keys in (("metadata", ("name",)), ("spec", ("podCIDR", "podCIDRs"))):
        value = obj.get(part)
        if isinstance(value, dict):
            trimmed[part] = {k: value[k] for k in keys if k in value}
    status = obj.get("status")
    if isinstance(status, dict) and "addresses" in status:
        trimmed["status"] = {"addresses": status["addresses"]}
    return trimmed


def node_name(obj: Any) -> str | None:
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) and name else None


def covering_network(networks: Sequence[IPNetwork]) -> IPNetwork:
    """The smallest network that holds all of `networks` (one family, at least one).

    >>> str(covering_network([ip_network("10.244.1.0/24"), ip_network("10.244.2.0/24")]))
    '10.244.0.0/22'
    """
    bits = networks[0].max_prefixlen
    first = min(int(n.network_address) for n in networks)
    last = max(int(n.broadcast_address) for n in networks)
    host_bits = (first ^ last).bit_length()  # the addresses agree on every bit above these
    address = first >> host_bits << host_bits
    if networks[0].version == 4:
        return IPv4Network((address, bits - host_bits))
    return IPv6Network((address, bits - host_bits))


def infer_pod_subnets(nodes: Iterable[Any]) -> tuple[str, ...]:
    """Per family, the smallest network holding every node's PodCIDRs (IPv4 first).

    Unreadable PodCIDRs are left out here: the node list checks report them.
    """
    by_family: dict[int, list[IPNetwork]] = {}
    for obj in nodes:
        spec = obj.get("spec") if isinstance(obj, dict) else None
        if not isinstance(spec, dict):
            continue
        cidrs = spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
        for text in cidrs if isinstance(cidrs, list) else []:
            try:
                net = ip_network(text, strict=False)
            except (TypeError, ValueError):
                continue
            by_family.setdefault(net.version, []).append(net)
    return tuple(str(covering_network(by_family[v])) for v in sorted(by_family))


def node_list(nodes: Sequence[Any]) -> dict[str, Any]:
    """Trimmed nodes as the NodeList the API would send, its items in name order."""
    return {"apiVersion": "v1", "kind": "NodeList", "items": list(nodes)}


def pod_subnets_of(
    nodes: Sequence[Any], pod_subnets: Sequence[str] = ()
) -> tuple[tuple[str, ...], tuple[Problem, ...]]:
    """The pod subnets for the nodes: the given ones, else inferred from the nodes, with a warning
    (an inferred subnet grows as nodes join, and the masquerade rules change with it)."""
    if pod_subnets:
        return tuple(pod_subnets), ()
    inferred = infer_pod_subnets(nodes)
    if not inferred:
        return (), ()
    warning = Problem(
        "--pod-subnet",
        f"not given; inferred {', '.join(inferred)} (the smallest cover of the nodes' PodCIDRs), "
        "which changes as nodes join: give the cluster's pod subnet(s) with --pod-subnet",
    )
    return inferred, (warning,)
