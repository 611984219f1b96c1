"""apply_plan: carry out a plan's changes in order through the collaborators; settle, the retry of
the verification that follows (engine.py).

A change the kernel refuses (a peer's gateway not on-link, say) is reported with what it was for
and does not stop the others; the conflist is written only if the node-local plumbing before it
(sysctls, addresses, SNAT) went in, so kubelet never sees a ready network that is not.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, assert_never

from kindplan.core.changes import (
    MAX_RAW_ROUTE,
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
from kindplan.core.nexthop_changes import AddNexthop, DelNexthop, ReplaceNexthop
from kindplan.core.nexthops import Nexthop
from kindplan.core.planview import applied_text, describe
from kindplan.core.policychanges import (
    DelPolicyTable,
    WritePolicyElements,
    WritePolicyTable,
    policy_payload,
)
from kindplan.core.routes import Route
from kindplan.core.tunnelchanges import (
    TUNNEL_CHANGES,
    DelFdb,
    DelNeighbour,
    DelVxlan,
    WriteFdb,
    WriteNeighbour,
    WriteVxlan,
)
from kindplan.errors import Interrupted, RuntimeFailure
from kindplan.node.files import remove_file, write_atomic
from kindplan.node.observe import read_conflist

if TYPE_CHECKING:
    from kindplan.core.model import ObservedState
    from kindplan.node.kernel import KernelError
    from kindplan.node.ports import IptablesPort, KernelPort, NftablesPort

T = TypeVar("T")


@dataclass
class ApplyReport:
    applied: list[Change] = field(default_factory=list)
    applied_texts: list[str] = field(default_factory=list)  # applied_text of each, in order
    failures: list[str] = field(default_factory=list)
    refused_peers: list[Change] = field(default_factory=list)  # peer routes the kernel refused
    # sent but never acknowledged (the socket failed): in effect or not, their undo must be kept
    maybe_applied: list[Change] = field(default_factory=list)
    residue: Plan | None = None  # what observing again still found different
    verified: ObservedState | None = None  # the node as that last observation saw it

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
        case WriteMasquerade() | RemoveMasquerade():
            _masquerade(iptables, change)
        case WriteConflist(path=path, content=content, old=old):
            _expect_conflist(Path(path), old)
            write_atomic(Path(path), content)
        case DeleteConflist(path=path, old=old):
            _expect_conflist(Path(path), old)
            remove_file(Path(path))
        case (
            AddRoute()
            | ReplaceRoute()
            | DelRoute()
            | AddNexthop()
            | ReplaceNexthop()
            | DelNexthop()
        ):
            raise TypeError(f"not a single change: {change}")
        case WriteVxlan() | DelVxlan() | WriteNeighbour() | DelNeighbour() | WriteFdb() | DelFdb():
            raise TypeError(f"a tunnel change goes with its batch: {change}")
        case WritePolicyTable() | DelPolicyTable() | WritePolicyElements():
            _nft(iptables).run(policy_payload(change))
        case _:
            assert_never(change)


def _nft(iptables: IptablesPort) -> NftablesPort:
    nft = iptables.nftables
    if nft is None:
        raise RuntimeFailure("nft: not found on this node (Debian's package nftables)")
    return nft


def _variant(iptables: IptablesPort, variant: str | None) -> IptablesPort:
    """The iptables of the variant a change names (None: the one in use)."""
    return iptables if variant is None else iptables.for_backend(variant)


def _masquerade(iptables: IptablesPort, change: WriteMasquerade | RemoveMasquerade) -> None:
    """Run a masquerade change's payload with its backend's runner: nft for nftables (one
    transaction), else iptables-restore of the variant the change names (None: the one in use)."""
    masq = dialect(change.backend)
    if isinstance(change, WriteMasquerade):
        payload = masq.write_payload(change)
    else:
        payload = masq.remove_payload(change)
    if change.backend == "nftables":
        _nft(iptables).run(payload)
        return
    runner = _variant(iptables, change.variant)
    runner.restore(change.version, payload)
    if isinstance(change, RemoveMasquerade) and change.drop_table:
        runner.drop_empty_nat(change.version)  # the apply made iptables-nft's nat table


def _expect_conflist(path: Path, seen: str | None) -> None:
    """Write or remove the conflist only if it still holds what the plan saw: someone else's
    edit since then (or, for a rollback, since kindplan wrote it) is left alone."""
    if read_conflist(path) != seen:
        raise RuntimeFailure(f"{path}: changed since it was observed; left alone, plan again")


def _route_of(change: Change) -> Route | Nexthop | None:
    write = route_write(change)
    return write[1] if write else None


def route_write(change: Change) -> tuple[str, Route | Nexthop, bytes] | None:
    """The netlink write a route change needs (with the kernel's own body of a foreign route
    it puts back), or None if it is not a route change. A nexthop object's changes go with the
    routes: in the same batches, in the plan's order."""
    match change:
        case AddRoute(route=route, raw=raw):
            return ("add", route, raw)
        case ReplaceRoute(route=route, raw=raw):
            return ("replace", route, raw)
        case DelRoute(route=route):
            return ("del", route, b"")
        case AddNexthop(nexthop=nexthop):
            return ("add", nexthop, b"")
        case ReplaceNexthop(nexthop=nexthop):
            return ("replace", nexthop, b"")
        case DelNexthop(nexthop=nexthop):
            return ("del", nexthop, b"")
        case (
            SetSysctl()
            | AddAddress()
            | DelAddress()
            | WriteMasquerade()
            | RemoveMasquerade()
            | WriteConflist()
            | DeleteConflist()
            | WriteVxlan()
            | DelVxlan()
            | WriteNeighbour()
            | DelNeighbour()
            | WriteFdb()
            | DelFdb()
            | WritePolicyTable()
            | DelPolicyTable()
            | WritePolicyElements()
        ):
            return None
        case _:
            assert_never(change)


