"""The reconcile loop's deletion guard: a source that suddenly loses most nodes is held back.

An API server answering with a half-empty node list, or a snapshot file truncated by a broken
pipeline, would otherwise cut a node off from most of the cluster within one round. The guard
holds back the peer-route deletions of such a round (additions still go in) until the same
deletions have been asked for in several consecutive rounds spanning some time, or the operator
allows them. Deletions applied in the last minute count too, so a shrink that arrives as many
small rounds (one DELETED event each) is caught like one that arrives at once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

from kindplan.model import DelRoute, ObservedState, Plan, Route

RECENT_SECONDS = 60.0  # deletions applied this recently count with the round's own


@dataclass(frozen=True, slots=True)
class Guarded:
    plan: Plan  # what may be applied this round
    held: tuple[DelRoute, ...]  # deletions held back
    owned: int  # peer routes kindplan owns now (its route protocol, via a gateway)


def peer_route(route: Route, route_proto: int) -> bool:
    # Peer routes (a PodCIDR via a node's InternalIP) are what a shrunken node list takes away;
    # the pods' host routes on this node do not depend on the node list.
    return route.proto == route_proto and route.gateway is not None


def owned_routes(observed: ObservedState, route_proto: int) -> int:
    """The peer routes kindplan owns now."""
    return sum(1 for route in observed.routes if peer_route(route, route_proto))


def split_deletions(
    plan: Plan,
    observed: ObservedState,
    route_proto: int,
    max_fraction: float,
    recently_deleted: int = 0,
) -> Guarded:
    """Hold back the round's peer-route deletions if, with the `recently_deleted` ones, more than
    `max_fraction` of the peer routes owned before them would be gone.

    >>> from kindplan.model import ObservedState, Plan
    >>> split_deletions(Plan("n", ()), ObservedState((), (), (), (), None), 75, 0.5).held
    ()
    """
    owned = owned_routes(observed, route_proto)
    deletions = tuple(
        c for c in plan.changes if isinstance(c, DelRoute) and peer_route(c.route, route_proto)
    )
    gone = len(deletions) + recently_deleted
    if not deletions or gone <= max_fraction * (owned + recently_deleted):
        return Guarded(plan, (), owned)
    held = set(deletions)  # a set: membership by hash, not a scan (5,000 deletions at once)
    rest = tuple(c for c in plan.changes if c not in held)
    return Guarded(replace(plan, changes=rest), deletions, owned)


class DeletionGuard:
    """Remembers held deletions across rounds; releases them once the same ones were asked for in
    `rounds` consecutive rounds and for at least `min_seconds` (events can make rounds quick)."""

    def __init__(
        self,
        max_fraction: float,
        rounds: int,
        clock: Callable[[], float],  # seconds, monotonic: passed in, so the guard stays pure
        min_seconds: float = 0.0,
    ) -> None:
        self.max_fraction = max_fraction
        self.rounds = rounds
        self.min_seconds = min_seconds
        self._clock = clock
        self._held: frozenset[Route] = frozenset()
        self._since = 0.0  # when the held deletions were first asked for
        self._recent: deque[tuple[float, int]] = deque()  # (when, peer routes deleted)
        self.streak = 0  # consecutive rounds that asked for the same held deletions
        self.released = False  # the last check let held deletions through

    def check(self, plan: Plan, observed: ObservedState, route_proto: int) -> Guarded:
        """The plan to apply now; deletions held back unless they persisted long enough."""
        now = self._clock()
        while self._recent and self._recent[0][0] < now - RECENT_SECONDS:
            self._recent.popleft()
        recent = sum(n for _, n in self._recent)
        guarded = split_deletions(plan, observed, route_proto, self.max_fraction, recent)
        held = frozenset(c.route for c in guarded.held)
        self.released = False
        if not held:
            self._held, self.streak = frozenset(), 0
            return guarded
        if held == self._held:
            self.streak += 1
        else:
            self._held, self.streak, self._since = held, 1, now
        if self.streak >= self.rounds and now - self._since >= self.min_seconds:
            self._held, self.streak, self.released = frozenset(), 0, True
            return Guarded(plan, (), guarded.owned)
        return guarded

    def deleted(self, count: int) -> None:
        """Peer routes deleted by the round just applied (they count against the next rounds)."""
        if count:
            self._recent.append((self._clock(), count))
