"""The nexthop objects of a plan: what diff.py asks of them, beside the routes. Pure.

- A desired object missing is added; kindplan's own at the id with other words is replaced in
  place (every route through it follows).
- An id held by someone else's object (another protocol, or a group, blackhole or FDB object) is
  never touched, --adopt or not: replacing it would move the traffic of every route that uses
  it. That peer gets a plain route instead, and the plan says why.
- kindplan's objects that nothing desired names are deleted after the routes (the kernel deletes
  the routes through an object with it), unless a foreign route uses one: then it stays.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kindplan.core.changes import Change
from kindplan.core.model import DesiredState, ObservedState
from kindplan.core.nexthop_changes import AddNexthop, DelNexthop, ReplaceNexthop
from kindplan.core.nexthops import Nexthop, nexthop_text
from kindplan.core.routes import Route


@dataclass
class NexthopDiff:
    changes: list[Change] = field(default_factory=list)  # before the routes
    deletions: list[Change] = field(default_factory=list)  # after the routes
    warnings: list[str] = field(default_factory=list)
    routes: tuple[Route, ...] = ()  # the desired routes, those of taken ids made plain


def diff_nexthops(desired: DesiredState, observed: ObservedState, proto: int) -> NexthopDiff:
    """The changes of nexthop objects that make `observed` hold `desired`'s."""
    held = {n.id: n for n in observed.nexthops or ()}
    out = NexthopDiff(routes=desired.routes)
    taken: dict[int, Nexthop] = {}
    for want in desired.nexthops:
        seen = held.get(want.id)
        if seen is None:
            out.changes.append(AddNexthop(want))
        elif not seen.owned_by(proto):
            taken[want.id] = seen
            out.warnings.append(
                f"nexthop id {want.id} is taken by another's object ({nexthop_text(seen)}), left "
                f"alone: peer {want.peer} gets a plain route"
            )
        elif not want.same(seen):
            out.changes.append(ReplaceNexthop(want, seen))
    if taken:
        out.routes = tuple(_plain(r) if r.nh_id in taken else r for r in desired.routes)
    wanted = {n.id for n in desired.nexthops}
    stale = [n for n in held.values() if n.owned_by(proto) and n.id not in wanted]
    if stale:
        used = {r.nh_id: r for r in observed.routes if r.nh_id and not r.owned_by(proto)}
        for nexthop in sorted(stale):
            user = used.get(nexthop.id)
            if user is None:
                out.deletions.append(DelNexthop(nexthop))
            else:
                out.warnings.append(
                    f"kindplan's nexthop {nexthop_text(nexthop)} is no longer needed but "
                    f"foreign route {user.dst} (proto {user.proto}) uses it: left in place"
                )
    return out


def _plain(route: Route) -> Route:
    """The route without its nexthop object: through its gateway and device."""
    dst, ifname, gateway, scope, metric, proto, table, peer = route[:8]
    return Route(dst, ifname, gateway, scope, metric, proto, table, peer)


def nexthops_by_id(observed: ObservedState) -> dict[int, Nexthop]:
    return {n.id: n for n in observed.nexthops or ()}


def nexthop_in_effect(
    change: AddNexthop | ReplaceNexthop | DelNexthop, held: dict[int, Nexthop]
) -> bool:
    """Does the node, whose objects are `held` (nexthops_by_id), show `change` made?"""
    seen = held.get(change.nexthop.id)
    if isinstance(change, DelNexthop):
        return seen is None or seen.proto != change.nexthop.proto
    return seen is not None and change.nexthop.same(seen)


def nexthop_overtaken(undo: Change, held: dict[int, Nexthop]) -> bool:
    """Compare-and-swap for objects, as for routes: the undo of a ReplaceNexthop puts the old
    object back only where the kernel still holds the one the apply wrote (someone who has
    since pointed it elsewhere keeps it), and a re-add only where the id is free."""
    if isinstance(undo, ReplaceNexthop):
        seen = held.get(undo.old.id)
        return seen is None or not undo.old.same(seen)
    if isinstance(undo, AddNexthop):
        return undo.nexthop.id in held
    return False
