"""The reconcile loop's deletion guard: a source that suddenly takes away most of what kindplan
owns on the node is held back.

An API server answering with a half-empty node list, or a snapshot file truncated by a broken
pipeline, would otherwise cut a node off from most of the cluster within one round; a snapshot
cut before `pods:` would take every pod's host route. The guard counts, kind by kind, the owned
state a round would remove (peer routes, pod host routes, veth addresses, SNAT rules and chains,
the conflist's pod ranges, the conflist itself) and holds back the removals of every kind that
would lose more than a fraction of what it holds (additions still go in) until the same removals
have been asked for in several consecutive rounds spanning some time, or the operator allows
them. Removals applied in the last minute count too, so a shrink that arrives as many small
rounds (one DELETED event each) is caught like one that arrives at once.
"""

from __future__ import annotations

import json
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, assert_never

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
from kindplan.core.model import ObservedState
from kindplan.core.nexthop_changes import AddNexthop, DelNexthop, ReplaceNexthop
from kindplan.core.nfttable import NftTable
from kindplan.core.policychanges import DelPolicyTable, WritePolicyElements, WritePolicyTable
from kindplan.core.policytable import rule_count
from kindplan.core.routes import owned_routes
from kindplan.core.tunnelchanges import (
    DelFdb,
    DelNeighbour,
    DelVxlan,
    WriteFdb,
    WriteNeighbour,
    WriteVxlan,
)

RECENT_SECONDS = 60.0  # removals applied this recently count with the round's own

# What the guard counts, in the order it names them.
PEER_ROUTES = "peer route(s)"
POD_ROUTES = "pod route(s)"
ADDRESSES = "veth address(es)"
SNAT_RULES = "SNAT rule(s)"
SNAT_CHAINS = "SNAT chain(s)"
CONFLIST_RANGES = "conflist pod range(s)"
CONFLISTS = "conflist(s)"
TUNNEL_PEERS = "tunnel peer(s)"  # a neighbour entry counts a peer (its FDB entry goes with it)
TUNNEL_DEVICES = "tunnel device(s)"
NEXTHOPS = "nexthop object(s)"
# NetworkPolicy: a source that suddenly lists no policies (or half of them) would open every pod
# they isolate; the table's deletion and the rules a rewrite drops are held like routes. Element
# changes are not counted: pods come and go, and a pod list that empties is held as pod routes.
POLICY_TABLES = "policy table(s)"
POLICY_RULES = "policy rule(s)"
KINDS = (
    *(PEER_ROUTES, POD_ROUTES, ADDRESSES, SNAT_RULES, SNAT_CHAINS, CONFLIST_RANGES, CONFLISTS),
    *(TUNNEL_PEERS, TUNNEL_DEVICES, NEXTHOPS, POLICY_TABLES, POLICY_RULES),
)
# The changes that take nothing away, not even looked at (5,000 additions at once); every other
# type goes through removed_state, whose match must handle it (so a new type is never skipped).
_ADDITIONS = (SetSysctl, AddAddress, AddRoute, ReplaceRoute, AddNexthop, ReplaceNexthop)


@dataclass(frozen=True, slots=True)
class Guarded:
    plan: Plan  # what may be applied this round
    held: tuple[Change, ...]  # removals held back
    owned: int  # peer routes kindplan owns now (0 when the plan removes nothing: not counted)
    kinds: tuple[tuple[str, int, int], ...] = ()  # per kind held back: (kind, held, owned)


def owned_state(observed: ObservedState, route_proto: int) -> Counter[str]:
    """How much of each kind of state the node holds that a plan could remove."""
    peers = pods = 0
    for route in owned_routes(observed.routes, route_proto):  # 10,000: a plain loop, plain counters
        if route.gateway is None:
            pods += 1
        else:
            peers += 1
    owned = Counter({PEER_ROUTES: peers, POD_ROUTES: pods})
    owned[NEXTHOPS] = sum(1 for n in observed.nexthops or () if n.owned_by(route_proto))
    for link in observed.links:  # a pod veth's gateway address is a host address (/32, /128)
        owned[ADDRESSES] += sum(1 for a, length in link.addresses if length == a.max_prefixlen)
    for masq in observed.masq:
        if masq.masq is not None:
            owned[SNAT_CHAINS] += 1
            owned[SNAT_RULES] += len(masq.masq.rules) + len(masq.unread)
    if observed.tunnels:
        owned[TUNNEL_PEERS] = len(observed.neighbours)
        owned[TUNNEL_DEVICES] = sum(1 for t in observed.tunnels if t.owned)
    if observed.policy is not None:
        owned[POLICY_TABLES] = 1
        owned[POLICY_RULES] = rule_count(observed.policy)
    if observed.conflist is not None:
        owned[CONFLISTS] += 1
        owned[CONFLIST_RANGES] += len(conflist_subnets(observed.conflist))
    return owned


