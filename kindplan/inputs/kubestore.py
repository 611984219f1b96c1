"""What the API's list and watch of the four kinds hold (nodes, namespaces, pods, NetworkPolicies),
trimmed to what a snapshot is made of, and which event changes what this node needs.

Trimmed, an object compares equal across the events that do not concern kindplan (a pod's status
heartbeat, a node's conditions), so those cost a dictionary comparison and nothing more. Of the
rest, a change matters to this node when it can change the node's desired state:
- a node or a NetworkPolicy: always;
- a pod on this node: always (its labels may select it, and the loop looks at the CNI cache);
- a namespace, or a pod on another node: only while the cluster has a NetworkPolicy (they are
  selectors' and peers' only); with none, the store still takes the change, and the first
  policy's event makes the next snapshot of everything as it is then.
`version` counts the changes that matter: the source builds a new snapshot only when it moved.
The snapshot is a List in kubectl's shape (nodes first, in name order, then namespaces,
policies and pods in key order), checked as a List file is (kinds.check_document). Pure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from kindplan.core.snapshot import Loaded
from kindplan.errors import InvalidInputError
from kindplan.inputs.kinds import check_document
from kindplan.inputs.kubenodes import SOURCE, pod_subnets_of, trim_node
from kindplan.inputs.kubepods import KnownPods, Unclean
from kindplan.inputs.policies import API_VERSION

NODES, NAMESPACES, PODS, POLICIES = "nodes", "namespaces", "pods", "networkpolicies"
RESOURCES = (NODES, NAMESPACES, PODS, POLICIES)
_KIND = {NODES: "Node", NAMESPACES: "Namespace", PODS: "Pod", POLICIES: "NetworkPolicy"}
_API_VERSION = {NODES: "v1", NAMESPACES: "v1", PODS: "v1", POLICIES: API_VERSION}
Key = tuple[str, str]  # (namespace, name); a cluster-scoped object's namespace is ""


def object_key(obj: Any) -> Key | None:
    """(namespace, name) of an object (None: it has no name)."""
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    if not isinstance(metadata, dict):
        return None
    name, namespace = metadata.get("name"), metadata.get("namespace", "")
    if not (isinstance(name, str) and name and isinstance(namespace, str)):
        return None
    return (namespace, name)


def _pick(value: Any, keys: Sequence[str]) -> dict[str, Any]:
    return {k: value[k] for k in keys if k in value} if isinstance(value, dict) else {}


def _part(obj: Any, key: str) -> dict[str, Any]:
    value = obj.get(key)
    return value if isinstance(value, dict) else {}


def trim_namespace(obj: Any) -> Any:
    """A Namespace's name and labels (its phase does not matter: its pods count till gone)."""
    return {"metadata": _pick(obj.get("metadata"), ("name", "labels"))}


def trim_pod(obj: Any) -> Any:
    """What inputs/pods.py reads of a Pod; a phase only when it is a finished one, a deletion
    only as a mark: a pod moving from Pending to Running, or the seconds of its grace period
    ticking, changes nothing that counts."""
    metadata = _pick(obj.get("metadata"), ("namespace", "name", "labels"))
    if _part(obj, "metadata").get("deletionTimestamp"):
        metadata["deletionTimestamp"] = "set"  # when it ends does not matter
    spec = _pick(obj.get("spec"), ("nodeName", "hostNetwork"))
    containers = _part(obj, "spec").get("containers")
    if isinstance(containers, list):
        spec["containers"] = [_pick(c, ("ports",)) for c in containers]
    status = _pick(obj.get("status"), ("podIP", "podIPs"))
    phase = _part(obj, "status").get("phase")
    if phase in ("Succeeded", "Failed"):
        status["phase"] = phase
    return {"metadata": metadata, "spec": spec, "status": status}


def trim_policy(obj: Any) -> Any:
    """A NetworkPolicy's namespace, name and spec (its status and managedFields do not count)."""
    return {"metadata": _pick(obj.get("metadata"), ("namespace", "name")), "spec": obj.get("spec")}


TRIM: dict[str, Callable[[Any], Any]] = {
    NODES: trim_node,
    NAMESPACES: trim_namespace,
    PODS: trim_pod,
    POLICIES: trim_policy,
}


def trimmed(resource: str, obj: Any) -> Any:
    """`obj` trimmed, with the kind and apiVersion that a list's items leave out."""
    if not isinstance(obj, dict):
        return obj
    return {"apiVersion": _API_VERSION[resource], "kind": _KIND[resource]} | TRIM[resource](obj)


def cluster_list(objects: dict[str, dict[Key, Any]]) -> dict[str, Any]:
    """The objects held as one List, each kind in key order: nodes first (as a node list: a
    node's place in a warning stays items[N] whatever the rest), pods last (everything else
    keeps its place when the pods are made apart: kubepods.py)."""
    order = (NODES, NAMESPACES, POLICIES, PODS)
    items = [objects[r][key] for r in order for key in sorted(objects.get(r, {}))]
    return {"apiVersion": "v1", "kind": "List", "items": items}


