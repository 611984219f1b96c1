"""The snapshot document's `namespaces` and `networkPolicies`, read into the policy model.

A policy without metadata.namespace or metadata.name, or two of the same name, is bad input; a
policy kindplan cannot understand is a warning and fails closed (parse.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kindplan.core.policy.parse import parse_policy, policy_key
from kindplan.core.policyvalues import Namespace, NetworkPolicy
from kindplan.errors import Problem

Report = Callable[[str, str], None]  # (where, what)


def read_namespaces(
    raw: list[dict[str, Any]], problem: Report, at: str = "namespaces"
) -> tuple[Namespace, ...]:
    """The listed namespaces, sorted by name (the schema has checked their shape)."""
    found = {}
    for i, item in enumerate(raw):
        labels = item.get("labels", {})
        for key, value in labels.items():
            if not isinstance(value, str):
                problem(f"{at}[{i}].labels.{key}", f"{value!r} is not a string")
        found[item["name"]] = Namespace(item["name"], tuple(sorted(labels.items())))
    return tuple(found[name] for name in sorted(found))


def read_policies(
    raw: list[Any], problem: Report, warning: Report, at: str = "networkPolicies"
) -> tuple[NetworkPolicy, ...]:
    """The policies sorted by (namespace, name); problems and warnings go to the callbacks."""
    seen: dict[tuple[str, str], int] = {}
    policies = []
    for i, item in enumerate(raw):
        where = f"{at}[{i}]"
        key = policy_key(item, where)
        if isinstance(key, Problem):
            problem(key.where, key.what)
            continue
        if key in seen:
            problem(where, f"duplicate NetworkPolicy {key[0]}/{key[1]} (also {at}[{seen[key]}])")
            continue
        seen[key] = i
        policy, not_understood = parse_policy(item, where)
        if not_understood is not None:
            warning(not_understood.where, not_understood.what)
        policies.append(policy)
    return tuple(sorted(policies, key=lambda p: p.key))
