"""A policy lab's cluster: the nodes, namespaces and labelled pods of a kubectl List, and the
NetworkPolicies of policy files, read into plain values the lab builds from.

The List has the shape of `kubectl get nodes,namespaces,pods -A -o json` (or YAML); the lab
takes from it what its namespaces need: node names (the lab gives them addresses of its own,
as `lab up` does, whatever the List says), namespace labels, and each pod's namespace, name,
node, labels and containers' ports. The API server labels every namespace with
`kubernetes.io/metadata.name`; the lab does too, so that upstream's selectors on it work.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kindplan.errors import InvalidInputError, Problem

NAME_LABEL = "kubernetes.io/metadata.name"
PROTOCOLS = ("TCP", "UDP", "SCTP")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class PodPort:
    port: int
    protocol: str = "TCP"
    name: str = ""


@dataclass(frozen=True)
class ModelPod:
    namespace: str
    name: str
    node: str
    labels: Labels = ()
    ports: tuple[PodPort, ...] = ()

    @property
    def label(self) -> str:
        """`ns/name`, as upstream's matrices name pods."""
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class ClusterModel:
    nodes: tuple[str, ...]  # in the List's order: node i gets the lab's addresses of node i
    namespaces: tuple[tuple[str, Labels], ...]  # sorted by name
    pods: tuple[ModelPod, ...]  # sorted by (namespace, name)


def load_cluster(path: Path) -> ClusterModel:
    """The List in `path`; InvalidInputError naming every problem (`FILE: items[3].…: what`)."""
    from kindplan.core.document import parse_document

    source = str(path)
    doc = parse_document(_read(path), source)
    items = doc.get("items") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise InvalidInputError.one(source, "expected a kubectl List (kind List with items)")
    reader = _Reader(source)
    for i, item in enumerate(items):
        reader.item(f"items[{i}]", item)
    return reader.model()


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[Problem] = []
        self.nodes: list[str] = []
        self.namespaces: dict[str, Labels] = {}
        self.pods: dict[tuple[str, str], ModelPod] = {}

    def problem(self, where: str, what: str) -> None:
        self.problems.append(Problem(f"{self.source}: {where}", what))

    def item(self, at: str, item: Any) -> None:
        kind = item.get("kind") if isinstance(item, dict) else None
        meta = item.get("metadata") if isinstance(item, dict) else None
        name = meta.get("name") if isinstance(meta, dict) else None
        if kind not in ("Node", "Namespace", "Pod"):
            self.problem(f"{at}.kind", f"{kind!r} is not Node, Namespace or Pod")
            return
        pattern = _DNS_LABEL if kind == "Namespace" else _DNS_SUBDOMAIN
        if not isinstance(name, str) or not pattern.fullmatch(name):
            self.problem(f"{at}.metadata.name", f"{name!r} is not a valid {kind} name")
            return
        assert isinstance(meta, dict)
        labels = self.labels(f"{at}.metadata.labels", meta.get("labels"))
        if kind == "Node":
            if name in self.nodes:
                self.problem(f"{at}.metadata.name", f"node {name} is listed twice")
            self.nodes.append(name)
        elif kind == "Namespace":
            self.namespaces[name] = labels
        else:
            self.pod(at, name, meta, item, labels)

    def labels(self, at: str, raw: Any) -> Labels:
        if raw is None:
            return ()
        if not isinstance(raw, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
        ):
            self.problem(at, "expected a map of strings to strings")
            return ()
        return tuple(sorted(raw.items()))

    def pod(self, at: str, name: str, meta: dict[str, Any], item: Any, labels: Labels) -> None:
        namespace = meta.get("namespace", "default")
        spec = item.get("spec")
        if not isinstance(namespace, str) or not _DNS_LABEL.fullmatch(namespace):
            self.problem(f"{at}.metadata.namespace", f"{namespace!r} is not a namespace name")
            return
        node = spec.get("nodeName") if isinstance(spec, dict) else None
        if not isinstance(node, str) or not node:
            self.problem(f"{at}.spec.nodeName", "missing: the lab places a pod on its node")
            return
        assert isinstance(spec, dict)
        if spec.get("hostNetwork") is True:
            self.problem(f"{at}.spec.hostNetwork", "hostNetwork pods are not built by the lab")
            return
        ports: list[PodPort] = []
        containers = spec.get("containers") or []
        for c, container in enumerate(containers if isinstance(containers, list) else []):
            raw_ports = container.get("ports") if isinstance(container, dict) else None
            for p, raw in enumerate(raw_ports if isinstance(raw_ports, list) else []):
                port = self.port(f"{at}.spec.containers[{c}].ports[{p}]", raw)
                if port is not None:
                    ports.append(port)
        if (namespace, name) in self.pods:
            self.problem(f"{at}.metadata.name", f"pod {namespace}/{name} is listed twice")
        self.pods[namespace, name] = ModelPod(namespace, name, node, labels, tuple(ports))

    def port(self, at: str, raw: Any) -> PodPort | None:
        number = raw.get("containerPort") if isinstance(raw, dict) else None
        if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= 65535:
            self.problem(f"{at}.containerPort", f"{number!r} is not a port number")
            return None
        assert isinstance(raw, dict)
        protocol = raw.get("protocol", "TCP")
        if protocol not in PROTOCOLS:
            self.problem(f"{at}.protocol", f"{protocol!r} is not TCP, UDP or SCTP")
            return None
        name = raw.get("name", "")
        if not isinstance(name, str):
            self.problem(f"{at}.name", f"{name!r} is not a port name")
            return None
        return PodPort(number, protocol, name)

    def model(self) -> ClusterModel:
        for pod in self.pods.values():
            if pod.node not in self.nodes:
                self.problem(f"pod {pod.label}", f"its node {pod.node} is not in the List")
        if not self.nodes:
            self.problem("items", "no Node: the lab needs at least one")
        if self.problems:
            raise InvalidInputError(self.problems)
        names = {p.namespace for p in self.pods.values()} | set(self.namespaces)
        namespaces = tuple(
            (ns, tuple(sorted({**dict(self.namespaces.get(ns, ())), NAME_LABEL: ns}.items())))
            for ns in sorted(names)
        )
        return ClusterModel(
            tuple(self.nodes), namespaces, tuple(sorted(self.pods.values(), key=_key))
        )