# An entry removed, by its change type: a peer's neighbour entry (its FDB entry goes with it),
# a tunnel device, a nexthop object.
_ENTRIES = {DelNeighbour: TUNNEL_PEERS, DelVxlan: TUNNEL_DEVICES, DelNexthop: NEXTHOPS}


def removed_state(change: Change) -> Counter[str]:
    """What of the node's state `change` takes away, by kind (empty for additions): kindplan's own,
    or a foreign route --adopt removes."""
    match change:
        case DelRoute(route=route):  # --adopt's removals of foreign routes count as well
            return Counter({PEER_ROUTES if route.gateway is not None else POD_ROUTES: 1})
        case DelAddress():
            return Counter({ADDRESSES: 1})
        case WriteMasquerade(masq=masq, old=old, unread=unread) if (
            masq is not None and old is not None
        ):
            return Counter({SNAT_RULES: len(set(old.rules) - set(masq.rules)) + len(unread)})
        case RemoveMasquerade(old=old, unread=unread):
            return Counter({SNAT_CHAINS: 1, SNAT_RULES: len(old.rules) + len(unread)})
        case WriteConflist(content=content, old=old) if old is not None:
            gone = conflist_subnets(old) - conflist_subnets(content)
            return Counter({CONFLIST_RANGES: len(gone)})
        case DeleteConflist(old=old):
            return Counter({CONFLISTS: 1, CONFLIST_RANGES: len(conflist_subnets(old))})
        case DelNeighbour() | DelVxlan() | DelNexthop() | DelPolicyTable() | WritePolicyTable():
            return _entries_removed(change)
        case (
            WriteVxlan()  # a device's attributes replaced, or a new one
            | WriteNeighbour()
            | WriteFdb()
            | DelFdb()  # counted with its peer's neighbour entry
            | AddNexthop()
            | ReplaceNexthop()
            | SetSysctl()
            | AddAddress()
            | AddRoute()
            | ReplaceRoute()
            | WriteMasquerade()  # a new masquerade, or its hooks only
            | WriteConflist()  # a new conflist
            | WritePolicyElements()  # elements only: not counted (see POLICY_RULES)
        ):
            return Counter()
        case _:
            assert_never(change)


def owned_routes_delta(applied: Iterable[Change], route_proto: int) -> int:
    """How many routes of kindplan's `applied` added, less those it deleted (the loop's gauge of
    owned routes, without observing again)."""
    delta = 0
    for change in applied:
        match change:
            case AddRoute(route=route) if route.owned_by(route_proto):
                delta += 1
            case DelRoute(route=route) if route.owned_by(route_proto):
                delta -= 1
            case ReplaceRoute(route=route, old=old) if route.owned_by(
                route_proto
            ) and not old.owned_by(route_proto):
                delta += 1  # a foreign route adopted
            case (
                SetSysctl()
                | AddAddress()
                | AddRoute()
                | ReplaceRoute()
                | DelRoute()
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
                | AddNexthop()
                | ReplaceNexthop()
                | DelNexthop()
                | WritePolicyTable()
                | DelPolicyTable()
                | WritePolicyElements()
            ):
                pass  # no route of kindplan's more or less
            case _:
                assert_never(change)
    return delta


def _entries_removed(
    change: DelNeighbour | DelVxlan | DelNexthop | DelPolicyTable | WritePolicyTable,
) -> Counter[str]:
    """A tunnel's entry or device, a nexthop object; the policy table, or the rules a rewrite of
    it drops (a new table drops none)."""
    if isinstance(change, DelPolicyTable):
        return Counter({POLICY_TABLES: 1, POLICY_RULES: rule_count(change.old)})
    if isinstance(change, WritePolicyTable):
        gone = _rules(change.old) - _rules(change.table) if change.old is not None else Counter()
        return Counter({POLICY_RULES: gone.total()})
    return Counter({_ENTRIES[type(change)]: 1})


