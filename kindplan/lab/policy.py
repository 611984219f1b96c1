"""A policy lab's snapshot: every pod with its real addresses, labels and ports, the namespaces
and the lab's NetworkPolicies, as the ClusterSnapshot kindplan is applied with on every node.

The pods' addresses are what host-local gave them when `lab up` ran the real plugins (read back
from each node's CNI cache, with the host veth); labels and ports come from the List. The file
is the lab's record: `lab policy` replaces its networkPolicies (lab/run.py applies it on every
node), `lab probe` reads the pods from it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from kindplan.errors import RuntimeFailure
from kindplan.lab.cluster import ClusterModel, ModelPod
from kindplan.lab.matrix import ProbePod
from kindplan.lab.topology import Lab


def cluster_document(lab: Lab, model: ClusterModel) -> dict[str, Any]:
    """The lab's snapshot with the List's namespaces and every pod as its node's CNI cache
    records it (addresses, veth), with the List's labels and ports; no policies yet."""
    from kindplan.core.addresses import format_ip
    from kindplan.node.cnicache import read_cni_cache

    doc: dict[str, Any] = json.loads(lab.snapshot_path.read_text())
    by_key = {(p.namespace, p.name): p for p in model.pods}
    pods: list[dict[str, Any]] = []
    for node in lab.nodes:
        found, _ = read_cni_cache(lab.node_dir(node, "cache"), node.name, "kindnet")
        for cached in found:
            pod = by_key.get(cached.key)
            if pod is None:
                continue
            pods.append(
                {
                    "namespace": pod.namespace,
                    "name": pod.name,
                    "node": node.name,
                    "ips": [format_ip(ip) for ip in cached.ips],
                    "hostInterface": cached.host_interface,
                    **_labels_and_ports(pod),
                }
            )
    missing = sorted(set(by_key) - {(p["namespace"], p["name"]) for p in pods})
    if missing:
        raise RuntimeFailure(
            f"lab {lab.name}: no CNI result for {', '.join('/'.join(k) for k in missing)}"
        )
    doc["namespaces"] = [
        {"name": name, "labels": dict(labels)} for name, labels in model.namespaces
    ]
    doc["pods"] = sorted(pods, key=lambda p: (p["namespace"], p["name"]))
    doc["networkPolicies"] = []
    return doc


def _labels_and_ports(pod: ModelPod) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if pod.labels:
        out["labels"] = dict(pod.labels)
    if pod.ports:
        out["ports"] = [
            {
                "containerPort": p.port,
                "protocol": p.protocol,
                **({"name": p.name} if p.name else {}),
            }
            for p in pod.ports
        ]
    return out


def read_document(lab: Lab) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(lab.snapshot_path.read_text())
    if "namespaces" not in doc:
        from kindplan.errors import UsageError

        raise UsageError(
            f"lab {lab.name} was not made from a cluster (lab up --cluster FILE): no policies"
        )
    return doc


def write_document(lab: Lab, doc: dict[str, Any]) -> None:
    from kindplan.node.files import write_atomic

    write_atomic(lab.snapshot_path, json.dumps(doc, indent=2) + "\n")


def probe_pods(lab: Lab) -> tuple[ProbePod, ...]:
    """The lab's pods as the snapshot lists them, each with its pod network namespace."""
    doc = read_document(lab)
    netns = {(p.namespace, p.name): p.ns for p in lab.pods}
    return tuple(
        ProbePod(
            label=f"{p['namespace']}/{p['name']}",
            node=p["node"],
            netns=netns[p["namespace"], p["name"]],
            ips=tuple(p["ips"]),
            ports=frozenset(port["containerPort"] for port in p.get("ports", ())),
        )
        for p in doc["pods"]
    )


def relabel(doc: dict[str, Any], target: str, changes: list[str]) -> dict[str, str]:
    """The labels of pod `ns/name` or namespace `name` in `doc`, changed in place as kubectl
    label changes them; returns the new labels."""
    from kindplan.errors import UsageError

    if "/" in target:
        namespace, _, name = target.partition("/")
        found = [p for p in doc["pods"] if (p["namespace"], p["name"]) == (namespace, name)]
    else:
        found = [n for n in doc["namespaces"] if n["name"] == target]
    if not found:
        raise UsageError(f"{target!r} is no pod (ns/name) or namespace of the lab")
    labels: dict[str, str] = dict(found[0].get("labels", {}))
    for change in changes:
        key, sep, value = change.partition("=")
        if sep:
            labels[key] = value
        elif change.endswith("-"):
            labels.pop(change[:-1], None)
        else:
            raise UsageError(f"{change!r}: give KEY=VALUE to set a label, KEY- to remove one")
        if not re.fullmatch(
            r"([a-z0-9.-]+/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?", key.rstrip("-")
        ):
            raise UsageError(f"{change!r}: {key.rstrip('-')!r} is not a label key")
    found[0]["labels"] = labels
    return labels
