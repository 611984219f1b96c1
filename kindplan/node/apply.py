"""apply_plan: carry out a plan's changes in order through the collaborators, then verify.

A change the kernel refuses (a peer's gateway not on-link, say) is reported with what it was for
and does not stop the others; the conflist is written only if the node-local plumbing before it
(sysctls, addresses, SNAT) went in, so kubelet never sees a ready network that is not.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, assert_never

from kindplan.core.changes import (
    AddAddress,
    AddRoute,
    Change,
    DelAddress,
    DeleteConflist,
    DelRoute,
    Plan,
    RemoveMasquerade,
    ReplaceRoute,
    SetSysctl,
    WriteConflist,
    WriteMasquerade,
)
from kindplan.core.masq.dialects import dialect
from kindplan.core.planview import describe
from kindplan.core.routes import Route
from kindplan.errors import Interrupted, RuntimeFailure
from kindplan.node.files import remove_file, write_atomic
from kindplan.node.observe import read_conflist

if TYPE_CHECKING:
    from kindplan.node.ports import IptablesPort, KernelPort


@dataclass
class ApplyReport:
    applied: list[Change] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    refused_peers: list[Change] = field(default_factory=list)  # peer routes the kernel refused
    # sent but never acknowledged (the socket failed): in effect or not, their undo must be kept
    maybe_applied: list[Change] = field(default_factory=list)
    residue: Plan | None = None  # what observing again still found different

    @property
    def ok(self) -> bool:
        return not self.failures and (self.residue is None or self.residue.empty)


def apply_change(change: Change, kernel: KernelPort, iptables: IptablesPort) -> None:
    """Make one change that is not a route (routes go in batches: route_write); raises
    RuntimeFailure if refused."""
    match change:
        case SetSysctl(name=name, value=value):
            kernel.set_sysctl(name, value)
        case AddAddress(address=address):
            kernel.add_address(address)
        case DelAddress(address=address):
            kernel.del_address(address)
        case WriteMasquerade(version=version, variant=variant):
            payload = dialect(change.backend).write_payload(change)
            _variant(iptables, variant).restore(version, payload)
        case RemoveMasquerade(version=version, variant=variant):
            payload = dialect(change.backend).remove_payload(change)
            _variant(iptables, variant).restore(version, payload)
        case WriteConflist(path=path, content=content, old=old):
            _expect_conflist(Path(path), old)
            write_atomic(Path(path), content)
        case DeleteConflist(path=path, old=old):
            _expect_conflist(Path(path), old)
            remove_file(Path(path))
        case AddRoute() | ReplaceRoute() | DelRoute():
            raise TypeError(f"not a single change: {change}")
        case _:
            assert_never(change)


def _variant(iptables: IptablesPort, variant: str | None) -> IptablesPort:
    """The iptables of the variant a change names (None: the one in use). The iptables dialect
    is the only one yet: a backend of another runner (nft) would choose its runner here."""
    return iptables if variant is None else iptables.for_backend(variant)


def _expect_conflist(path: Path, seen: str | None) -> None:
    """Write or remove the conflist only if it still holds what the plan saw: someone else's
    edit since then (or, for a rollback, since kindplan wrote it) is left alone."""
    if read_conflist(path) != seen:
        raise RuntimeFailure(f"{path}: changed since it was observed; left alone, plan again")


def _route_of(change: Change) -> Route | None:
    write = route_write(change)
    return write[1] if write else None


def route_write(change: Change) -> tuple[str, Route] | None:
    """The netlink write a route change needs, or None if it is not a route change."""
    match change:
        case AddRoute(route=route):
            return ("add", route)
        case ReplaceRoute(route=route):
            return ("replace", route)
        case DelRoute(route=route):
            return ("del", route)
        case (
            SetSysctl()
            | AddAddress()
            | DelAddress()
            | WriteMasquerade()
            | RemoveMasquerade()
            | WriteConflist()
            | DeleteConflist()
        ):
            return None
        case _:
            assert_never(change)


# Route changes go to the kernel in batches of this many: the journal records each batch's undo
# before it is sent, and a stop request (Ctrl-C) is honoured between batches.
BATCH = 1000


def apply_plan(  # noqa: C901  # fixed on another branch
    plan: Plan,
    kernel: KernelPort,
    iptables: IptablesPort,
    *,
    verify: Callable[[], Plan] | None = None,
    attempts: int = 3,
    report: ApplyReport | None = None,
    record: Callable[[Sequence[Change]], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> ApplyReport:
    """Apply every change of `plan` in order; then, if given, `verify()` (observe + diff) until
    it is empty. Consecutive route changes go to the kernel in batches; `record(batch)` runs
    before each batch (or other change) is made, and `stop()` is asked between them: if it
    says so, Interrupted is raised with what was applied in `report`."""
    report = report if report is not None else ApplyReport()  # the caller's survives an error
    plumbing_failed = False
    changes = list(plan.changes)
    i = 0
    while i < len(changes):
        if stop is not None and stop():
            raise Interrupted(f"stopped after {i} of {len(changes)} changes")
        if route_write(changes[i]) is not None:
            j = i
            while j < len(changes) and j - i < BATCH and route_write(changes[j]) is not None:
                j += 1
            group = changes[i:j]
            if record is not None:
                record(group)
            writes = [w for w in map(route_write, group) if w is not None]
            for change, error in zip(group, kernel.write_routes(writes), strict=True):
                if error is None:
                    report.applied.append(change)
                    continue
                report.failures.append(f"{describe(change)}: {error}")
                if error.maybe_applied:
                    report.maybe_applied.append(change)
                # A peer the kernel refuses (not on-link) is the cluster's problem; a pod's host
                # route is this node's plumbing, which kubelet must not see as ready without.
                route = _route_of(change)
                plumbing_failed |= route is None or route.gateway is None
                if route is not None and route.gateway is not None:
                    report.refused_peers.append(change)
            i = j
            continue
        change = changes[i]
        i += 1
        if isinstance(change, WriteConflist) and plumbing_failed:
            report.failures.append(f"{describe(change)}: not written, the changes before it failed")
            continue
        if record is not None:
            record((change,))
        try:
            apply_change(change, kernel, iptables)
        except RuntimeFailure as e:
            report.failures.append(f"{describe(change)}: {e}")
            plumbing_failed = True
            continue
        report.applied.append(change)
    if verify is not None:
        verify_report(report, verify, attempts)
    return report


def verify_report(report: ApplyReport, verify: Callable[[], Plan], attempts: int = 3) -> None:
    """Observe again (`verify()`) until nothing is left; the residue goes into the report."""
    # The kernel and iptables can lag a moment; retry briefly before calling it a residue.
    for attempt in range(attempts):
        report.residue = verify()
        if report.residue.empty or report.failures:
            break
        time.sleep(0.1 * (attempt + 1))
