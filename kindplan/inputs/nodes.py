"""The v1 Node converter: a node (kubectl get nodes -o json|yaml, the API) as kindnet reads it.

kindnet takes a node's PodCIDRs from spec.podCIDRs (or the older spec.podCIDR) and its addresses of
type InternalIP. A node list describes a live cluster, which is never quite clean: a node that has
no PodCIDR or no InternalIP yet (normal while it joins) is kept with what it has and warned about,
so that it still routes its peers when it is the node kindplan runs on, and it never stops the
others from being routed. Strict (validate --strict) skips such a node instead.
Where a node has several InternalIPs of one family the first one listed is used: kindplan's own
rule, since kindnetd's choice differs by version (see the README).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from kindplan.errors import Problem
from kindplan.inputs.converted import Converted


def add_node(item: dict[str, Any], at: str, out: Converted, strict: bool) -> None:
    """Add a v1 Node (at `at` in the input) to the snapshot document in `out`, as kindnet sees it:
    its name, its PodCIDRs, its first InternalIP of each family."""
    metadata, spec, status = (_object(item, key) for key in ("metadata", "spec", "status"))
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        out.problems.append(Problem(f"{at}.metadata.name", "a node needs a name"))
        return
    found = _pod_cidrs(spec, at, out)
    if found is None:
        return
    cidrs, places = found
    if not cidrs:
        out.warnings.append(Problem(f"{at} (node {name})", _missing("PodCIDR", strict)))
        if strict:
            return
    ips = _internal_ips(status.get("addresses"), f"{at}.status.addresses", name, out)
    if not ips:
        out.warnings.append(Problem(f"{at} (node {name})", _missing("InternalIP", strict)))
        if strict:
            return
    _append(out, at, name, (cidrs, places), ips)


def _pod_cidrs(spec: dict[str, Any], at: str, out: Converted) -> tuple[list[Any], list[str]] | None:
    """The node's PodCIDRs and their places: spec.podCIDRs, else the older spec.podCIDR (None:
    they are not a list, a problem said)."""
    cidrs = spec.get("podCIDRs")
    if cidrs is not None and not isinstance(cidrs, list):
        out.problems.append(Problem(f"{at}.spec.podCIDRs", "not a list"))
        return None
    if cidrs:
        return cidrs, [f"{at}.spec.podCIDRs[{j}]" for j in range(len(cidrs))]
    if spec.get("podCIDR"):
        return [spec["podCIDR"]], [f"{at}.spec.podCIDR"]
    return [], []


def _append(
    out: Converted,
    at: str,
    name: str,
    cidrs: tuple[list[Any], list[str]],
    ips: list[tuple[str, str]],
) -> None:
    """The node as an entry of the snapshot's nodes, and where each of its values came from."""
    base = f"nodes[{len(out.document['nodes'])}]"
    values, places = cidrs
    out.document["nodes"].append(
        {"name": name, "internalIPs": [ip for ip, _ in ips], "podCIDRs": values}
    )
    where = out.where
    where[base] = at
    where[f"{base}.name"] = f"{at}.metadata.name"
    where[f"{base}.podCIDRs"] = f"{at}.spec.podCIDRs"
    for j, cidr_at in enumerate(places):
        where[f"{base}.podCIDRs[{j}]"] = cidr_at
    for j, (_, ip_at) in enumerate(ips):
        where[f"{base}.internalIPs[{j}]"] = ip_at


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
