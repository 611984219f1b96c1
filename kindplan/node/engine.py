"""The imperative shell around the pure core: observe a node, compile, diff, apply, verify.

reconcile() is the one story of an apply, for a one-shot `apply` and for every round of the watch
loop alike: observe and plan, the steps it is given (the loop's deletion guard, a saved plan's
check), apply with the undo recorded first, verify, remember a converged node. It returns values;
the command line prints them and the loop logs them. Everything here works through the handles it
is given (ports.py): *_node opens them with opener.open_node (lock, namespace, kernel, iptables),
the rest takes them from its caller (the loop, a test's fakes).
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from kindplan.core.changes import (
    AddRoute,
    Change,
    DelAddress,
    DeleteConflist,
    Plan,
    RemoveMasquerade,
    ReplaceRoute,
    WriteConflist,
    WriteMasquerade,
)
from kindplan.core.compiler import (
    compile_desired,
    find_node,
    masq_backend,
    no_masquerade,
    route_style_families,
)
from kindplan.core.diff import diff, masquerade_held, not_in_effect
from kindplan.core.model import DesiredState, ObservedState, Options, Snapshot
from kindplan.core.nexthop_changes import AddNexthop, ReplaceNexthop
from kindplan.core.nexthop_diff import nexthop_overtaken, nexthops_by_id
from kindplan.core.nexthops import nexthop_command
from kindplan.core.policychanges import (
    DelPolicyTable,
    WritePolicyElements,
    WritePolicyTable,
    policy_payload,
)
from kindplan.core.policydiff import policy_held
from kindplan.core.policytable import table_digest
from kindplan.core.routes import Route, route_command
from kindplan.errors import Interrupted, KindplanError, RuntimeFailure
from kindplan.node.apply import (
    ApplyReport,
    apply_plan,
    settle,
    verify_report,
    with_undo_facts,
)
from kindplan.node.cnicache import with_local_pods, without_uplink
from kindplan.node.converged import Record, Remember, save_record
from kindplan.node.files import write_atomic
from kindplan.node.journal import Generation, Journal, Recording
from kindplan.node.netns import namespace_identity
from kindplan.node.observe import (
    Where,
    digest,
    find_uplink,
    fingerprint,
    host_facts,
    observed_digest,
    off_link_peers,
    read_conflist,
    read_local_pods,
    read_observed,
)
from kindplan.node.opener import open_node
from kindplan.node.ports import IptablesPort, KernelPort, NodeHandles

if TYPE_CHECKING:
    from kindplan.core.policy.facts import PolicyLine

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Planned:
    desired: DesiredState
    observed: ObservedState
    plan: Plan
    where: Where  # the node's inputs it was observed from

    @property
    def fingerprint(self) -> str:
        """A digest of the observed node (10,000 routes at 5,000 dual-stack nodes: made only
        when asked)."""
        return fingerprint(self.observed)


def policy_facts(planned: Planned, snapshot: Snapshot) -> list[PolicyLine]:
    """What the plan's NetworkPolicy change means in pods and policies (core/policy/facts.py):
    nothing to load for a node without a policy table either side."""
    if planned.observed.policy is None and planned.desired.policy is None:
        return []
    from kindplan.core.policy.facts import policy_lines

    return policy_lines(planned.observed.policy, planned.desired.policy, snapshot)


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


def observe_where(snapshot: Snapshot, options: Options) -> Where:
    """Where the node's inputs are for this snapshot and these options."""
    network = snapshot.cluster.cni.network_name
    return Where.of(conflist_path(snapshot, options), snapshot.families, network, options)


