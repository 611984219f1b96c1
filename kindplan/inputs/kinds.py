"""The kinds of object kindplan reads, each with its converter into the core's ClusterSnapshot
document: one table, so that a new kind is one converter and one row.

`KINDS` is the top of a document: kindplan's own ClusterSnapshot (checked strictly, it is written
by a person), a list of Kubernetes objects (List, as `kubectl get nodes,namespaces,pods,
networkpolicies -A -o json` gives; NodeList, NamespaceList, PodList, NetworkPolicyList) or one
object (Node, Namespace, Pod, NetworkPolicy). `ITEMS` is what a list may hold: each item goes
to the converter of its kind, and an item of a kind not in the table is skipped with a warning.
A list or an object describes a live cluster, which is never quite clean: a node that can be
used only in part is used so and warned about (core/snapshot.py), and so are pods in every state
(pods.py).

Pure: documents in, documents out; parse_snapshot is the loader of bytes, check_document of a
document already parsed (the API's).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from kindplan.core.document import parse_document
from kindplan.core.snapshot import SNAPSHOT_KIND, Loaded, check_snapshot
from kindplan.errors import InvalidInputError, Problem
from kindplan.inputs.converted import Converted
from kindplan.inputs.namespaces import add_namespace
from kindplan.inputs.nodes import add_node
from kindplan.inputs.pods import add_pod, drop_unrouted
from kindplan.inputs.policies import add_policy

T = TypeVar("T")
# A document's kind -> the ClusterSnapshot document it means (pod subnets from --pod-subnet, strict)
Converter = Callable[[dict[str, Any], Sequence[str], bool], Converted]
# An item's kind -> adds the item (at its place in the input) to the document made so far (strict)
ItemConverter = Callable[[dict[str, Any], str, Converted, bool], None]


class Kind:
    """A row of the table. A plain class, not a NamedTuple: every command imports the table, and
    a NamedTuple compiles its methods at import."""

    __slots__ = ("convert", "live", "objects")

    def __init__(
        self,
        convert: Converter,
        *,
        live: bool,
        objects: Callable[[dict[str, Any]], list[Any] | None] | None,
    ) -> None:
        self.convert = convert
        # Describes a live cluster: a node usable only in part is a warning, unless strict.
        self.live = live
        # Its objects as items of one list, for a folder of several files (combine_directory);
        # None: it cannot be combined with other files.
        self.objects = objects


def parse_snapshot(
    data: bytes, *, source: str = "<input>", pod_subnets: Sequence[str] = (), strict: bool = False
) -> Loaded:
    """Turn snapshot bytes (ClusterSnapshot, List, NodeList or Node; JSON or YAML) into a
    Snapshot, or raise InvalidInputError with every problem found."""
    return check_document(
        parse_document(data, source), source=source, pod_subnets=pod_subnets, strict=strict
    )


def check_document(
    doc: Any, *, source: str = "<input>", pod_subnets: Sequence[str] = (), strict: bool = False
) -> Loaded:
    """A parsed document (a file's, or the API's node list) converted by its kind, then checked
    for meaning by the core."""
    if not isinstance(doc, dict):
        raise InvalidInputError.one(source, "expected an object (a ClusterSnapshot or a node list)")
    kind = _row(KINDS, doc.get("kind"))
    if kind is None:
        raise InvalidInputError.one("kind", f"{doc.get('kind')!r} is not one of {', '.join(KINDS)}")
    converted = kind.convert(doc, pod_subnets, strict)
    if converted.problems:
        raise InvalidInputError(converted.problems)
    return check_snapshot(
        converted.document,
        where=converted.where,
        tolerant=kind.live and not strict,
        warnings=converted.warnings,
    )


def objects_of(doc: Any) -> list[Any] | None:
    """The objects of a document as the items of one list, for a folder of several files (None:
    a kind that must be alone, or none at all)."""
    kind = _row(KINDS, doc.get("kind")) if isinstance(doc, dict) else None
    return kind.objects(doc) if kind is not None and kind.objects is not None else None


def _row(table: dict[str, T], kind: Any) -> T | None:
    """The row of `kind` (None: not a kind in the table, or not even a string)."""
    return table.get(kind) if isinstance(kind, str) else None


def _native(doc: dict[str, Any], pod_subnets: Sequence[str], strict: bool) -> Converted:
    """kindplan's own document: nothing to convert; it carries its cluster settings itself."""
    del strict  # a ClusterSnapshot is always checked strictly
    if pod_subnets:
        problem = "applies to node lists only; a ClusterSnapshot sets cluster.podSubnets"
        return Converted(doc, problems=[Problem("--pod-subnet", problem)])
    return Converted(doc)