def _key(pod: ModelPod) -> tuple[str, str]:
    return (pod.namespace, pod.name)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise InvalidInputError.one(str(path), f"cannot read: {e.strerror or e}") from e


def load_policies(paths: list[Path]) -> list[dict[str, Any]]:
    """The NetworkPolicy objects of the files (each a List, a NetworkPolicyList or one
    NetworkPolicy; JSON or YAML), in the files' order; a List with no items gives none. Their
    specs are kindplan's to understand (core/policy): the lab checks only what names them."""
    from kindplan.core.document import parse_document

    policies: list[dict[str, Any]] = []
    problems: list[Problem] = []
    seen: dict[tuple[str, str], str] = {}
    for path in paths:
        doc = parse_document(_read(path), str(path))
        kind = doc.get("kind") if isinstance(doc, dict) else None
        if kind in ("List", "NetworkPolicyList"):
            assert isinstance(doc, dict)
            items = doc.get("items") or []
            found = [(f"{path}: items[{i}]", o) for i, o in enumerate(items)]
        else:
            found = [(str(path), doc)]
        for where, obj in found:
            key = _policy_key(where, obj, problems)
            if key is None:
                continue
            if key in seen:
                problems.append(Problem(where, f"policy {'/'.join(key)} is also in {seen[key]}"))
            seen[key] = where
            policies.append(obj)
    if problems:
        raise InvalidInputError(problems)
    return policies


def _policy_key(where: str, obj: Any, problems: list[Problem]) -> tuple[str, str] | None:
    if not isinstance(obj, dict) or obj.get("kind") != "NetworkPolicy":
        kind = obj.get("kind") if isinstance(obj, dict) else type(obj).__name__
        problems.append(Problem(where, f"{kind!r} is not a NetworkPolicy"))
        return None
    if obj.get("apiVersion") != "networking.k8s.io/v1":
        problems.append(Problem(f"{where}.apiVersion", "expected networking.k8s.io/v1"))
        return None
    meta = obj.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    namespace = meta.get("namespace", "default") if isinstance(meta, dict) else None
    if not isinstance(name, str) or not _DNS_SUBDOMAIN.fullmatch(name):
        problems.append(Problem(f"{where}.metadata.name", f"{name!r} is not a policy name"))
        return None
    if not isinstance(namespace, str) or not _DNS_LABEL.fullmatch(namespace):
        problems.append(Problem(f"{where}.metadata.namespace", f"{namespace!r} is not a name"))
        return None
    meta.setdefault("namespace", namespace)  # type: ignore[union-attr]
    return (namespace, name)
