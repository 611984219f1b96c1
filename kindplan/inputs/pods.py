"""The v1 Pod converter: a pod (kubectl get pods -A -o json|yaml, the API) as NetworkPolicy
needs it: its namespace, name and labels, its node, its IPs, its containers' ports, hostNetwork.

Which pods count (a live cluster's pods in every state; kube-network-policies and kindnet do the
same in effect):
- a pod not running yet (no node, or no IP) is left out: nothing can reach it or come from it;
  the event that gives it an IP brings it in;
- a finished pod (phase Succeeded or Failed) is left out: its sandbox is gone and its IP may
  already be another pod's (a Job's pods stay in the API until they are cleaned up);
- a pod being deleted (deletionTimestamp set) still counts: in its grace period it still serves
  and sends, and its IP is not released before its sandbox is torn down. It is added after every
  other pod, so that where its IP is already a live pod's (released and reused while the API
  still holds the pod), the live pod keeps it and the deleting one is left out with a warning;
- a hostNetwork pod is kept, marked: its IPs are its node's, and NetworkPolicy never selects it.
Only spec.containers' ports are read (a named port resolves on those, as upstream's FindPort).
The converter is pure, as every converter is (kinds.py).
"""

from __future__ import annotations

from typing import Any

from kindplan.errors import Problem
from kindplan.inputs.converted import Converted

FINISHED = ("Succeeded", "Failed")


def add_pod(item: dict[str, Any], at: str, out: Converted, strict: bool) -> None:
    """Add a v1 Pod (at `at` in the input) to the snapshot document in `out`, if it counts."""
    del strict  # nothing of a pod is used in part
    metadata, spec, status = (_object(item, key) for key in ("metadata", "spec", "status"))
    namespace, name = metadata.get("namespace"), metadata.get("name")
    if not (isinstance(namespace, str) and namespace and isinstance(name, str) and name):
        out.problems.append(Problem(f"{at}.metadata", "a pod needs a namespace and a name"))
        return
    if status.get("phase") in FINISHED:
        return
    node, ips = spec.get("nodeName"), _ips(status, at)
    if not node or not ips:
        return
    pod: dict[str, Any] = {"namespace": namespace, "name": name, "node": node}
    places = {"": at, ".namespace": f"{at}.metadata.namespace", ".name": f"{at}.metadata.name"}
    places[".node"] = f"{at}.spec.nodeName"
    pod["ips"] = [ip for ip, _ in ips]
    places.update({f".ips[{j}]": place for j, (_, place) in enumerate(ips)})
    if metadata.get("labels") is not None:
        pod["labels"] = metadata["labels"]
        places[".labels"] = f"{at}.metadata.labels"
    ports = _ports(spec, at)
    if ports:
        pod["ports"] = [port for port, _ in ports]
        places.update({f".ports[{k}]": place for k, (_, place) in enumerate(ports)})
    if spec.get("hostNetwork") is True:
        pod["hostNetwork"] = True
    if metadata.get("deletionTimestamp"):
        out.later.append(lambda: _append(out, pod, places))
    else:
        _append(out, pod, places)


def drop_unrouted(out: Converted) -> None:
    """Strict (validate --strict), leave out the pods of nodes left out of the document (a node
    without a PodCIDR or an InternalIP yet, which nodes.py skips then), with a warning each:
    their DaemonSets' pods would otherwise stop a live cluster's strict check."""
    pods = out.document.get("pods")
    if not pods:
        return
    nodes = {node["name"] for node in out.document["nodes"]}
    kept: list[dict[str, Any]] = []
    moved: dict[str, str] = {}
    for i, pod in enumerate(pods):
        old = f"pods[{i}]"
        if pod["node"] in nodes:
            moved[old] = f"pods[{len(kept)}]"
            kept.append(pod)
            continue
        at = out.where.get(old, old)
        label = f"{pod['namespace']}/{pod['name']}"
        out.warnings.append(
            Problem(at, f"pod {label}: its node {pod['node']} is not in the snapshot; skipped")
        )
    if len(kept) == len(pods):
        return
    out.document["pods"] = kept
    where: dict[str, str] = {}
    for path, place in out.where.items():
        if path.startswith("pods["):
            head, _, rest = path.partition("]")
            new = moved.get(head + "]")
            if new is not None:
                where[new + rest] = place
        else:
            where[path] = place
    out.where = where


def _append(out: Converted, pod: dict[str, Any], places: dict[str, str]) -> None:
    pods = out.document.setdefault("pods", [])
    base = f"pods[{len(pods)}]"
    pods.append(pod)
    out.where.update({base + suffix: place for suffix, place in places.items()})


def _ips(status: dict[str, Any], at: str) -> list[tuple[Any, str]]:
    """The pod's IPs and their places: status.podIPs, else the older status.podIP."""
    found = status.get("podIPs")
    if isinstance(found, list) and found:
        return [
            (entry.get("ip") if isinstance(entry, dict) else entry, f"{at}.status.podIPs[{j}].ip")
            for j, entry in enumerate(found)
        ]
    if status.get("podIP"):
        return [(status["podIP"], f"{at}.status.podIP")]
    return []


def _ports(spec: dict[str, Any], at: str) -> list[tuple[dict[str, Any], str]]:
    """Every container's declared ports ({name, containerPort, protocol}), with their places."""
    ports = []
    containers = spec.get("containers")
    for c, container in enumerate(containers if isinstance(containers, list) else ()):
        declared = container.get("ports") if isinstance(container, dict) else None
        for p, entry in enumerate(declared if isinstance(declared, list) else ()):
            place = f"{at}.spec.containers[{c}].ports[{p}]"
            if not isinstance(entry, dict):
                ports.append((entry, place))  # the schema names it
                continue
            port = {"containerPort": entry.get("containerPort")}
            port["protocol"] = entry.get("protocol", "TCP")
            if entry.get("name"):
                port["name"] = entry["name"]
            ports.append((port, place))
    return ports


def _object(item: dict[str, Any], key: str) -> dict[str, Any]:
    value = item.get(key)
    return value if isinstance(value, dict) else {}