def _list_of(default: str) -> Converter:
    """The converter of a list whose items leave out their kind (the API's NodeList, PodList...):
    `default` (a List of mixed kinds, as kubectl gets it, names each item's kind)."""

    def convert(doc: dict[str, Any], pod_subnets: Sequence[str], strict: bool) -> Converted:
        return _list(doc, pod_subnets, strict, default)

    return convert


def _list(
    doc: dict[str, Any], pod_subnets: Sequence[str], strict: bool, default: str = "Node"
) -> Converted:
    """A list of Kubernetes objects: each item through the converter of its kind.

    Not strict, a node without a PodCIDR or an InternalIP is kept with empty lists; strict, it is
    left out.
    """
    out = Converted(
        {
            "apiVersion": "kindplan/v1",
            "kind": SNAPSHOT_KIND,
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
        _item(item, f"items[{i}]", out, strict, default)
    for step in out.later:
        step()
    if strict:
        drop_unrouted(out)
    if not out.document["nodes"] and not out.problems:
        what = "no node has both a PodCIDR and an InternalIP" if strict else "no Node in the list"
        out.problems.append(Problem("items", what))
    return out


def _item(item: Any, at: str, out: Converted, strict: bool, default: str) -> None:
    if not isinstance(item, dict):
        out.problems.append(Problem(at, "not an object"))
        return
    # The API leaves out the kind of a typed list's items (a NodeList's: a Node). (The lookup is
    # written out: it runs for each of 150,000 items.)
    kind = item.get("kind", default)
    convert = ITEMS.get(kind) if isinstance(kind, str) else None
    if convert is None:
        known = ", ".join(ITEMS)
        what = f"kind {item.get('kind')!r} is not one of {known}; skipped"
        out.warnings.append(Problem(at, what))
        return
    convert(item, at, out, strict)


def _single(doc: dict[str, Any], pod_subnets: Sequence[str], strict: bool) -> Converted:
    """One object (kubectl get node NAME -o yaml): a list of one, its places named without the
    list's items[0]."""
    out = _list({"kind": "List", "items": [doc]}, pod_subnets, strict, str(doc.get("kind")))

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


def _items(doc: dict[str, Any]) -> list[Any] | None:
    items = doc.get("items")
    return items if isinstance(items, list) else None


def _items_of(kind: str) -> Callable[[dict[str, Any]], list[Any] | None]:
    """The items of a typed list, each with its kind (in one List they may sit beside others)."""

    def objects(doc: dict[str, Any]) -> list[Any] | None:
        items = _items(doc)
        if items is None:
            return None
        return [
            {"kind": kind, **i} if isinstance(i, dict) and "kind" not in i else i for i in items
        ]

    return objects


def _alone(doc: dict[str, Any]) -> list[Any]:
    return [doc]


KINDS: dict[str, Kind] = {
    SNAPSHOT_KIND: Kind(_native, live=False, objects=None),
    "List": Kind(_list, live=True, objects=_items),
    "NodeList": Kind(_list, live=True, objects=_items),
    "Node": Kind(_single, live=True, objects=_alone),
    "NamespaceList": Kind(_list_of("Namespace"), live=True, objects=_items_of("Namespace")),
    "Namespace": Kind(_single, live=True, objects=_alone),
    "PodList": Kind(_list_of("Pod"), live=True, objects=_items_of("Pod")),
    "Pod": Kind(_single, live=True, objects=_alone),
    "NetworkPolicyList": Kind(
        _list_of("NetworkPolicy"), live=True, objects=_items_of("NetworkPolicy")
    ),
    "NetworkPolicy": Kind(_single, live=True, objects=_alone),
}
ITEMS: dict[str, ItemConverter] = {
    "Node": add_node,
    "Namespace": add_namespace,
    "Pod": add_pod,
    "NetworkPolicy": add_policy,
}