def make_plan(
    snapshot: Snapshot,
    options: Options,
    kernel: KernelPort,
    iptables: IptablesPort,
    memo: Memo | None = None,
) -> Planned:
    """Observe the node and diff it against what the snapshot says it should be."""
    call = memo or _call
    node = find_node(snapshot, options.node)
    where = observe_where(snapshot, options)
    local_pods = read_local_pods(where)
    warnings: list[str] = []
    if where.cni_cache is not None:
        snapshot, skipped = with_local_pods(snapshot, node.name, list(local_pods[0]))
        warnings += [*local_pods[1], *skipped]
    observed = read_observed(kernel, iptables, where, local_pods)
    uplink, assumed = find_uplink(observed.links, snapshot, node, options.uplink)
    warnings += assumed
    if where.cni_cache is not None:
        snapshot, skipped = without_uplink(snapshot, local_pods[0], uplink.name)
        warnings += skipped
    facts = host_facts(snapshot, uplink, options.mtu)
    supported, style = observed.nexthops is not None, options.route_style
    if (style or snapshot.cluster.route_style) == "nexthop" and not supported:
        raise RuntimeFailure("route style nexthop: this kernel has no nexthop objects (5.3+)")
    families = call(route_style_families, snapshot, node, style, supported)
    desired = call(
        compile_desired,
        snapshot,
        node.name,
        facts,
        route_proto=options.route_proto,
        masq_backend=masq_backend(options.masq_backend or snapshot.cluster.masq_backend, observed),
        no_masquerade=no_masquerade(options),
        cross_subnet=options.cross_subnet,
        nexthop_families=families,
    )
    plan = call(
        diff,
        desired,
        observed,
        conflist_path=str(where.conflist),
        route_proto=options.route_proto,
        adopt=options.adopt,
    )
    tunneled = frozenset((n.peer, n.address.version) for n in desired.neighbours)
    off_link = call(off_link_peers, snapshot, node, uplink, tunneled)
    if off_link:
        warnings.append(
            f"not on-link from {uplink.name}, the kernel will refuse their routes: "
            + ", ".join(off_link)
            + " (--cross-subnet vxlan reaches them through a tunnel)"
        )
    plan = replace(plan, warnings=(*warnings, *plan.warnings))
    return Planned(desired, observed, plan, where)


def apply_planned(
    snapshot: Snapshot,
    options: Options,
    planned: Planned,
    node: NodeHandles,
    journal: Journal | None = None,
    *,
    held: frozenset[Change] = frozenset(),
    memo: Memo | None = None,
    stop: Callable[[], bool] | None = None,
) -> ApplyReport:
    """Apply a plan made by make_plan, then observe again until nothing is left (or fail).

    With a journal, the undo of each batch is recorded before the batch is sent, and the
    generation is marked complete once every change was made (dropped if none was); if anything
    stops the apply half way (`stop()` between batches, an error), it stays "did not finish".
    `held` are changes a step of reconcile left out (the loop's deletion guard): not a residue.
    """

    def verify() -> Plan:  # the memo spares compiling the same snapshot again
        again = make_plan(snapshot, options, node.kernel, node.iptables, memo)
        plan, report.verified = again.plan, again.observed
        if not held:
            return plan
        return replace(plan, changes=tuple(c for c in plan.changes if c not in held))

    recording = None
    if journal is not None:
        recording = journal.begin(
            planned.desired.node,
            snapshot.families,
            str(planned.where.conflist),
            namespace_identity(),
        )
    report = ApplyReport()
    try:
        record = recording.record if recording is not None else None
        plan = planned.plan
        if recording is not None:  # the undo of a foreign route: exactly as the kernel had it
            plan = with_undo_facts(plan, node.kernel, node.iptables, options.route_proto)
        apply_plan(plan, node.kernel, node.iptables, report=report, record=record, stop=stop)
        if recording is not None:
            if report.applied or report.maybe_applied:
                recording.complete()
            else:  # the kernel refused all of it: nothing to undo, nothing to keep
                recording.drop()
    except Exception as e:
        raise _unfinished(e, recording, report) from e
    finally:
        if recording is not None:
            recording.close()
    verify_report(report, verify)  # a residue is a finished apply's failure, not an unfinished one
    return report


