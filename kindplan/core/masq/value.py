"""Masquerade as a value: what one family's SNAT does, whichever backend holds it. Pure.

A node masquerades traffic that leaves for a destination that is not local, except to the
destinations whose traffic keeps its source: the cluster's pod subnets, then the exclusions the
user adds (cluster.nonMasqueradeCIDRs). The compiler makes one `Masquerade` per family; a
backend's dialect (dialects.py) reads what the backend holds into the same value and renders a
value into the backend's payload. The diff, the plan, the journal and trace compare and carry
values; only a dialect knows a backend's text.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from kindplan.core.addresses import IPAddress, IPNetwork, format_net, parse_cidr

EXEMPT = "exempt"  # traffic to the destination keeps its source address
MASQUERADE = "masquerade"  # traffic to the destination leaves with the node's address
ACTIONS = (EXEMPT, MASQUERADE)


class MasqRule(NamedTuple):
    """One step of a family's masquerade: what happens to traffic for `dst` (None: for any)."""

    action: str  # EXEMPT or MASQUERADE
    dst: IPNetwork | None = None


@dataclass(frozen=True, slots=True)
class Masquerade:
    """One family's masquerade: the first rule whose destination matches decides, in order;
    traffic that no rule matches keeps its source.

    What kindplan wants is always its exemptions, then one rule that masquerades the rest
    (`wanted`); what a backend holds may be any sequence of the two kinds of rule (kindnetd,
    given a new pod subnet, appends its exemption after the masquerade rule, where it never
    matches).
    """

    version: int
    rules: tuple[MasqRule, ...]

    @property
    def exempt(self) -> tuple[IPNetwork, ...]:
        """The destinations never masqueraded, in order."""
        return tuple(r.dst for r in self.rules if r.action == EXEMPT and r.dst is not None)

    def decide(self, dst: IPAddress) -> MasqRule | None:
        """The rule that decides for traffic to `dst`; None: no rule matches."""
        return next((r for r in self.rules if r.dst is None or dst in r.dst), None)


def wanted(version: int, exempt: Iterable[IPNetwork]) -> Masquerade:
    """The masquerade kindplan writes: each of `exempt` (in order, once), then the rest."""
    rules = [MasqRule(EXEMPT, net) for net in dict.fromkeys(exempt)]
    return Masquerade(version, (*rules, MasqRule(MASQUERADE)))


@dataclass(frozen=True, slots=True)
class MasqObserved:
    """What one backend holds of kindplan's masquerade for one family, as its dialect read it."""

    version: int
    masq: Masquerade | None  # None: nothing of kindplan's there (no chain, no table)
    # How many times the family's outgoing traffic is sent into it (1 is right), and where, in
    # the backend's own numbering (iptables: positions among POSTROUTING's rules, 1 the first),
    # so that a rollback puts copies back where they were.
    hooks: int = 0
    hooks_at: tuple[int, ...] = ()
    # What the dialect could not read as rules of the value, in the backend's words: shown by the
    # plan, replaced by an apply, never written back (a rule is re-rendered from a value only).
    unread: tuple[str, ...] = ()
    backend: str = "iptables"  # the dialect that read it (dialects.py)
    variant: str = "nft"  # the backend's variant read: iptables' "nft", "legacy", "" (default)

    @property
    def right(self) -> bool:
        """Does it hold exactly a value, nothing unread beside it?"""
        return self.masq is not None and not self.unread


def encode_masq(masq: Masquerade | None) -> list[list[str | None]] | None:
    """A value as the journal writes it (schemas/journal.schema.json: masquerade)."""
    if masq is None:
        return None
    return [[r.action, format_net(r.dst) if r.dst is not None else None] for r in masq.rules]


def decode_masq(version: int, d: Any) -> Masquerade | None:
    """The value `encode_masq` wrote; ValueError if it is not one of `version`'s family."""
    if d is None:
        return None
    rules = []
    for action, dst in d:
        if action not in ACTIONS:
            raise ValueError(f"unknown masquerade action {action!r}")
        net = parse_cidr(dst) if dst is not None else None
        if net is not None and net.version != version:
            raise ValueError(f"IPv{net.version} destination {dst} in an IPv{version} masquerade")
        rules.append(MasqRule(str(action), net))
    return Masquerade(version, tuple(rules))
