"""The one place a source of snapshots is opened: a file, a folder, stdin ('-') or the Kubernetes
API (--kube); read once for a one-shot command, or opened as a Source that the reconcile loop
reads every round.

A one-shot read gives the snapshot's bytes (what plan --out saves and the converged record
digests): from the API, its nodes, namespaces, pods and NetworkPolicies as one List, each kind
in key order, so the same cluster gives the same bytes. Every source ends in the same parse and
checks (kinds.parse_snapshot).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from kindplan.errors import Problem, UsageError

if TYPE_CHECKING:  # the checks: not a converged apply's, which only reads the bytes
    from kindplan.core.snapshot import Loaded

KUBE_FIRST_LIST_SECONDS = 5.0  # the loop's first round waits this long for the first node list


class Source(Protocol):
    """What the reconcile loop needs from a source of snapshots."""

    name: str

    def fileno(self) -> int | None:
        """A descriptor that turns readable when the source may have changed (None: none)."""

    def poll(self) -> bool:
        """Consume change notifications; True if the source may have changed since the last read."""

    def read(self) -> Loaded:
        """The snapshot now: InvalidInputError if it is wrong, SourceError if it cannot be read."""

    def reload(self) -> None:
        """Forget what was read (SIGHUP): the next read starts from scratch."""

    def close(self) -> None: ...


class Input:
    """A snapshot as read once: its bytes, the name to cite it by, the pod subnets it is read
    with, and what was said while reading it (before its own warnings). A plain class: a
    NamedTuple would compile its methods at import, a cost every command pays."""

    __slots__ = ("data", "pod_subnets", "source", "warnings")

    def __init__(
        self,
        data: bytes,
        source: str,
        pod_subnets: tuple[str, ...],
        warnings: tuple[Problem, ...] = (),
    ) -> None:
        self.data = data
        self.source = source
        self.pod_subnets = pod_subnets
        self.warnings = warnings


def check_choice(snapshot: str | None, kube: bool, kubeconfig: str | None) -> None:
    """Exactly one source: SNAPSHOT (a path or '-') or --kube; --kubeconfig only with --kube."""
    if kube == (snapshot is not None):
        raise UsageError("give exactly one of SNAPSHOT (a file, a directory or -) and --kube")
    if kubeconfig is not None and not kube:
        raise UsageError("--kubeconfig goes with --kube")


def read_input(
    snapshot: str | None,
    pod_subnets: Sequence[str] = (),
    *,
    kube: bool = False,
    kubeconfig: str | None = None,
) -> Input:
    """The snapshot of a one-shot command: a file, a folder or stdin, or the API's nodes now."""
    check_choice(snapshot, kube, kubeconfig)
    if not kube:
        from kindplan.inputs.files import read_source

        assert snapshot is not None
        return Input(*read_source(snapshot), tuple(pod_subnets))
    import json

    from kindplan.inputs.kubeclient import list_cluster
    from kindplan.inputs.kubenodes import SOURCE, pod_subnets_of
    from kindplan.inputs.kubestore import NODES, Store, cluster_list

    host, lists = list_cluster(kubeconfig)
    store = Store("")
    for resource, items in lists.items():
        store.replace_all(resource, items)
    nodes = [store.objects[NODES][key] for key in sorted(store.objects[NODES])]
    subnets, warnings = pod_subnets_of(nodes, pod_subnets)
    data = json.dumps(cluster_list(store.objects), separators=(",", ":")).encode()
    return Input(data, f"{SOURCE} ({host})", subnets, warnings)


def load(given: Input, *, strict: bool = False) -> Loaded:
    """The snapshot in `given`, parsed and checked, its heap frozen (freeze_heap); the warnings of
    the read first."""
    from kindplan.inputs.kinds import parse_snapshot

    loaded = parse_snapshot(
        given.data, source=given.source, pod_subnets=given.pod_subnets, strict=strict
    )
    freeze_heap()
    if given.warnings:
        from kindplan.core.snapshot import Loaded

        return Loaded(loaded.snapshot, given.warnings + loaded.warnings)
    return loaded


def open_source(
    snapshot: str | None,
    pod_subnets: Sequence[str],
    *,
    node: str,
    kube: bool = False,
    kubeconfig: str | None = None,
    log: Callable[[str], None] | None = None,
) -> Source:
    """The source the reconcile loop of `node` reads every round; `log` hears what it has to say
    between rounds (a lost inotify watch, an API watch that failed)."""
    check_choice(snapshot, kube, kubeconfig)
    if kube:
        from kindplan.inputs.kubewatch import KubeSource

        source = KubeSource(node, pod_subnets, kubeconfig, log=log)
        source.wait_listed(KUBE_FIRST_LIST_SECONDS)  # else the first round has nothing yet
        return source
    assert snapshot is not None
    if snapshot == "-":
        from kindplan.inputs.stdin import StdinSource

        return StdinSource(pod_subnets)
    from kindplan.inputs.files import FileSource

    return FileSource(snapshot, pod_subnets, log=log)


def freeze_heap() -> None:
    """Have the cyclic collector leave alone every object alive now: call it once a snapshot is
    loaded (load does; the loop does for each new snapshot it takes).

    A process-wide decision, so it is taken here, in the shell, never by the pure parser. A
    5,000-node snapshot is some 100,000 long-lived objects that every full collection during
    compile and diff would walk again: measured, that made compile + diff grow 137x for 100x the
    nodes, and 79x once frozen. Frozen objects are still freed by reference counting, which is
    all a snapshot (no reference cycles) needs.
    """
    gc.freeze()