def _rules(table: NftTable) -> Counter[tuple[str, str]]:
    return Counter((chain.name, rule) for chain in table.chains for rule in chain.rules)


def conflist_subnets(text: str) -> frozenset[str]:
    """The subnets of the conflist's IPAM ranges (none if it is not a conflist kindplan reads)."""
    try:
        doc: Any = json.loads(text)
        return frozenset(
            str(r["subnet"])
            for plugin in doc["plugins"]
            for ranges in (plugin.get("ipam") or {}).get("ranges") or ()
            for r in ranges
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return frozenset()


def removals(changes: Iterable[Change]) -> Counter[str]:
    """The owned state `changes` remove, by kind."""
    total: Counter[str] = Counter()
    for change in changes:
        if not isinstance(change, _ADDITIONS):
            total.update(removed_state(change))
    return total


def split_deletions(
    plan: Plan,
    observed: ObservedState,
    route_proto: int,
    max_fraction: float,
    recently_removed: Counter[str] | None = None,
) -> Guarded:
    """Hold back the round's removals of each kind of owned state of which, with the
        `recently_removed` ones, more than `max_fraction` of what was owned before them would go.

        >>> from kindplan.core.changes import Plan
        >>> from kindplan.core.model import ObservedState
    from kindplan.core.nexthop_changes import AddNexthop, DelNexthop, ReplaceNexthop
        >>> split_deletions(Plan("n", ()), ObservedState((), (), (), (), None), 75, 0.5).held
        ()
    """
    recent = recently_removed or Counter()
    by_change = [(c, removed_state(c)) for c in plan.changes if not isinstance(c, _ADDITIONS)]
    removing = Counter[str]()
    for _, removed in by_change:
        removing.update(removed)
    if not +removing:  # a converged round, every round: nothing to count the node for
        return Guarded(plan, (), 0)
    owned = owned_state(observed, route_proto)
    tripped = {
        kind: n
        for kind, n in removing.items()
        if n
        and max_fraction < 1  # 1: the operator allows anything
        and n + recent[kind] > max_fraction * (owned[kind] + recent[kind])
    }
    if PEER_ROUTES in tripped and removing[NEXTHOPS]:
        # The kernel deletes the routes through an object with it: held with the routes.
        tripped[NEXTHOPS] = removing[NEXTHOPS]
    if not tripped:
        return Guarded(plan, (), owned[PEER_ROUTES])
    held = tuple(c for c, removed in by_change if any(removed[k] for k in tripped))
    held_set = set(held)  # a set: membership by hash, not a scan (5,000 deletions at once)
    rest = tuple(c for c in plan.changes if c not in held_set)
    kinds = tuple((k, tripped[k], owned[k]) for k in KINDS if k in tripped)
    return Guarded(replace(plan, changes=rest), held, owned[PEER_ROUTES], kinds)


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
        self._held: frozenset[Change] = frozenset()
        self._since = 0.0  # when the held removals were first asked for
        self._recent: deque[tuple[float, Counter[str]]] = deque()  # (when, removed by kind)
        self.streak = 0  # consecutive rounds that asked for the same held removals
        self.released = False  # the last check let held removals through

    def check(self, plan: Plan, observed: ObservedState, route_proto: int) -> Guarded:
        """The plan to apply now; removals held back unless they persisted long enough."""
        now = self._clock()
        while self._recent and self._recent[0][0] < now - RECENT_SECONDS:
            self._recent.popleft()
        recent: Counter[str] = Counter()
        for _, removed in self._recent:
            recent.update(removed)
        guarded = split_deletions(plan, observed, route_proto, self.max_fraction, recent)
        held = frozenset(guarded.held)
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

    def applied(self, changes: Iterable[Change]) -> None:
        """The changes of the round just applied: what they removed counts against the next
        rounds for a minute."""
        removed = removals(changes)
        if removed:
            self._recent.append((self._clock(), removed))
