"""A plan as people read it (terraform-like `+ ~ -` lines) and as machines read it (JSON). Pure."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, assert_never

from kindplan.core.changes import (
    AddAddress,
    AddRoute,
    Change,
    Conflict,
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
from kindplan.core.policychanges import (
    DelPolicyTable,
    WritePolicyElements,
    WritePolicyTable,
    table_lines,
)
from kindplan.core.routes import route_for, route_was

# Re-exported: the plan's readers (the CLI, the loop's log) take a route's words from here.
from kindplan.core.routes import route_text as route_text  # noqa: PLC0414
from kindplan.core.tunnelchanges import (
    DelFdb,
    DelNeighbour,
    DelVxlan,
    WriteFdb,
    WriteNeighbour,
    WriteVxlan,
)

if TYPE_CHECKING:  # not at import: a plan without policies never loads core/policy
    from kindplan.core.policy.facts import PolicyLine

PLAN_FORMAT = 1
_COLORS = {"+": "\033[32m", "~": "\033[33m", "-": "\033[31m", "!": "\033[1;31m"}
_RESET = "\033[0m"


def plural(count: int, noun: str) -> str:
    """'1 node', '2 nodes', '0 nodes'.

    >>> plural(1, "change"), plural(3, "change")
    ('1 change', '3 changes')
    """
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def describe(change: Change) -> str:
    """One line naming the change and what it is for (each change type says it itself)."""
    return change.describe()


def action_word(change: Change) -> str:
    """What applying the change did, in a word: added, changed, removed, or adopted (a foreign
    route replaced by kindplan's own: --adopt taking over kindnetd's)."""
    if isinstance(change, ReplaceRoute) and change.old.proto != change.route.proto:
        return "adopted"
    return _ACTION_WORDS[change.action]


_ACTION_WORDS = {"+": "added", "~": "changed", "-": "removed"}


def applied_text(change: Change) -> str:
    """`added route 10.244.0.0/24 via ...`: a change made, as the applied lines and the loop's
    log say it (the sign of the plan, in a word)."""
    return f"{action_word(change)} {change.describe()}"


def undo_summary(undo: Iterable[Change]) -> str:
    """What rolling a generation back does, in words (history's line).

    >>> from kindplan.core.changes import SetSysctl
    >>> undo_summary([SetSysctl("net.ipv4.ip_forward", "0", "1")] * 2)
    'restore 2 sysctls'
    """
    found = Counter((_UNDO_VERBS[c.action], _NOUNS[c.kind]) for c in undo)
    groups: dict[str, list[str]] = {}
    for (verb, (one, many)), n in sorted(found.items()):  # by verb, then by noun
        groups.setdefault(verb, []).append(f"{n} {one if n == 1 else many}")
    return "; ".join(f"{verb} {', '.join(nouns)}" for verb, nouns in groups.items())


# An undo's action as history says it (rollback says what it did: removed, re-added, restored).
_UNDO_VERBS = {"-": "remove", "+": "re-add", "~": "restore"}
_NOUNS = {
    "address": ("address", "addresses"),
    "conflist": ("conflist", "conflists"),
    "iptables": ("chain", "chains"),
    "nexthop": ("nexthop object", "nexthop objects"),
    "route": ("route", "routes"),
    "sysctl": ("sysctl", "sysctls"),
}


def conflict_text(conflict: Conflict) -> str:
    """One line: the foreign route, and the route of kindplan's it stands in the way of."""
    observed, desired = conflict.observed, conflict.desired
    if conflict.shadows:
        return (
            f"conflict: route {observed.dst} metric {observed.metric} is foreign "
            f"({route_was(observed)}) and shadows kindplan's {route_text(desired)} "
            f"for {route_for(desired)}; --adopt deletes it"
        )
    return (
        f"conflict: route {observed.dst} is foreign ({route_was(observed)}); "
        f"kindplan wants {route_text(desired)} for {route_for(desired)}; --adopt replaces it"
    )


def counts(plan: Plan) -> dict[str, int]:
    result = {"add": 0, "change": 0, "delete": 0}
    names = {"+": "add", "~": "change", "-": "delete"}
    for change in plan.changes:
        result[names[change.action]] += 1
    return result


def summary(plan: Plan) -> str:
    if plan.empty:
        return "No changes." + (
            f" {len(plan.conflicts)} conflict(s) left alone." if plan.conflicts else ""
        )
    c = counts(plan)
    return f"Plan: {c['add']} to add, {c['change']} to change, {c['delete']} to delete."


def format_plan(plan: Plan, *, color: bool = False, policy: Sequence[PolicyLine] = ()) -> str:
    """The plan as a person reads it: one line per change, details indented, what the
    NetworkPolicy table's change means for the node's pods (core/policy/facts.py), a summary
    last."""

    def mark(sign: str, text: str) -> str:
        return f"{_COLORS[sign]}{sign}{_RESET} {text}" if color else f"{sign} {text}"

    lines = [f"node {plan.node}:"] if not plan.empty or plan.conflicts or policy else []
    for change in plan.changes:
        lines.append("  " + mark(change.action, change.describe()))
        lines += ["      " + d for d in details(change)]
    if policy:
        lines.append("  NetworkPolicy:")
        lines += ["    " + _policy_mark(line, color) for line in policy]
    for conflict in plan.conflicts:
        lines.append("  " + mark("!", conflict_text(conflict)))
    lines += [f"warning: {w}" for w in plan.warnings]
    lines.append(summary(plan))
    return "\n".join(lines) + "\n"


def _policy_mark(line: PolicyLine, color: bool) -> str:
    if not color:
        return line.text()
    head, _, rest = line.text().partition(f": {line.sign} ")
    return f"{head}: {_COLORS[line.sign]}{line.sign}{_RESET} {rest}"


def details(change: Change) -> list[str]:
    """Field-level detail: the rules of a masquerade, JSON paths of the conflist."""
    match change:
        case WriteMasquerade(masq=masq, old=old, unread=unread, backend=backend) if (
            masq is not None
        ):
            # The value's rules in the words of the backend that holds them (iptables: the lines
            # iptables-save shows), and what it held that its dialect could not read.
            text = dialect(backend).rule_text
            rules = tuple(map(text, masq.rules))
            before = (*map(text, old.rules if old is not None else ()), *unread)
            new, gone = set(rules), set(before)
            return [f"- {r}" for r in before if r not in new] + [
                f"+ {r}" for r in rules if r not in gone
            ] or ["(same rules, new order)"]
        case WriteConflist(content=content, old=old) if old is not None:
            return conflist_changes(old, content)
        case WritePolicyTable() | DelPolicyTable() | WritePolicyElements():
            return policy_details(change)
        case (
            SetSysctl()
            | AddAddress()
            | AddRoute()
            | ReplaceRoute()
            | WriteMasquerade()
            | RemoveMasquerade()
            | DelRoute()
            | DelAddress()
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
        ):
            return []  # a one-line change, or a new chain or conflist (its lines are its own)
        case _:
            assert_never(change)


def policy_details(change: WritePolicyTable | DelPolicyTable | WritePolicyElements) -> list[str]:
    """The policy table's lines that change: declarations and rules of a rewrite (what could
    not be read among them), elements of an element change; none for a new or deleted table."""
    if isinstance(change, WritePolicyElements):
        return [f"- set {n}: {e}" for n, e in change.delete] + [
            f"+ set {n}: {e}" for n, e in change.add
        ]
    if isinstance(change, DelPolicyTable) or change.old is None:
        return []
    before = (*table_lines(change.old), *change.unread)
    after = table_lines(change.table)
    new, gone = set(after), set(before)
    return [f"- {line}" for line in before if line not in new] + [
        f"+ {line}" for line in after if line not in gone
    ] or ["(same declarations and rules: elements of a set declared anew)"]


def conflist_changes(old: str, new: str) -> list[str]:
    """`plugins[0].mtu: 1500 -> 1450`-style lines (deepdiff, imported only when needed)."""
    try:
        before = json.loads(old)
    except ValueError:
        return ["(the file on disk is not valid JSON; replaced whole)"]
    from deepdiff import DeepDiff

    found = DeepDiff(before, json.loads(new), verbose_level=2)
    lines = []
    for kind, entries in found.items():
        for path, value in entries.items():
            where = _json_path(path)
            if kind in ("values_changed", "type_changes"):
                lines.append(f"{where}: {_j(value['old_value'])} -> {_j(value['new_value'])}")
            elif kind.endswith("_added"):
                lines.append(f"{where}: (added) {_j(value)}")
            elif kind.endswith("_removed"):
                lines.append(f"{where}: (removed) {_j(value)}")
            else:
                lines.append(f"{where}: {kind}")
    return sorted(lines)


def _json_path(deepdiff_path: str) -> str:
    path = re.sub(r"\['([^']*)'\]", r".\1", deepdiff_path.removeprefix("root"))
    return path.lstrip(".") or "(top)"


def _j(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def plan_to_json(plan: Plan, *, policy: Sequence[PolicyLine] = (), **extra: Any) -> dict[str, Any]:
    """The plan as JSON (schemas/plan.schema.json); `policy` (the NetworkPolicy facts gained
    and lost, core/policy/facts.py) as a list `policy` when there are any."""
    facts = {"policy": [line.to_json() for line in policy]} if policy else {}
    return {
        "format": PLAN_FORMAT,
        "node": plan.node,
        **extra,
        "summary": counts(plan),
        "changes": [
            {
                "action": c.action,
                "kind": c.kind,
                "description": c.describe(),
                "details": details(c),
            }
            for c in plan.changes
        ],
        "conflicts": [
            {
                "dst": str(c.desired.dst),
                "desired": route_text(c.desired),
                "observed": route_was(c.observed),
                **({"shadows": True} if c.shadows else {}),
            }
            for c in plan.conflicts
        ],
        "warnings": list(plan.warnings),
        **facts,
    }
