"""Evaluate a compiled policy table (an NftTable, desired or read back) on the first packet of a
connection, as the kernel would: the base chains of a hook in priority order, each rule's
matches, jumps, and the verdict with the rule comment that decided it.

Only the grammar compile.py emits is understood (anything else is a ValueError, never a guess):
`ct state established,related`, `ip|ip6 saddr|daddr @set`, `ip|ip6 daddr . meta l4proto . th
dport @set`, `tcp|udp|sctp dport N[-M]`, `meta l4proto P`, then accept, drop or `jump CHAIN`,
and an optional `comment "..."`. The packet is always a new connection's: the established rule
never matches (replies pass on their own).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import ip_address, ip_network

from kindplan.core.addresses import IPAddress
from kindplan.core.nfttable import NftSet, NftTable
from kindplan.core.policy.compile import ND_TYPES


@dataclass(frozen=True, slots=True)
class Packet:
    saddr: IPAddress
    daddr: IPAddress
    protocol: str  # TCP, UDP, SCTP
    port: int


@dataclass(frozen=True, slots=True)
class ChainVerdict:
    """What one base chain did: accepted (by a rule, or by its policy) or dropped."""

    chain: str
    accepted: bool
    comment: str | None  # the deciding rule's comment; None when the chain's policy decided


@dataclass(frozen=True, slots=True)
class HookVerdict:
    hook: str
    chains: tuple[ChainVerdict, ...]  # the base chains that ran, in priority order

    @property
    def accepted(self) -> bool:
        return all(c.accepted for c in self.chains)


Match = Callable[[Packet], bool]
_RESULT_END = frozenset({"accept", "drop"})
# compile's neighbour discovery matches: `icmpv6 type <one of them>`, never a TCP, UDP or SCTP
# packet
_ND_TYPES = frozenset(ND_TYPES)
_PORTS = re.compile(r"[0-9]{1,5}(-[0-9]{1,5})?")


class TableEvaluator:
    """A table's rules parsed once, for many packets."""

    def __init__(self, table: NftTable) -> None:
        self._sets = {s.name: _members(s) for s in table.sets}
        self._chains = {c.name: [self._rule(r) for r in c.rules] for c in table.chains}
        for name, rules in self._chains.items():
            for _, verdict, _ in rules:
                if verdict.startswith("jump ") and verdict[5:] not in self._chains:
                    raise ValueError(f"chain {name}: rule {verdict!r}: no such chain")
        self._bases: list[tuple[str, int, str]] = []  # (hook, priority, chain)
        for chain in table.chains:
            if chain.base:
                hook, priority = _hook(chain.base)
                self._bases.append((hook, priority, chain.name))
        self._bases.sort(key=lambda b: (b[1], b[2]))

    def evaluate(self, hook: str, packet: Packet) -> HookVerdict:
        """Every base chain of `hook`, in priority order, until one drops (a drop is final)."""
        done = []
        for chain_hook, _, name in self._bases:
            if chain_hook != hook:
                continue
            # Falling off a base chain is its policy: accept, for every chain compile writes.
            accepted, comment = self._run(name, packet, depth=0) or (True, None)
            done.append(ChainVerdict(name, accepted, comment))
            if not accepted:
                break
        return HookVerdict(hook, tuple(done))

    def _run(self, chain: str, packet: Packet, depth: int) -> tuple[bool, str | None] | None:
        """The verdict and deciding comment, or None: the chain ran to its end."""
        if depth > 16:
            raise ValueError(f"chain {chain}: jumps too deep")
        for matches, verdict, comment in self._chains[chain]:
            if not all(m(packet) for m in matches):
                continue
            if verdict.startswith("jump "):
                outcome = self._run(verdict[5:], packet, depth + 1)
                if outcome is not None:
                    return outcome
                continue  # the jumped-to chain returned
            return verdict == "accept", comment
        return None

    def _rule(self, text: str) -> tuple[list[Match], str, str | None]:
        body, comment = _split_comment(text)
        words = body.split()
        if words[-1] in _RESULT_END:
            verdict, words = words[-1], words[:-1]
        elif len(words) >= 2 and words[-2] == "jump":
            verdict, words = f"jump {words[-1]}", words[:-2]
        else:
            raise ValueError(f"rule {text!r}: no verdict kindplan writes")
        return self._matches(words, text), verdict, comment

    def _matches(self, words: list[str], text: str) -> list[Match]:
        matches: list[Match] = []
        i = 0
        while i < len(words):
            match, used = self._match(words[i:])
            if not used:
                raise ValueError(f"rule {text!r}: {' '.join(words[i:])!r} is not compile's")
            matches.append(match)
            i += used
        return matches

    def _match(self, w: list[str]) -> tuple[Match, int]:
        if w[:3] == ["ct", "state", "established,related"]:
            return (lambda p: False), 3  # a new connection's first packet
        if w[:2] == ["icmpv6", "type"] and len(w) >= 3 and w[2] in _ND_TYPES:
            return (lambda p: False), 3
        if w[:1] in (["ip"], ["ip6"]) and len(w) >= 3:
            return self._address_match(w)
        if w[:2] == ["meta", "l4proto"] and len(w) >= 3 and w[2] in ("tcp", "udp", "sctp"):
            protocol = w[2].upper()
            return (lambda p: p.protocol == protocol), 3
        if (
            len(w) >= 3
            and w[0] in ("tcp", "udp", "sctp")
            and w[1] == "dport"
            and _PORTS.fullmatch(w[2])
        ):
            protocol, (low, _, high) = w[0].upper(), w[2].partition("-")
            first, last = int(low), int(high or low)
            return (lambda p: p.protocol == protocol and first <= p.port <= last), 3
        return (lambda p: False), 0

    def _address_match(self, w: list[str]) -> tuple[Match, int]:
        version = 4 if w[0] == "ip" else 6
        if w[2].startswith("@") and w[1] in ("saddr", "daddr"):
            members = self._sets[w[2][1:]]
            field = w[1]
            return (
                lambda p: p.saddr.version == version and members(getattr(p, field), None, None)
            ), 3
        concat = ["daddr", ".", "meta", "l4proto", ".", "th", "dport"]
        if w[1:8] == concat and len(w) >= 9 and w[8].startswith("@"):
            members = self._sets[w[8][1:]]
            return (
                lambda p: (
                    p.daddr.version == version and members(p.daddr, p.protocol.lower(), p.port)
                )
            ), 9
        return (lambda p: False), 0