# Route changes go to the kernel in batches of this many: the journal records each batch's undo
# before it is sent, and a stop request (Ctrl-C) is honoured between batches.
BATCH = 1000


def apply_plan(
    plan: Plan,
    kernel: KernelPort,
    iptables: IptablesPort,
    *,
    report: ApplyReport | None = None,
    record: Callable[[Sequence[Change]], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> ApplyReport:
    """Apply every change of `plan` in order. Consecutive route changes go to the kernel in
    batches; `record(batch)` runs before each batch (or other change) is made, and `stop()` is
    asked between them: if it says so, Interrupted is raised with what was applied in `report`.

    A batch of routes is sent by a worker thread (RouteWrites) while this one records the next
    batch's undo; every other change waits for the batch in flight, and so does the return."""
    report = report if report is not None else ApplyReport()  # the caller's survives an error
    writes = RouteWrites(kernel, report)
    plumbing_failed = False
    done = 0
    try:
        for batch in _batches(plan.changes):
            if stop is not None and stop():
                writes.wait()  # what the batch in flight did is in the report
                raise Interrupted(f"stopped after {done} of {len(plan.changes)} changes")
            done += len(batch)
            routes = route_write(batch[0]) is not None
            if not routes:
                plumbing_failed |= writes.wait()
            if plumbing_failed and isinstance(batch[0], WriteConflist):
                report.failures.append(
                    f"{describe(batch[0])}: not written, the changes before it failed"
                )
                continue
            if record is not None:
                record(batch)
            if routes:
                plumbing_failed |= writes.send(batch)
            elif isinstance(batch[0], TUNNEL_CHANGES):  # the peers' path, not the node's plumbing
                _write_tunnel(batch, kernel, report)
            else:
                plumbing_failed |= not _make(batch[0], kernel, iptables, report)
    finally:
        writes.close()  # the batch in flight finishes whatever stops the apply
    return report


class RouteWrites:
    """Batches of route changes, each sent by a worker thread, one batch in flight at a time.

    The kernel does a batch's work inside the send system call (~0.15 s for 1,000 IPv4 routes),
    during which Python's interpreter lock is free: apply_plan records the next batch's undo
    meanwhile. Nothing is sent before its undo is recorded, the batches keep their order, and
    each one's outcome is in the report once it has been waited for (send, wait, close)."""

    def __init__(self, kernel: KernelPort, report: ApplyReport) -> None:
        self._kernel, self._report = kernel, report
        self._in_flight: tuple[Sequence[Change], _Sending, list[str]] | None = None

    def send(self, batch: Sequence[Change]) -> bool:
        """Wait for the batch in flight, then send `batch`; True if the node's own plumbing
        failed in the batch waited for."""
        failed = self.wait()
        writes = [w for w in map(route_write, batch) if w is not None]
        sending = _Sending(self._kernel, writes)
        sending.start()
        # The lines that will say what was applied, written while the kernel does the batch.
        self._in_flight = (batch, sending, [applied_text(change) for change in batch])
        return failed

    def wait(self) -> bool:
        """Wait for the batch in flight (if any) and put its outcome in the report; True if the
        node's own plumbing failed in it."""
        if self._in_flight is None:
            return False
        batch, sending, texts = self._in_flight
        sending.join()  # a Ctrl-C here leaves it in flight: close() waits for it again
        self._in_flight = None
        errors = sending.outcome()  # the thread's exception, raised once
        return _account(zip(batch, texts, strict=True), errors, self._report)

    def close(self) -> None:
        """Wait for the batch in flight, whatever stops the apply (an exception from it too)."""
        self.wait()


class _Sending(threading.Thread):
    """One batch's kernel.write_routes, in a thread of its own."""

    def __init__(
        self, kernel: KernelPort, writes: list[tuple[str, Route | Nexthop, bytes]]
    ) -> None:
        super().__init__(name="kindplan-routes")
        self._kernel, self._writes = kernel, writes
        self._errors: list[KernelError | None] = []
        self._raised: BaseException | None = None

    def run(self) -> None:
        try:
            self._errors = self._kernel.write_routes(self._writes)
        except BaseException as e:  # raised again in the thread that waits for it
            self._raised = e

    def outcome(self) -> list[KernelError | None]:
        self.join()
        if self._raised is not None:
            raise self._raised
        return self._errors


def with_undo_facts(plan: Plan, kernel: KernelPort, iptables: IptablesPort, proto: int) -> Plan:
    """`plan` with what only the node knows that the undo of its changes needs: the kernel's own
    body of each foreign route it replaces or deletes (with_raw_routes), and whether a
    masquerade it writes makes the nat table too (with_made_tables)."""
    return with_made_tables(with_raw_routes(plan, kernel, proto), iptables)


def with_made_tables(plan: Plan, iptables: IptablesPort) -> Plan:
    """`plan` with each new masquerade (nothing there before) of iptables-nft marked when no nat
    table of its family exists yet: its undo drops the table the write makes. Asked of the
    kernel only for such a write (a first apply), never on a converged node."""
    new = [
        c
        for c in plan.changes
        if isinstance(c, WriteMasquerade)
        and c.backend == "iptables"  # iptables-nft's table; another backend's is its own
        and c.old is None
        and not c.hooks
        and c.masq is not None
    ]
    tables = {}
    for change in new:
        variant = _variant(iptables, change.variant)
        if variant.backend == "nft" and variant.backend not in tables:
            tables[variant.backend] = variant.nat_families()
    if not tables:
        return plan
    return replace(plan, changes=tuple(_made_table(c, iptables, tables) for c in plan.changes))


def _made_table(
    change: Change, iptables: IptablesPort, tables: dict[str, frozenset[int]]
) -> Change:
    if not isinstance(change, WriteMasquerade) or change.old is not None or change.hooks:
        return change
    there = tables.get(_variant(iptables, change.variant).backend)
    if there is None or change.version in there:
        return change
    return replace(change, made_table=True)


def with_raw_routes(plan: Plan, kernel: KernelPort, proto: int) -> Plan:
    """`plan` with the kernel's own body (KernelPort.raw_routes) of each foreign route it
    replaces or deletes, so that their undo puts them back exactly. kindplan's own routes are
    what their fields say (it wrote them): a plan without a foreign one costs a scan, no dump."""
    foreign = [
        route
        for change in plan.changes
        if (route := _replaced(change)) is not None and not route.owned_by(proto)
    ]
    raws = kernel.raw_routes(foreign) if foreign else {}
    raws = {route: raw for route, raw in raws.items() if _restorable(route, raw)}
    if not raws:
        return plan
    return replace(plan, changes=tuple(_with_raw(change, raws) for change in plan.changes))


def _restorable(route: Route, raw: bytes) -> bool:
    """Would the journal's reader take these bytes back (netlink_rawroute.check_raw)? A route
    with what it refuses (an encapsulation, say) is journaled by its fields alone, as before:
    bytes that made the journal unusable would make the whole generation impossible to undo."""
    from kindplan.node.netlink_rawroute import check_raw  # a rollback's module: see there

    try:
        check_raw(route, raw)
    except ValueError:
        return False
    return len(raw) <= MAX_RAW_ROUTE


def _with_raw(change: Change, raws: dict[Route, bytes]) -> Change:
    if isinstance(change, DelRoute) and change.route in raws:
        return replace(change, raw=raws[change.route])
    if isinstance(change, ReplaceRoute) and change.old in raws:
        return replace(change, old_raw=raws[change.old])
    return change


def _replaced(change: Change) -> Route | None:
    """The route a change takes away (replaced or deleted), if it is a route change."""
    if isinstance(change, DelRoute):
        return change.route
    if isinstance(change, ReplaceRoute):
        return change.old
    return None


def _batches(changes: Sequence[Change]) -> Iterator[Sequence[Change]]:
    """The changes in the order given: up to BATCH consecutive route changes at a time, or
    tunnel changes, every other change alone."""
    i = 0
    while i < len(changes):
        j = i + 1
        if route_write(changes[i]) is not None:
            while j < len(changes) and j - i < BATCH and route_write(changes[j]) is not None:
                j += 1
        elif isinstance(changes[i], TUNNEL_CHANGES):
            while j < len(changes) and j - i < BATCH and isinstance(changes[j], TUNNEL_CHANGES):
                j += 1
        yield changes[i:j]
        i = j


def _account(
    batch: Iterable[tuple[Change, str]], errors: Sequence[KernelError | None], report: ApplyReport
) -> bool:
    """Put a sent batch's outcome in the report (each change with its applied_text); True if the
    node's own plumbing failed in it."""
    plumbing_failed = False
    for (change, text), error in zip(batch, errors, strict=True):
        if error is None:
            report.applied.append(change)
            report.applied_texts.append(text)
            continue
        report.failures.append(f"{describe(change)}: {error}")
        if error.maybe_applied:
            report.maybe_applied.append(change)
        # A peer the kernel refuses (not on-link) is the cluster's problem; a pod's host route
        # is this node's plumbing, which kubelet must not see as ready without.
        route = _route_of(change)
        if route is not None and route.gateway is not None:
            report.refused_peers.append(change)
        else:
            plumbing_failed = True
    return plumbing_failed


def _write_tunnel(batch: Sequence[Change], kernel: KernelPort, report: ApplyReport) -> None:
    """Send a batch of tunnel changes (devices one by one, entries in one go)."""
    tunnel = [c for c in batch if isinstance(c, TUNNEL_CHANGES)]
    for change, error in zip(tunnel, kernel.write_tunnel(tunnel), strict=True):
        if error is None:
            report.applied.append(change)
            continue
        report.failures.append(f"{describe(change)}: {error}")
        if error.maybe_applied:
            report.maybe_applied.append(change)


def _make(change: Change, kernel: KernelPort, iptables: IptablesPort, report: ApplyReport) -> bool:
    """Make one change that is not a route; False if it was refused (said in the report)."""
    try:
        apply_change(change, kernel, iptables)
    except RuntimeFailure as e:
        report.failures.append(f"{describe(change)}: {e}")
        return False
    report.applied.append(change)
    report.applied_texts.append(applied_text(change))
    return True


def settle(observe: Callable[[], T], done: Callable[[T], bool], attempts: int = 3) -> T:
    """`observe()` until `done` says its result is final, at most `attempts` times: the last one.

    The one retry of kindplan's verifications (after an apply, after a rollback): the kernel and
    iptables can lag a moment behind a write they acknowledged (an nft commit not yet in the
    next iptables-save, a route dump racing the write), so what is still different is called a
    residue only after a brief wait, 0.1 s then 0.2 s.
    """
    for attempt in range(1, attempts):
        result = observe()
        if done(result):
            return result
        time.sleep(0.1 * attempt)
    return observe()


def verify_report(report: ApplyReport, verify: Callable[[], Plan]) -> None:
    """Observe again (`verify()`) until nothing is left; the residue goes into the report (at
    once if the apply had failures: then waiting changes nothing)."""
    report.residue = settle(verify, lambda residue: residue.empty or bool(report.failures))
