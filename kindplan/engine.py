"""The imperative shell around the pure core: observe a node, compile, diff, apply, verify.

Everything here runs in the network namespace the caller entered (netns.enter_netns); the CLI, the
lab and the reconcile loop all go through these functions, so they behave the same.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar, cast

from kindplan.apply import ApplyReport, apply_plan
from kindplan.cnicache import read_cni_cache, with_local_pods
from kindplan.compiler import compile_desired, find_node
from kindplan.converged import Record, Remember, observed_digest, save_record
from kindplan.diff import diff, not_in_effect
from kindplan.errors import RuntimeFailure, UsageError
from kindplan.iptables import Iptables, detect_backend
from kindplan.journal import Generation, Journal
from kindplan.kernel import Kernel
from kindplan.locking import node_lock
from kindplan.model import (
    Change,
    DesiredState,
    ObservedState,
    Options,
    Plan,
    Snapshot,
)
from kindplan.netns import enter_netns
from kindplan.observe import find_uplink, fingerprint, host_facts, off_link_peers, read_observed
from kindplan.planview import format_plan, plan_to_json
from kindplan.saved import SavedPlan

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Planned:
    desired: DesiredState
    observed: ObservedState
    plan: Plan
    conflist_path: Path

    @property
    def fingerprint(self) -> str:
        """A digest of the observed node (0.2 s at 5,000 dual-stack nodes: only when asked)."""
        return fingerprint(self.observed)


class Memo:
    """The last result of each pure step, reused while it is called with equal arguments.

    A reconcile loop on a converged node sees the same snapshot and (thanks to the netlink parse
    memo) the very same route objects every round; equality of such arguments costs pointer
    comparisons, so compiling and diffing 5,000 nodes again is skipped.
    """

    def __init__(self) -> None:
        self._last: dict[str, tuple[tuple[Any, ...], Any]] = {}

    def __call__(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        key = (*args, *kwargs.items())
        hit = self._last.get(fn.__name__)
        if hit is not None and hit[0] == key:
            return cast(T, hit[1])
        result = fn(*args, **kwargs)
        self._last[fn.__name__] = (key, result)
        return result


def _call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return fn(*args, **kwargs)


def conflist_path(snapshot: Snapshot, options: Options) -> Path:
    cni = snapshot.cluster.cni
    return Path(options.conf_dir or cni.conf_dir) / cni.conf_file


def make_plan(
    snapshot: Snapshot,
    options: Options,
    kernel: Kernel,
    iptables: Iptables,
    memo: Memo | None = None,
) -> Planned:
    """Observe the node and diff it against what the snapshot says it should be."""
    call = memo or _call
    node = find_node(snapshot, options.node)
    warnings: list[str] = []
    if options.cni_cache_dir is not None:
        pods, warnings = read_cni_cache(
            Path(options.cni_cache_dir), node.name, snapshot.cluster.cni.network_name
        )
        snapshot, skipped = with_local_pods(snapshot, node.name, pods)
        warnings += skipped
    uplink, assumed = find_uplink(kernel.read_links(), snapshot, node, options.uplink)
    warnings += assumed
    facts = host_facts(snapshot, uplink, options.mtu)
    desired = call(compile_desired, snapshot, node.name, facts, route_proto=options.route_proto)
    kernel.expect(desired.routes)
    path = conflist_path(snapshot, options)
    observed = read_observed(kernel, iptables, path, snapshot.families)
    plan = call(
        diff,
        desired,
        observed,
        conflist_path=str(path),
        route_proto=options.route_proto,
        adopt=options.adopt,
    )
    off_link = call(off_link_peers, snapshot, node, uplink)
    if off_link:
        warnings.append(
            f"not on-link from {uplink.name}, the kernel will refuse their routes: "
            + ", ".join(off_link)
        )
    plan = replace(plan, warnings=(*warnings, *plan.warnings))
    return Planned(desired, observed, plan, path)


def apply_planned(
    snapshot: Snapshot,
    options: Options,
    planned: Planned,
    kernel: Kernel,
    iptables: Iptables,
    journal: Journal | None = None,
    held: frozenset[Change] = frozenset(),
    memo: Memo | None = None,
) -> ApplyReport:
    """Apply a plan made by make_plan, then observe again until nothing is left (or fail).

    With a journal, the undo of every change is recorded first, and trimmed to what was applied.
    `held` are changes deliberately left out (the loop's deletion guard): not a residue.
    """

    def verify() -> Plan:  # the memo spares compiling the same snapshot again
        plan = make_plan(snapshot, options, kernel, iptables, memo).plan
        if not held:
            return plan
        return replace(plan, changes=tuple(c for c in plan.changes if c not in held))

    generation = None
    if journal is not None:
        generation = journal.begin(
            planned.desired.node,
            snapshot.families,
            str(planned.conflist_path),
            planned.plan.changes,
        )
    report = ApplyReport()
    try:
        return apply_plan(planned.plan, kernel, iptables, verify=verify, report=report)
    finally:  # also when verification fails: what was applied stays undoable
        if journal is not None and generation is not None:
            journal.finish(generation, report.applied)


def conflist_left_alone(observed: ObservedState) -> str | None:
    """One line naming a conflist that could not be read (the plan leaves it alone), if any."""
    if observed.conflist_error is None:
        return None
    return (
        f"{observed.conflist_error}; kindplan leaves it alone and applies the rest: "
        "remove it and apply again"
    )


def _remember(
    remember: Remember,
    snapshot: Snapshot,
    options: Options,
    planned: Planned,
    plan: Plan,
    kernel: Kernel,
    iptables: Iptables,
) -> None:
    """Record a converged node (after observing it: nothing may change in between but us)."""
    conflist, network = str(planned.conflist_path), snapshot.cluster.cni.network_name
    digest = observed_digest(kernel, iptables, options, conflist, snapshot.families, network)
    record = Record(
        remember.inputs,
        digest,
        conflist,
        snapshot.families,
        network,
        format_plan(plan),
        remember.warnings,
    )
    with contextlib.suppress(OSError, RuntimeFailure):  # a speed-up, never a reason to fail
        save_record(remember.path, record)


def plan_node(snapshot: Snapshot, options: Options, netns: str | None) -> Planned:
    """make_plan inside network namespace `netns` (None: here)."""
    with enter_netns(netns):
        kernel = Kernel()
        try:
            return make_plan(snapshot, options, kernel, Iptables(detect_backend()))
        finally:
            kernel.close()


def apply_node(
    snapshot: Snapshot,
    options: Options,
    netns: str | None,
    *,
    lock: Path,
    lock_timeout: float,
    saved: SavedPlan | None = None,
    journal: Journal | None = None,
    remember: Remember | None = None,
) -> tuple[Planned, ApplyReport | None]:
    """Plan and apply under the node lock; None for the report when there was nothing to do.

    With a saved plan, refuse if the node changed since it was made, or if the plan now made
    differs from the one saved (and reviewed).
    """
    with node_lock(lock, lock_timeout), enter_netns(netns):
        kernel = Kernel()
        try:
            iptables = Iptables(detect_backend())
            memo = Memo()
            planned = make_plan(snapshot, options, kernel, iptables, memo)
            if saved is not None and planned.fingerprint != saved.fingerprint:
                raise RuntimeFailure(
                    f"node {options.node} changed since the plan was made; plan again"
                )
            if saved is not None and plan_to_json(planned.plan) != saved.plan:
                raise RuntimeFailure(
                    f"the plan for node {options.node} is not the one saved; plan again"
                )
            left_alone = conflist_left_alone(planned.observed)
            if planned.plan.empty:
                if left_alone is not None:
                    return planned, ApplyReport(failures=[left_alone])
                if remember is not None and not planned.plan.conflicts:
                    _remember(remember, snapshot, options, planned, planned.plan, kernel, iptables)
                return planned, None
            report = apply_planned(snapshot, options, planned, kernel, iptables, journal, memo=memo)
            if left_alone is not None:
                report.failures.append(left_alone)
            residue = report.residue
            if remember is not None and report.ok and residue is not None and not residue.conflicts:
                _remember(remember, snapshot, options, planned, residue, kernel, iptables)
            return planned, report
        finally:
            kernel.close()


@dataclass(frozen=True)
class RolledBack:
    generation: Generation
    report: ApplyReport
    residue: tuple[Change, ...]  # undo changes still not in effect after the rollback


def rollback_node(
    netns: str | None, journal: Journal, *, lock: Path, lock_timeout: float, attempts: int = 3
) -> RolledBack:
    """Undo the newest generation of the journal, verify it, and drop it from the journal."""
    with node_lock(lock, lock_timeout), enter_netns(netns):
        generations = journal.load()
        if not generations:
            raise UsageError(f"nothing to roll back: {journal.path} holds no generation")
        generation = generations[-1]
        kernel = Kernel()
        try:
            iptables = Iptables(detect_backend())

            def observe() -> ObservedState:
                kernel.read_links()
                return read_observed(
                    kernel, iptables, Path(generation.conflist_path), generation.families
                )

            observed = observe()
            todo = not_in_effect(generation.undo, observed)
            report = apply_plan(Plan(generation.node, todo), kernel, iptables)
            residue: tuple[Change, ...] = ()
            for attempt in range(attempts):
                observed = observe()
                residue = not_in_effect(generation.undo, observed)
                if not residue or report.failures:
                    break
                time.sleep(0.1 * (attempt + 1))
        finally:
            kernel.close()
        if not residue and not report.failures:
            journal.drop_last()
    return RolledBack(generation, report, residue)