Members = Callable[[IPAddress, str | None, int | None], bool]


def _members(s: NftSet) -> Members:
    if " . " in s.type:
        triples = set()
        for e in s.elements:
            address, protocol, port = e.split(" . ")
            triples.add((ip_address(address), protocol, int(port)))
        return lambda a, proto, port: (a, proto, port) in triples
    if "interval" in s.flags:
        nets = [ip_network(e) for e in s.elements]
        return lambda a, _p, _n: any(a in net for net in nets)
    addresses = {ip_address(e) for e in s.elements}
    return lambda a, _p, _n: a in addresses


def _split_comment(text: str) -> tuple[str, str | None]:
    head, sep, tail = text.partition(' comment "')
    if not sep:
        return text, None
    if not tail.endswith('"'):
        raise ValueError(f"rule {text!r}: an unterminated comment")
    return head, tail[:-1]


def _hook(base: str) -> tuple[str, int]:
    """("forward", -2) from "type filter hook forward priority filter - 2; policy accept;"."""
    words = base.replace(";", " ").split()
    hook = words[words.index("hook") + 1]
    after = words[words.index("priority") + 1 :]
    value = {"filter": 0, "raw": -300, "mangle": -150}.get(after[0])
    priority = int(after[0]) if value is None else value
    if len(after) >= 3 and after[1] in "+-":
        priority += int(after[2]) * (1 if after[1] == "+" else -1)
    return hook, priority
