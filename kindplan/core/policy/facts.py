"""What a policy table means in pods and policies, and what changes between two tables: the plan's
lines "x/a ingress: + from y/b on TCP 80 by policy allow-y".

A table of compile.py's structure (desired, or observed and read back) is read back into facts:
a local pod (by the addresses in a policy's pods set), a direction, a peer (a pod named by its
address, anything else as the address or prefix an ipBlock put there, or anyone), a port, and the
policy. Only the policies whose rules or elements differ between the tables are expanded: a
policy's facts name it, so an unchanged policy's facts are the same on both sides.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from kindplan.core.addresses import format_ip
from kindplan.core.model import Snapshot
from kindplan.core.nfttable import NftTable

ANYONE = "anyone"
ANY_PORT = "any port"
ISOLATED = "isolated"  # the peer of an isolation fact: no rule, just the pod isolated


@dataclass(frozen=True, slots=True)
class PolicyLine:
    """One fact gained (+) or lost (-): pod x/a, ingress/egress, its peer, port and policy."""

    pod: str
    direction: str  # "ingress" / "egress"
    peer: str  # "y/b", "10.0.0.0/8", ANYONE, or ISOLATED
    port: str  # "TCP 80", "UDP 81-90", "SCTP", ANY_PORT; "" for an isolation
    policy: str  # the policy's name; "" for an isolation
    sign: str  # "+" or "-"

    def text(self) -> str:
        if self.peer == ISOLATED:
            return f"{self.pod} {self.direction}: {self.sign} isolated"
        word = "from" if self.direction == "ingress" else "to"
        return (
            f"{self.pod} {self.direction}: {self.sign} {word} {self.peer} on {self.port} "
            f"by policy {self.policy}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "pod": self.pod,
            "direction": self.direction,
            "change": self.sign,
            "peer": None if self.peer == ISOLATED else self.peer,
            "port": self.port or None,
            "policy": self.policy or None,
            "text": self.text(),
        }


Fact = tuple[str, str, str, str, str]  # (pod, direction, peer, port, policy)


def policy_lines(
    observed: NftTable | None, desired: NftTable | None, snapshot: Snapshot
) -> list[PolicyLine]:
    """The facts the desired table gains (+) and loses (-) against the observed one, sorted."""
    names = _Names(snapshot)
    before = _Reader(observed, names)
    after = _Reader(desired, names)
    changed = {
        policy
        for policy in before.policies | after.policies
        if before.signature(policy) != after.signature(policy)
    }
    old = set(before.facts(changed))
    new = set(after.facts(changed))
    lines = [PolicyLine(*fact, sign="-") for fact in old - new]
    lines += [PolicyLine(*fact, sign="+") for fact in new - old]
    return sorted(lines, key=_order)


def _order(line: PolicyLine) -> tuple[object, ...]:
    """By pod and direction, the isolation first, then by peer, port and policy."""
    return (line.pod, line.direction, line.peer != ISOLATED, line.peer, line.port, line.policy)


class _Names:
    """Addresses back to the pods that hold them."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.pod_of = {
            format_ip(ip): f"{p.namespace}/{p.name}"
            for p in snapshot.pods
            if not p.host_network
            for ip in p.ips
        }

    def __call__(self, element: str) -> str:
        return self.pod_of.get(element, element)


@dataclass(frozen=True, slots=True)
class _Rule:
    policy: str  # "ns/name" as the comment names it
    direction: str
    selected: str | None  # the set of the policy's selected local pods
    peers: str | None  # the set of peers; None: anyone
    named: str | None  # the named ports' concatenated set
    port: str  # the port match as words; "" when named


class _Reader:
    """A table of compile's structure read as rules over sets (anything else is skipped: the
    facts are a view, and an observed table of another shape is rewritten whole anyway)."""

    def __init__(self, table: NftTable | None, names: _Names) -> None:
        self.names = names
        self.sets = {s.name: s.elements for s in table.sets} if table else {}
        self.rules: list[_Rule] = []
        self.isolated: dict[str, frozenset[str]] = {}
        self.policies: set[str] = set()
        if table is None:
            return
        for chain in table.chains:
            for text in chain.rules:
                rule = _read_rule(text)
                if rule is not None:
                    self.rules.append(rule)
        for direction in ("ingress", "egress"):
            self.isolated[direction] = frozenset(
                e for v in ("v4", "v6") for e in self.sets.get(f"{direction}-isolated-{v}", ())
            )
        self.policies = {r.policy for r in self.rules} | {ISOLATED}

    def signature(self, policy: str) -> object:
        if policy == ISOLATED:
            return tuple(sorted(self.isolated.items()))
        rules = [r for r in self.rules if r.policy == policy]
        used = {s for r in rules for s in (r.selected, r.peers, r.named) if s}
        return (rules, {s: self.sets.get(s) for s in sorted(used)})

    def facts(self, policies: set[str]) -> Iterator[Fact]:
        if ISOLATED in policies:
            for direction, members in self.isolated.items():
                for address in members:
                    yield (self.names(address), direction, ISOLATED, "", "")
        for rule in self.rules:
            if rule.policy in policies:
                yield from self._rule_facts(rule)

    def _rule_facts(self, rule: _Rule) -> Iterator[Fact]:
        name = rule.policy.partition("/")[2]
        peers = self._elements(rule.peers) if rule.peers else [ANYONE]
        if rule.named is None:
            for pod in self._elements(rule.selected):
                for peer in peers:
                    yield (pod, rule.direction, peer, rule.port, name)
            return
        for triple in self.sets.get(rule.named, ()):
            address, protocol, port = triple.split(" . ")
            where = f"{protocol.upper()} {port}"
            if rule.direction == "ingress":
                for peer in peers:
                    yield (self.names(address), "ingress", peer, where, name)
            else:
                for pod in self._elements(rule.selected):
                    yield (pod, "egress", self.names(address), where, name)

    def _elements(self, set_name: str | None) -> Iterable[str]:
        return {self.names(e) for e in self.sets.get(set_name or "", ())}


def _read_rule(text: str) -> _Rule | None:
    head, sep, comment = text.partition(' comment "')
    words = comment.rstrip('"').rsplit(" ", 3)
    if not sep or len(words) != 4 or words[2] != "rule" or not head.endswith(" accept"):
        return None
    policy, direction = words[0], words[1]
    tokens = head.split()
    selected = peers = named = None
    port = ANY_PORT
    mine, theirs = ("daddr", "saddr") if direction == "ingress" else ("saddr", "daddr")
    for i, token in enumerate(tokens):
        if not token.startswith("@"):
            continue
        if tokens[i - 1] == "dport":
            named = token[1:]
        elif tokens[i - 1] == mine:
            selected = token[1:]
        elif tokens[i - 1] == theirs:
            peers = token[1:]
    if len(tokens) >= 4 and tokens[-3] == "l4proto":
        port = tokens[-2].upper()
    elif len(tokens) >= 4 and tokens[-3] == "dport" and tokens[-4] in ("tcp", "udp", "sctp"):
        port = f"{tokens[-4].upper()} {tokens[-2]}"
    return _Rule(policy, direction, selected, peers, named, "" if named else port)
