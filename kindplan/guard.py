"""The reconcile loop's deletion guard: a source that suddenly loses most nodes is held back.

An API server answering with a half-empty node list, or a snapshot file truncated by a broken
pipeline, would otherwise cut a node off from most of the cluster within one round. The guard
holds back the route deletions of such a round (additions still go in) until the same deletions
have been asked for in several consecutive rounds, or the operator allows them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from kindplan.model import DelRoute, ObservedState, Plan, Route


@dataclass(frozen=True, slots=True)
class Guarded:
    plan: Plan  # what may be applied this round
    held: tuple[DelRoute, ...]  # deletions held back
    owned: int  # peer routes kindplan owns now (its route protocol, via a gateway)


def _peer_route(route: Route, route_proto: int) -> bool:
    # Peer routes (a PodCIDR via a node's InternalIP) are what a shrunken node list takes away;
    # the pods' host routes on this node do not depend on the node list.
    return route.proto == route_proto and route.gateway is not None


def owned_routes(observed: ObservedState, route_proto: int) -> int:
    """The peer routes kindplan owns now."""
    return sum(1 for route in observed.routes if _peer_route(route, route_proto))


def split_deletions(
    plan: Plan, observed: ObservedState, route_proto: int, max_fraction: float
) -> Guarded:
    """Hold back the round's deletions of peer routes if more than `max_fraction` of them go.

    >>> from kindplan.model import ObservedState, Plan
    >>> split_deletions(Plan("n", ()), ObservedState((), (), (), (), None), 75, 0.5).held
    ()
    """
    owned = owned_routes(observed, route_proto)
    deletions = tuple(
        c for c in plan.changes if isinstance(c, DelRoute) and _peer_route(c.route, route_proto)
    )
    if not deletions or len(deletions) <= max_fraction * owned:
        return Guarded(plan, (), owned)
    rest = tuple(c for c in plan.changes if not (isinstance(c, DelRoute) and c in deletions))
    return Guarded(replace(plan, changes=rest), deletions, owned)


class DeletionGuard:
    """Remembers held deletions across rounds; releases them once they persist `rounds` rounds."""

    def __init__(self, max_fraction: float, rounds: int) -> None:
        self.max_fraction = max_fraction
        self.rounds = rounds
        self._held: frozenset[Route] = frozenset()
        self.streak = 0  # consecutive rounds that asked for the same held deletions
        self.released = False  # the last check let held deletions through

    def check(self, plan: Plan, observed: ObservedState, route_proto: int) -> Guarded:
        """The plan to apply now; deletions held back unless they persisted long enough."""
        guarded = split_deletions(plan, observed, route_proto, self.max_fraction)
        held = frozenset(c.route for c in guarded.held)
        self.released = False
        if not held:
            self._held, self.streak = frozenset(), 0
            return guarded
        self.streak = self.streak + 1 if held == self._held else 1
        self._held = held
        if self.streak >= self.rounds:  # asked for again and again: the cluster did shrink
            self._held, self.streak, self.released = frozenset(), 0, True
            return Guarded(plan, (), guarded.owned)
        return guarded
