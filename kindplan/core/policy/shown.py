"""`kindplan show`'s lines for the NetworkPolicy table a node holds: whether it is there (and
kindplan's), its size, the policies it enforces and on which of the node's pods.

Read from the table alone, as compile.py lays it out: each policy's pods set (`pN-pods-F`)
names the policy in its comment and holds the local pods it selects; the admitting rules name
their policy, direction and rule in theirs; the isolated sets hold the pods isolated each way.
Pods are named from a snapshot when one is given, else by their addresses. Pure.
"""

from __future__ import annotations

import re

from kindplan.core.addresses import format_ip
from kindplan.core.model import Snapshot
from kindplan.core.nfttable import NftTable
from kindplan.core.policytable import FAMILY, NAME, PolicyRead

_PODS_SET = re.compile(r"p([0-9]+)-pods-v[46]")
_RULE = re.compile(r'comment "(.+) (ingress|egress) rule ([0-9]+)"$')


def policy_table_lines(read: PolicyRead, snapshot: Snapshot | None = None) -> list[str]:
    """What show prints of the policy table: one head line, then a line per policy and per
    isolation direction, and what of the table was not understood."""
    where = f"table {FAMILY} {NAME}"
    if read.foreign:
        return [f"NetworkPolicy: {where}: not kindplan's (no marker); left alone"]
    table = read.table
    if table is None:
        return [f"NetworkPolicy: no {where}"]
    names = _pod_names(snapshot)
    rules = sum(len(c.rules) for c in table.chains)
    elements = sum(len(s.elements) for s in table.sets)
    lines = [
        f"NetworkPolicy: {where} ({plural(len(table.sets), 'set')}, "
        f"{plural(elements, 'element')}, {plural(rules, 'rule')})"
    ]
    for policy, (pods, admitting) in sorted(_policies(table).items()):
        selected = _named(pods, names) or "no local pod"
        said = "; ".join(
            f"{direction} {'rule' if len(found) == 1 else 'rules'} {', '.join(found)}"
            for direction, found in admitting.items()
            if found
        )
        lines.append(f"  policy {policy}: selects {selected}; {said or 'no rule admits'}")
    for direction in ("ingress", "egress"):
        members = {
            e for s in table.sets if s.name.startswith(f"{direction}-isolated-") for e in s.elements
        }
        lines.append(f"  isolated for {direction}: {_named(members, names) or 'none'}")
    lines += [f"  not understood: {line}" for line in read.unread]
    return lines


def plural(count: int, word: str) -> str:
    """As planview's (which imports this package's facts: its import would be a circle)."""
    return f"{count} {word}{'' if count == 1 else 's'}"


def _policies(table: NftTable) -> dict[str, tuple[set[str], dict[str, list[str]]]]:
    """policy ns/name -> (the addresses of its selected pods, its admitting rules by
    direction), from the pods sets' comments and the rules' comments."""
    found: dict[str, tuple[set[str], dict[str, list[str]]]] = {}

    def entry(policy: str) -> tuple[set[str], dict[str, list[str]]]:
        return found.setdefault(policy, (set(), {"ingress": [], "egress": []}))

    for s in table.sets:
        if _PODS_SET.fullmatch(s.name) and s.comment:
            entry(s.comment)[0].update(s.elements)
    for chain in table.chains:
        for rule in chain.rules:
            match = _RULE.search(rule)
            if match is None:
                continue
            policy, direction, index = match.groups()
            numbers = entry(policy)[1][direction]
            if index not in numbers:
                numbers.append(index)
    return found


def _pod_names(snapshot: Snapshot | None) -> dict[str, str]:
    if snapshot is None:
        return {}
    return {
        format_ip(ip): f"{p.namespace}/{p.name}"
        for p in snapshot.pods
        if not p.host_network
        for ip in p.ips
    }


def _named(addresses: set[str], names: dict[str, str]) -> str:
    """The pods (ns/name) holding `addresses`, each once, else the addresses themselves."""
    return ", ".join(sorted({names.get(a, a) for a in addresses}))
