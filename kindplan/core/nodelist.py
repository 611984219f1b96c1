"""A Kubernetes node list (`kubectl get nodes -o json|yaml`) read as kindnet reads it.

kindnet takes a node's PodCIDRs from spec.podCIDRs (or the older spec.podCIDR) and its addresses of
type InternalIP. A node list describes a live cluster, which is never quite clean: a node that has
no PodCIDR or no InternalIP yet (normal while it joins) is kept with what it has and warned about,
so that it still routes its peers when it is the node kindplan runs on, and it never stops the
others from being routed. Strict (validate --strict) skips such a node instead, as before.
Where a node has several InternalIPs of one family the first one listed is used: kindplan's own
rule, since kindnetd's choice differs by version (see the README).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kindplan.errors import Problem

NODE_LIST_KINDS = ("List", "NodeList")


@dataclass
class Converted:
    """The node list as a ClusterSnapshot document, with a map back to the places in the input."""

    document: dict[str, Any]
    where: dict[str, str] = field(default_factory=dict)  # snapshot path -> node list path
    warnings: list[Problem] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def convert_node_list(
    doc: dict[str, Any], pod_subnets: Sequence[str], *, strict: bool = False
) -> Converted:
    """Turn a List/NodeList of v1 Nodes (or one Node) into a ClusterSnapshot document (not yet
    validated).

    Not strict, a node without a PodCIDR or an InternalIP is kept with empty lists; strict, it is
    left out.
    """
    if doc.get("kind") == "Node":  # kubectl get node NAME -o json|yaml: the Node is the top
        one = {"kind": "List", "items": [doc]}
        return _at_top(convert_node_list(one, pod_subnets, strict=strict))
    out = Converted(
        {
            "apiVersion": "kindplan/v1",
            "kind": "ClusterSnapshot",
            "cluster": {"podSubnets": list(pod_subnets)},
            "nodes": [],
        },
        # what the user typed is the flag, not a snapshot path
        where={f"cluster.podSubnets[{i}]": "--pod-subnet" for i in range(len(pod_subnets))},
    )
    if not pod_subnets:
        out.problems.append(
            Problem(
                "--pod-subnet",
                "a node list carries no cluster settings: give the cluster's pod "
                "subnet(s), e.g. --pod-subnet 10.244.0.0/16",
            )
        )
    items = doc.get("items")
    if not isinstance(items, list):
        out.problems.append(Problem("items", "a node list needs an 'items' array"))
        return out
    for i, item in enumerate(items):
        _convert_node(item, f"items[{i}]", out, strict)
    if not out.document["nodes"] and not out.problems:
        what = "no node has both a PodCIDR and an InternalIP" if strict else "no Node in the list"
        out.problems.append(Problem("items", what))
    return out


def _at_top(out: Converted) -> Converted:
    """Places in a one-item list as places in that item: items[0].spec -> spec."""

    def top(where: str) -> str:
        if where.startswith("items[0]."):
            return where.removeprefix("items[0].")
        return where.replace("items[0]", "(top)", 1) if where.startswith("items[0]") else where

    def problems(found: list[Problem]) -> list[Problem]:
        return [Problem(top(p.where), p.what) for p in found]

    return Converted(
        out.document,
        {path: top(where) for path, where in out.where.items()},
        problems(out.warnings),
        problems(out.problems),
    )


def _convert_node(item: Any, at: str, out: Converted, strict: bool) -> None:  # noqa: C901  # fixed on another branch
    if not isinstance(item, dict):
        out.problems.append(Problem(at, "not an object"))
        return
    if item.get("kind", "Node") != "Node":
        out.warnings.append(Problem(at, f"kind {item.get('kind')!r} is not Node; skipped"))
        return
    metadata, spec, status = (_object(item, key) for key in ("metadata", "spec", "status"))
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        out.problems.append(Problem(f"{at}.metadata.name", "a node needs a name"))
        return
    cidrs = spec.get("podCIDRs")
    if cidrs is not None and not isinstance(cidrs, list):
        out.problems.append(Problem(f"{at}.spec.podCIDRs", "not a list"))
        return
    cidr_places = [f"{at}.spec.podCIDRs[{j}]" for j in range(len(cidrs or []))]
    if not cidrs and spec.get("podCIDR"):
        cidrs, cidr_places = [spec["podCIDR"]], [f"{at}.spec.podCIDR"]
    if not isinstance(cidrs, list) or not cidrs:
        cidrs, cidr_places = [], []
        out.warnings.append(Problem(f"{at} (node {name})", _missing("PodCIDR", strict)))
        if strict:
            return
    ips = _internal_ips(status.get("addresses"), f"{at}.status.addresses", name, out)
    if not ips:
        out.warnings.append(Problem(f"{at} (node {name})", _missing("InternalIP", strict)))
        if strict:
            return
    index = len(out.document["nodes"])
    out.document["nodes"].append(
        {"name": name, "internalIPs": [ip for ip, _ in ips], "podCIDRs": cidrs}
    )
    base = f"nodes[{index}]"
    out.where[base] = at
    out.where[f"{base}.name"] = f"{at}.metadata.name"
    out.where[f"{base}.podCIDRs"] = f"{at}.spec.podCIDRs"
    for j, cidr_at in enumerate(cidr_places):
        out.where[f"{base}.podCIDRs[{j}]"] = cidr_at
    for j, (_, ip_at) in enumerate(ips):
        out.where[f"{base}.internalIPs[{j}]"] = ip_at


def _missing(what: str, strict: bool) -> str:
    if strict:
        return f"no {what} yet; skipped"
    # Either way its peers get no route to its pods; on the node itself, compile_desired routes
    # the peers and leaves the conflist for later (a PodCIDR) or assumes the uplink (an IP).
    return f"no {what} yet; no route to its pods until it has one"


def _object(item: dict[str, Any], key: str) -> dict[str, Any]:
    value = item.get(key)
    return value if isinstance(value, dict) else {}


def _internal_ips(addresses: Any, at: str, name: str, out: Converted) -> list[tuple[str, str]]:
    """The first InternalIP of each family, IPv4 first, each with its place in the input."""
    if not isinstance(addresses, list):
        return []
    first: dict[int, tuple[str, str]] = {}
    for k, entry in enumerate(addresses):
        if not isinstance(entry, dict) or entry.get("type") != "InternalIP":
            continue
        address, where = entry.get("address"), f"{at}[{k}].address"
        try:
            if not isinstance(address, str):
                raise ValueError(address)
            version = ipaddress.ip_address(address).version
        except ValueError:
            out.problems.append(
                Problem(f"{where} (node {name})", f"not an IP address: {address!r}")
            )
            continue
        if version in first:
            out.warnings.append(
                Problem(
                    f"{where} (node {name})",
                    f"second IPv{version} InternalIP {address}; "
                    f"using the first, {first[version][0]}",
                )
            )
            continue
        first[version] = (address, where)
    return [first[v] for v in sorted(first)]