def _unfinished(error: Exception, recording: Recording | None, report: ApplyReport) -> Exception:
    """One line for an apply stopped half way: why, and what the journal holds for it."""
    why = str(error) if isinstance(error, KindplanError) else f"{type(error).__name__}: {error}"
    done = f"{len(report.applied)} change(s) made"
    if recording is not None and recording.written:
        done += (
            f"; generation {recording.number} did not finish, the undo of every change that "
            "may have been made is recorded: kindplan rollback undoes it, or apply again"
        )
    elif recording is not None:
        done = "nothing was changed"  # the journal is written before each change
    if isinstance(error, Interrupted):
        return Interrupted(f"interrupted ({why}, the batch in flight finished): {done}")
    return RuntimeFailure(f"apply stopped by an error ({why}): {done}")


def conflist_left_alone(observed: ObservedState) -> str | None:
    """One line naming a conflist that could not be read (the plan leaves it alone), if any."""
    if observed.conflist_error is None:
        return None
    return (
        f"{observed.conflist_error}; kindplan leaves it alone and applies the rest: "
        "remove it and apply again"
    )


def _remember(
    remember: Remember, where: Where, plan: Plan, node: NodeHandles, seen: ObservedState | None
) -> None:
    """Record a converged node (after observing it: nothing may change in between but us).
    `seen`: the observation that found it converged; its route dump is hashed now, and the node
    is not read a second time (unless that dump is no longer the kernel's last)."""
    routes = node.kernel.dumped_digest(seen.routes) if seen is not None else None
    record = Record(
        remember.inputs,
        (
            observed_digest(node.kernel, node.iptables, where)
            if seen is None or routes is None
            else digest(seen, routes, stamped=True)
        ),
        str(where.conflist),
        where.families,
        where.network,
        remember.output(plan),
        remember.warnings,
    )
    with contextlib.suppress(OSError, RuntimeFailure):  # a speed-up, never a reason to fail
        save_record(remember.path, record)


def plan_node(snapshot: Snapshot, options: Options, netns: str | None) -> Planned:
    """make_plan inside network namespace `netns` (None: here)."""
    with open_node(netns, None) as node:  # a read: no lock
        return make_plan(snapshot, options, node.kernel, node.iptables)


# A step between planning and applying: given what was planned (with the plan as the steps
# before it left it), the plan to go on with: the same, or without some of its changes (held
# back: not applied, and no residue when verifying), or an exception before anything is written.
Step = Callable[[Planned], Plan]


@dataclass(frozen=True, slots=True)
class Reconciled:
    """What one reconcile did."""

    planned: Planned  # the node as observed, and the whole plan before the steps
    held: tuple[Change, ...]  # the changes a step left out, in the plan's order
    report: ApplyReport | None  # None: nothing to apply once the steps had run
    left_alone: str | None  # a conflist that could not be read (conflist_left_alone), if any

    @property
    def converged(self) -> bool:
        """Did it leave the node as the snapshot says, nothing held back, nothing in conflict?"""
        if self.left_alone is not None or self.held:
            return False
        if self.report is None:
            return not self.planned.plan.conflicts
        residue = self.report.residue
        return self.report.ok and residue is not None and not residue.conflicts


def reconcile(
    snapshot: Snapshot,
    options: Options,
    node: NodeHandles,
    *,
    steps: Sequence[Step] = (),
    memo: Memo | None = None,
    journal: Journal | None = None,
    remember: Remember | None = None,
    stop: Callable[[], bool] | None = None,
) -> Reconciled:
    """Bring a node opened already to what `snapshot` says: observe and plan, run `steps` in
    order, apply what they let through (apply_planned: undo in `journal` first, then verify),
    and record a converged node in `remember`. A one-shot apply and each watch round call this.
    """
    memo = memo if memo is not None else Memo()
    planned = make_plan(snapshot, options, node.kernel, node.iptables, memo)
    plan = planned.plan
    for step in steps:
        plan = step(planned if plan is planned.plan else replace(planned, plan=plan))
    held: tuple[Change, ...] = ()
    if plan is not planned.plan:  # a set: 5,000 changes at once, checked by hash
        kept = set(plan.changes)
        held = tuple(c for c in planned.plan.changes if c not in kept)
    report = None
    if not plan.empty:
        to_apply = replace(planned, plan=plan)
        report = apply_planned(
            snapshot, options, to_apply, node, journal, held=frozenset(held), memo=memo, stop=stop
        )
    done = Reconciled(planned, held, report, conflist_left_alone(planned.observed))
    left = planned.plan if report is None else report.residue  # what a converged apply shows
    if remember is not None and done.converged and left is not None:
        seen = planned.observed if report is None else report.verified
        _remember(remember, planned.where, left, node, seen)
    return done


