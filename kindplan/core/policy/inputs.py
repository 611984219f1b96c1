"""The snapshot document's `networkPolicies`, read into the policy model (the namespaces and
the pods' labels and ports are core/snapshotpods.py's).

A policy without metadata.namespace or metadata.name, or two of the same name, is bad input; a
policy kindplan cannot understand is a warning and fails closed (parse.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kindplan.core.policy.parse import parse_policy, policy_key
from kindplan.core.policyvalues import NetworkPolicy
from kindplan.errors import Problem

Report = Callable[[str, str], None]  # (where, what)


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
