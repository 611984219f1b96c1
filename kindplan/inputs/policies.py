"""The networking.k8s.io/v1 NetworkPolicy converter: the object goes into the ClusterSnapshot
document's networkPolicies as it is (the core parses it: core/policy), with its kind and
apiVersion, which the items of a NetworkPolicyList leave out.

A policy of another apiVersion (extensions/v1beta1, removed in Kubernetes 1.16) is skipped with
a warning. Pure, as every converter is (kinds.py).
"""

from __future__ import annotations

from typing import Any

from kindplan.errors import Problem
from kindplan.inputs.converted import Converted

API_VERSION = "networking.k8s.io/v1"


def add_policy(item: dict[str, Any], at: str, out: Converted, strict: bool) -> None:
    """Add a NetworkPolicy (at `at` in the input) to the snapshot document in `out`."""
    del strict
    version = item.get("apiVersion", API_VERSION)
    if version != API_VERSION:
        out.warnings.append(
            Problem(f"{at}.apiVersion", f"NetworkPolicy of {version!r}, not {API_VERSION}; skipped")
        )
        return
    policies = out.document.setdefault("networkPolicies", [])
    out.where[f"networkPolicies[{len(policies)}]"] = at
    policies.append({"apiVersion": API_VERSION, "kind": "NetworkPolicy", **item})