def apply_node(
    snapshot: Snapshot,
    options: Options,
    netns: str | None,
    *,
    lock_timeout: float,
    steps: Sequence[Step] = (),
    journal: Journal | None = None,
    remember: Remember | None = None,
    stop: Callable[[], bool] | None = None,
) -> tuple[Planned, ApplyReport | None]:
    """apply_opened under the node lock, inside network namespace `netns` (None: here)."""
    with open_node(netns, lock_timeout) as node:
        return apply_opened(
            snapshot, options, node, steps=steps, journal=journal, remember=remember, stop=stop
        )


def apply_opened(
    snapshot: Snapshot,
    options: Options,
    node: NodeHandles,
    *,
    steps: Sequence[Step] = (),
    journal: Journal | None = None,
    remember: Remember | None = None,
    stop: Callable[[], bool] | None = None,
) -> tuple[Planned, ApplyReport | None]:
    """reconcile once, as a one-shot apply reports it: a conflist it had to leave alone is one
    of the report's failures; None for the report when there was nothing to do."""
    done = reconcile(
        snapshot, options, node, steps=steps, journal=journal, remember=remember, stop=stop
    )
    report = done.report
    if done.left_alone is not None:
        report = report if report is not None else ApplyReport()
        report.failures.append(done.left_alone)
    return done.planned, report


@dataclass(frozen=True)
class RolledBack:
    generation: Generation
    report: ApplyReport
    residue: tuple[Change, ...]  # undo changes still not in effect after the rollback
    left_alone: tuple[tuple[Change, str], ...]  # conflist undos someone overtook; how to finish


def rollback_node(netns: str | None, journal: Journal, *, lock_timeout: float) -> RolledBack | None:
    """rollback_opened under the node lock, inside network namespace `netns` (None: here)."""
    with open_node(netns, lock_timeout) as node:
        return rollback_opened(node, journal)


def rollback_opened(node: NodeHandles, journal: Journal) -> RolledBack | None:
    """Undo the newest generation of the journal, verify it, and drop it from the journal
    (None: there is none). A conflist changed by someone since the apply wrote it is left alone
    and said so, with how to finish by hand: the rest is rolled back all the same."""
    generation = journal.last()
    if generation is None:
        return None
    here = namespace_identity()
    if generation.netns is not None and generation.netns != here:
        raise RuntimeFailure(
            f"{journal.path}: generation {generation.number} changed another network namespace "
            f"(nsfs {generation.netns}; this one is {here}): rollback acts only where the apply "
            "did (run it with the --netns, or in the namespace, of that apply)"
        )
    kernel, iptables = node.kernel, node.iptables

    where = Where(Path(generation.conflist_path), generation.families)

    def observe() -> ObservedState:
        return read_observed(kernel, iptables, where)

    observed = observe()
    todo = not_in_effect(generation.undo, observed)
    held, objects = _routes_by_key(observed.routes), nexthops_by_id(observed)
    left_alone = tuple(
        (c, _finish_by_hand(c, journal, generation))
        for c in todo
        if _overtaken(c)
        or _route_overtaken(c, held)
        or nexthop_overtaken(c, objects)
        or _state_overtaken(c, observed)
    )
    skip = {c for c, _ in left_alone}
    todo = tuple(c for c in todo if c not in skip)
    report = apply_plan(Plan(generation.node, todo), kernel, iptables)

    def left() -> tuple[Change, ...]:
        return tuple(c for c in not_in_effect(generation.undo, observe()) if c not in skip)

    residue = settle(left, lambda residue: not residue or bool(report.failures))
    if not residue and not report.failures:
        journal.drop_last()
    return RolledBack(generation, report, residue, left_alone)