def load_cluster(
    objects: dict[str, dict[Key, Any]],
    pod_subnets: Sequence[str] = (),
    known: tuple[KnownPods, set[Key]] | None = None,
) -> Loaded:
    """The objects held as a snapshot, checked exactly as a List file is.

    With `known` (the store's KnownPods and what was taken of it, kubepods.py), only the pods
    that changed are checked again: what the whole check would give, without its cost per pod.
    """
    nodes = [objects[NODES][key] for key in sorted(objects.get(NODES, {}))]
    subnets, warnings = pod_subnets_of(nodes, pod_subnets)
    loaded = None
    if known is not None:
        loaded = _with_known_pods(objects, subnets, known)
    if loaded is None:
        loaded = check_document(cluster_list(objects), source=SOURCE, pod_subnets=subnets)
    return replace(loaded, warnings=(*warnings, *loaded.warnings)) if warnings else loaded


def _with_known_pods(
    objects: dict[str, dict[Key, Any]],
    subnets: Sequence[str],
    known: tuple[KnownPods, set[Key]],
) -> Loaded | None:
    """Everything but the pods checked as a List, the pods from `memo` and checked against each
    other; None when anything is to be said about a pod or a problem found (the whole List is
    then checked, to name every place)."""
    rest = {r: held for r, held in objects.items() if r != PODS}
    pods, taken = known
    try:
        base = check_document(cluster_list(rest), source=SOURCE, pod_subnets=subnets)
        nodes = {n.name for n in base.snapshot.nodes}
        made = pods.update(objects.get(PODS, {}), nodes, taken)
    except InvalidInputError:
        pods.forget()  # the touched keys are spent: start afresh next time
        return None
    except Unclean:
        return None
    return Loaded(replace(base.snapshot, pods=made), base.warnings)


class Store:
    """The trimmed objects of each resource, by key, and the count of changes that matter to
    `node` (not thread-safe: the source holds its lock around every call)."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.objects: dict[str, dict[Key, Any]] = {r: {} for r in RESOURCES}
        self.listed: set[str] = set()
        self.version = 0
        self.pods = KnownPods()  # the pods made so far (kubepods.py), for the next snapshot

    def replace_all(self, resource: str, items: list[Any]) -> bool:
        """A list of `resource`: what is held now; True if that changed anything that matters."""
        fresh = {}
        for obj in items:
            key = object_key(obj)
            if key is not None:
                fresh[key] = trimmed(resource, obj)
        held, first = self.objects[resource], resource not in self.listed
        if fresh == held and not first:
            return False
        if resource == PODS:
            # A relist (after a 410, or reload) tells the pods that changed while unwatched:
            # only those are made again; an unchanged one keeps its object.
            for key in held.keys() | fresh.keys():
                old = held.get(key)
                if old != fresh.get(key):
                    self.pods.touch(key)
                elif old is not None:
                    fresh[key] = old
        self.objects[resource] = fresh
        self.listed.add(resource)
        if first or resource in (NODES, POLICIES) or self._policies():
            self.version += 1
            return True
        if resource == PODS and self._local_changed(held, fresh):
            self.version += 1
            return True
        return False

    def apply(self, resource: str, kind: str, obj: Any) -> bool:
        """A watch event (ADDED, MODIFIED, DELETED); True if it changed anything that matters."""
        key = object_key(obj)
        if key is None:
            return False
        held = self.objects[resource]
        old = held.get(key)
        if kind == "DELETED":
            if old is None:
                return False
            del held[key]
            new = None
        else:
            new = trimmed(resource, obj)
            if new == old:
                return False
            held[key] = new
        if resource == PODS:
            self.pods.touch(key)
        if self._matters(resource, old, new):
            self.version += 1
            return True
        return False

    def is_local_pod(self, obj: Any) -> bool:
        """The pod is (or was meant for) this node: its events wake the loop (the CNI cache)."""
        spec = obj.get("spec") if isinstance(obj, dict) else None
        return isinstance(spec, dict) and spec.get("nodeName") == self.node

    def _matters(self, resource: str, old: Any, new: Any) -> bool:
        if resource in (NODES, POLICIES):
            return True
        if self._policies():
            return True
        return resource == PODS and (self.is_local_pod(old) or self.is_local_pod(new))

    def _policies(self) -> bool:
        return bool(self.objects[POLICIES])

    def _local_changed(self, held: dict[Key, Any], fresh: dict[Key, Any]) -> bool:
        keys = held.keys() | fresh.keys()
        return any(
            held.get(k) != fresh.get(k)
            and (self.is_local_pod(held.get(k)) or self.is_local_pod(fresh.get(k)))
            for k in keys
        )
