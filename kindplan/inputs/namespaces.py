"""The v1 Namespace converter: a namespace's name and labels (NetworkPolicy's namespaceSelector).

A namespace being deleted (phase Terminating) still counts: its pods do until they are gone.
Pure, as every converter is (kinds.py).
"""

from __future__ import annotations

from typing import Any

from kindplan.errors import Problem
from kindplan.inputs.converted import Converted


def add_namespace(item: dict[str, Any], at: str, out: Converted, strict: bool) -> None:
    """Add a v1 Namespace (at `at` in the input) to the snapshot document in `out`."""
    del strict
    metadata = item.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        out.problems.append(Problem(f"{at}.metadata.name", "a namespace needs a name"))
        return
    namespaces = out.document.setdefault("namespaces", [])
    base = f"namespaces[{len(namespaces)}]"
    entry: dict[str, Any] = {"name": name}
    out.where[base] = at
    out.where[f"{base}.name"] = f"{at}.metadata.name"
    if metadata.get("labels") is not None:
        entry["labels"] = metadata["labels"]
        out.where[f"{base}.labels"] = f"{at}.metadata.labels"
    namespaces.append(entry)