def _overtaken(undo: Change) -> bool:
    """A conflist that no longer holds what the apply wrote: someone else's now."""
    if isinstance(undo, WriteConflist | DeleteConflist):
        try:
            return read_conflist(Path(undo.path)) != undo.old
        except RuntimeFailure:  # no longer a regular file (a link, a folder): not ours now
            return True
    return False


def _routes_by_key(routes: Sequence[Route]) -> dict[object, list[Route]]:
    held: dict[object, list[Route]] = {}
    for route in routes:
        held.setdefault(route.key, []).append(route)
    return held


def _route_overtaken(undo: Change, held: dict[object, list[Route]]) -> bool:
    """Compare-and-swap for routes: an undo puts the old route back only where the kernel still
    holds what the apply left there. A routing daemon (or an operator) that has since put its own
    route at the destination keeps it: the undo would overwrite it."""
    match undo:
        case ReplaceRoute(route=_, old=ours):  # the apply replaced a route with `ours`
            return not any(
                r.proto == ours.proto and r.gateway == ours.gateway and r.ifname == ours.ifname
                for r in held.get(ours.key, ())
            )
        case AddRoute(route=gone):  # the apply deleted `gone`: nothing may be there now
            return bool(held.get(gone.key))
        case _:
            return False


def _state_overtaken(undo: Change, observed: ObservedState) -> bool:
    """Compare-and-swap for addresses and masquerades: an address goes only from the very link
    the apply put it on (a veth that has since taken its name is another pod's), a masquerade is
    put back or removed only while the backend holds what the apply left (its rules and hooks);
    someone's edit since then stays."""
    match undo:
        case DelAddress(address=address, ifindex=ifindex) if ifindex:
            link = observed.link(address.ifname)
            return link is not None and link.index != ifindex
        case WriteMasquerade() | RemoveMasquerade():
            return masquerade_held(observed, undo) != (undo.old, undo.hooks, ())
        case WritePolicyTable() | DelPolicyTable() | WritePolicyElements():
            # the table exactly as the apply left it: every set, element, chain and rule
            return (
                observed.policy_foreign
                or bool(observed.policy_unread)
                or table_digest(observed.policy) != policy_held(undo)
            )
        case _:
            return False


def _finish_by_hand(undo: Change, journal: Journal, generation: Generation) -> str:
    """How an operator finishes the rollback of a route, an address, a masquerade or a
    conflist left alone."""
    if isinstance(undo, ReplaceRoute | AddRoute):
        return f"if the old route should come back: ip {route_command(undo.route)}"
    if isinstance(undo, ReplaceNexthop | AddNexthop):
        return f"if the old object should come back: ip {nexthop_command(undo.nexthop)}"
    if isinstance(undo, DelAddress):
        address = undo.address
        return (
            f"{address.ifname} is another link than the apply's; if the address should go: ip "
            f"address del {address.address}/{address.prefixlen} dev {address.ifname}"
        )
    if isinstance(undo, WritePolicyTable | DelPolicyTable | WritePolicyElements):
        saved = journal.path.parent / f"generation-{generation.number}.policy.nft"
        write_atomic(saved, policy_payload(undo), mode=0o600)
        return (
            "the policy table changed since the apply; if it should still be put back as it "
            f"was: nft -f {shlex.quote(str(saved))}"
        )
    if isinstance(undo, WriteMasquerade | RemoveMasquerade):
        return (
            "compare it with what the apply left (kindplan plan shows what kindplan would "
            "write) and edit it by hand"
        )
    assert isinstance(undo, WriteConflist | DeleteConflist)
    if isinstance(undo, DeleteConflist):
        return f"the apply created it; if it should go: rm {shlex.quote(undo.path)}"
    saved = journal.path.parent / f"generation-{generation.number}.conflist"
    write_atomic(saved, undo.content, mode=0o600)
    return (
        f"what it held before the apply is in {saved}: "
        f"cp {shlex.quote(str(saved))} {shlex.quote(undo.path)}"
    )
