"""What the --kube source holds (kindplan/inputs/kubestore.py): which event changes what the node
needs, and the pods made apart (kubepods.py) giving exactly what the whole check of the List
gives, whatever the changes."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kindplan.core.snapshot import Loaded
from kindplan.errors import InvalidInputError
from kindplan.inputs.kubestore import (
    NAMESPACES,
    NODES,
    PODS,
    POLICIES,
    Store,
    load_cluster,
    trim_pod,
)

SUBNETS = ("10.244.0.0/16",)
NODE = "w0"


def node(i: int) -> dict[str, Any]:
    cidr = f"10.244.{i}.0/24"
    return {
        "metadata": {"name": f"w{i}"},
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
        "status": {"addresses": [{"type": "InternalIP", "address": f"172.18.0.{10 + i}"}]},
    }


def pod(i: int, j: int, **changes: Any) -> dict[str, Any]:
    obj = {
        "metadata": {
            "namespace": f"ns-{j % 3}",
            "name": f"p-{i}-{j}",
            "labels": {"app": f"a{j % 2}"},
            "resourceVersion": "1",
        },
        "spec": {"nodeName": f"w{i}", "containers": [{"ports": [{"containerPort": 80}]}]},
        "status": {"phase": "Running", "podIP": f"10.244.{i}.{2 + j}"},
    }
    for path, value in changes.items():
        part, _, field = path.partition("__")
        obj[part][field] = value
    return obj


POLICY = {
    "metadata": {"namespace": "ns-0", "name": "deny"},
    "spec": {"podSelector": {}},
}


def store(policies: bool = True) -> Store:
    s = Store(NODE)
    s.replace_all(NODES, [node(i) for i in range(3)])
    s.replace_all(NAMESPACES, [{"metadata": {"name": f"ns-{k}"}} for k in range(3)])
    s.replace_all(PODS, [pod(i, j) for i in range(3) for j in range(4)])
    s.replace_all(POLICIES, [POLICY] if policies else [])
    return s


def both(s: Store) -> tuple[Loaded | str, Loaded | str]:
    """The whole check of the List, and the pods made apart: each a Loaded or its error."""
    objects = {r: dict(held) for r, held in s.objects.items()}
    results: list[Loaded | str] = []
    for known in (None, (s.pods, s.pods.take_dirty())):
        try:
            results.append(load_cluster(objects, SUBNETS, known))
        except InvalidInputError as e:
            results.append(str(e))
    return results[0], results[1]


def test_a_status_heartbeat_changes_nothing() -> None:
    s = store()
    beat = pod(1, 1)
    beat["status"]["conditions"] = [{"type": "Ready", "lastProbeTime": "t1"}]
    beat["metadata"]["resourceVersion"] = "2"
    assert trim_pod(beat) == trim_pod(pod(1, 1))
    version = s.version
    assert not s.apply(PODS, "MODIFIED", beat)
    assert s.version == version


def test_what_matters_without_and_with_policies() -> None:
    s = store(policies=False)
    assert not s.apply(PODS, "MODIFIED", pod(1, 1, metadata__labels={"app": "x"}))
    assert not s.apply(NAMESPACES, "ADDED", {"metadata": {"name": "new", "labels": {"a": "b"}}})
    assert s.apply(PODS, "MODIFIED", pod(0, 1, metadata__labels={"app": "x"}))  # this node's
    assert s.objects[PODS][("ns-1", "p-1-1")]["metadata"]["labels"] == {"app": "x"}  # kept
    assert s.apply(POLICIES, "ADDED", POLICY)
    assert s.apply(PODS, "MODIFIED", pod(1, 1, metadata__labels={"app": "y"}))
    assert s.apply(NAMESPACES, "DELETED", {"metadata": {"name": "new"}})
    assert s.apply(POLICIES, "DELETED", POLICY)  # the last one: back to what it was
    assert not s.apply(PODS, "MODIFIED", pod(1, 1))


def test_the_pods_made_apart_are_the_whole_checks_pods() -> None:
    s = store()
    full, apart = both(s)
    assert full == apart
    assert isinstance(full, Loaded) and len(full.snapshot.pods) == 12


CHANGES = {
    "relabelled": (PODS, "MODIFIED", pod(1, 2, metadata__labels={"app": "z"})),
    "moved-ip": (PODS, "MODIFIED", pod(1, 2, status={"phase": "Running", "podIP": "10.244.1.99"})),
    "deleted": (PODS, "DELETED", pod(2, 0)),
    "added": (PODS, "ADDED", pod(2, 7)),
    "finished": (PODS, "MODIFIED", pod(2, 1, status={"phase": "Succeeded", "podIP": "10.244.2.3"})),
    "deleting": (PODS, "MODIFIED", pod(2, 1, metadata__deletionTimestamp="2026-12-07T23:00:00Z")),
    "unknown-node": (PODS, "ADDED", pod(9, 1)),
    "shared-ip": (PODS, "ADDED", pod(1, 9, status={"phase": "Running", "podIP": "10.244.1.2"})),
    "bad-label": (PODS, "ADDED", pod(1, 8, metadata__labels={"-x": "y"})),
    "bad-ip": (PODS, "ADDED", pod(1, 8, status={"phase": "Running", "podIP": "10.244.1.300"})),
    "node-gone": (NODES, "DELETED", node(2)),
    "node-came": (NODES, "ADDED", node(5)),
}


@pytest.mark.parametrize("name", list(CHANGES))
def test_after_each_change_the_same_as_the_whole_check(name: str) -> None:
    s = store()
    both(s)  # the pods made once
    s.apply(*CHANGES[name])
    full, apart = both(s)
    assert full == apart
    again = both(s)  # and the next round, with nothing touched
    assert again == (full, full)


def test_a_run_of_changes_stays_the_same_as_the_whole_check() -> None:
    s = store()
    for name, (resource, kind, obj) in CHANGES.items():
        s.apply(resource, kind, copy.deepcopy(obj))
        full, apart = both(s)
        assert full == apart, name
    s.replace_all(PODS, [pod(i, j) for i in range(2) for j in range(3)])  # a relist
    full, apart = both(s)
    assert full == apart


def test_a_relist_makes_again_only_the_pods_that_changed_unwatched() -> None:
    s = store()
    both(s)
    kept = s.objects[PODS][("ns-0", "p-0-0")]
    items = [pod(i, j) for i in range(3) for j in range(4)]
    items[5] = pod(1, 1, metadata__labels={"app": "moved"})  # changed while unwatched
    del items[11]  # p-2-3 went
    assert s.replace_all(PODS, items)
    assert s.pods.take_dirty() == {("ns-1", "p-1-1"), ("ns-0", "p-2-3")}
    assert s.objects[PODS][("ns-0", "p-0-0")] is kept  # an unchanged pod keeps its object
    s.pods.touch(("ns-1", "p-1-1"))
    s.pods.touch(("ns-0", "p-2-3"))
    full, apart = both(s)
    assert full == apart
