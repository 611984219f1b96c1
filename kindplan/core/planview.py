"""A plan as people read it (terraform-like `+ ~ -` lines) and as machines read it (JSON). Pure."""

from __future__ import annotations

import json
import re
from typing import Any

from kindplan.core.model import (
    AddAddress,
    AddRoute,
    Change,
    Conflict,
    DelAddress,
    DeleteConflist,
    DelRoute,
    Plan,
    RemoveChain,
    ReplaceRoute,
    Route,
    SetSysctl,
    WriteChain,
    WriteConflist,
)
from kindplan.core.render import route_command, route_target

PLAN_FORMAT = 1
_COLORS = {"+": "\033[32m", "~": "\033[33m", "-": "\033[31m", "!": "\033[1;31m"}
_RESET = "\033[0m"


def plural(count: int, noun: str) -> str:
    """'1 node', '2 nodes', '0 nodes'.

    >>> plural(1, "change"), plural(3, "change")
    ('1 change', '3 changes')
    """
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def route_text(route: Route) -> str:
    return route_command(route).removeprefix("route replace ")


def action(change: Change) -> str:
    """+ add, ~ change, - delete."""
    match change:
        case AddAddress() | AddRoute():
            return "+"
        case DelRoute() | DelAddress() | RemoveChain() | DeleteConflist():
            return "-"
        case WriteChain(_, _, old_rules, _, _) if old_rules is None:
            return "+"
        case WriteConflist(_, _, old) if old is None:
            return "+"
    return "~"


def describe(change: Change) -> str:
    """One line naming the change and what it is for."""
    match change:
        case SetSysctl(name, value, old):
            return f"sysctl {name} = {value} (was {old})"
        case AddAddress(address):
            where = f"{address.address}/{address.prefixlen} dev {address.ifname}"
            return f"address {where} (pod {address.pod})"
        case AddRoute(route):
            return f"route {route_text(route)}{_why(_for(route))}"
        case ReplaceRoute(route, old):
            return f"route {route_text(route)}{_why(_for(route), f'was {_old_route(old)}')}"
        case DelRoute(route):
            # Observed routes carry no peer: one of ours that nothing wants any more is stale.
            stale = "stale: no longer in the snapshot"
            return f"route {route_text(route)}{_why(_for(route) or stale)}"
        case DelAddress(address):
            return f"address {address.address}/{address.prefixlen} dev {address.ifname}"
        case WriteChain(version, rules, old_rules, jumps, want_jumps):
            parts = []
            if rules is not None:
                parts.append("chain KIND-MASQ-AGENT" + (" (new)" if old_rules is None else ""))
            if jumps != want_jumps:
                parts.append(f"POSTROUTING jump ({jumps} present, {want_jumps} wanted)")
            return f"{_table(version)} nat: {', '.join(parts)}"
        case RemoveChain(version, _, jumps, backend):
            table = f"{_table(version)}-{backend}" if backend else _table(version)
            return f"{table} nat: chain KIND-MASQ-AGENT and {jumps} jump(s)"
        case WriteConflist(path, _, old):
            return f"file {path}" + (" (new)" if old is None else "")
        case DeleteConflist(path, _):
            return f"file {path}"
    raise TypeError(change)


def _table(version: int) -> str:
    return "ip6tables" if version == 6 else "iptables"


def _for(route: Route) -> str:
    if not route.peer:
        return ""
    return f"peer {route.peer}" if route.gateway is not None else f"pod {route.peer}"


def _why(*parts: str) -> str:
    text = "; ".join(p for p in parts if p)
    return f" ({text})" if text else ""


def _old_route(old: Route) -> str:
    """What an observed route points at (its destination aside), as ip(8) would say it."""
    if not old.plain:  # blackhole, multipath, a nexthop object...: ip's words, with their paths
        return route_target(old)
    via = f"via {old.gateway} " if old.gateway else ""
    return f"{via}dev {old.ifname or '?'} proto {old.proto}".strip()


def conflict_text(conflict: Conflict) -> str:
    """One line: the foreign route, and the route of kindplan's it stands in the way of."""
    observed, desired = conflict.observed, conflict.desired
    if conflict.shadows:
        return (
            f"conflict: route {observed.dst} metric {observed.metric} is foreign "
            f"({_old_route(observed)}) and shadows kindplan's {route_text(desired)} "
            f"for {_for(desired)}; --adopt deletes it"
        )
    return (
        f"conflict: route {observed.dst} is foreign ({_old_route(observed)}); "
        f"kindplan wants {route_text(desired)} for {_for(desired)}; --adopt replaces it"
    )


def counts(plan: Plan) -> dict[str, int]:
    result = {"add": 0, "change": 0, "delete": 0}
    names = {"+": "add", "~": "change", "-": "delete"}
    for change in plan.changes:
        result[names[action(change)]] += 1
    return result


def summary(plan: Plan) -> str:
    if plan.empty:
        return "No changes." + (
            f" {len(plan.conflicts)} conflict(s) left alone." if plan.conflicts else ""
        )
    c = counts(plan)
    return f"Plan: {c['add']} to add, {c['change']} to change, {c['delete']} to delete."


def format_plan(plan: Plan, *, color: bool = False) -> str:
    """The plan as a person reads it: one line per change, details indented, a summary last."""

    def mark(sign: str, text: str) -> str:
        return f"{_COLORS[sign]}{sign}{_RESET} {text}" if color else f"{sign} {text}"

    lines = [f"node {plan.node}:"] if not plan.empty or plan.conflicts else []
    for change in plan.changes:
        lines.append("  " + mark(action(change), describe(change)))
        lines += ["      " + d for d in details(change)]
    for conflict in plan.conflicts:
        lines.append("  " + mark("!", conflict_text(conflict)))
    lines += [f"warning: {w}" for w in plan.warnings]
    lines.append(summary(plan))
    return "\n".join(lines) + "\n"


def details(change: Change) -> list[str]:
    """Field-level detail: rule lines of a chain, JSON paths of the conflist."""
    match change:
        case WriteChain(_, rules, old_rules, _, _) if rules is not None:
            old = set(old_rules or ())
            new = set(rules)
            return [f"- {r}" for r in old_rules or () if r not in new] + [
                f"+ {r}" for r in rules if r not in old
            ] or ["(same rules, new order)"]
        case WriteConflist(_, content, old) if old is not None:
            return conflist_changes(old, content)
    return []


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


def plan_to_json(plan: Plan, **extra: Any) -> dict[str, Any]:
    """The plan as JSON (schemas/plan.schema.json)."""
    return {
        "format": PLAN_FORMAT,
        "node": plan.node,
        **extra,
        "summary": counts(plan),
        "changes": [
            {
                "action": action(c),
                "kind": _kind(c),
                "description": describe(c),
                "details": details(c),
            }
            for c in plan.changes
        ],
        "conflicts": [
            {
                "dst": str(c.desired.dst),
                "desired": route_text(c.desired),
                "observed": _old_route(c.observed),
                **({"shadows": True} if c.shadows else {}),
            }
            for c in plan.conflicts
        ],
        "warnings": list(plan.warnings),
    }


def _kind(change: Change) -> str:
    return {
        SetSysctl: "sysctl",
        AddAddress: "address",
        AddRoute: "route",
        ReplaceRoute: "route",
        DelRoute: "route",
        WriteChain: "iptables",
        WriteConflist: "conflist",
        DelAddress: "address",
        RemoveChain: "iptables",
        DeleteConflist: "conflist",
    }[type(change)]
