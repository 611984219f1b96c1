"""A stand-in for policy-core's compile_policy (branch h-pnode only: policy-core's replaces it
at the merge): no policy table wanted on any node."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kindplan.core.nfttable import NftTable


# The parameters are a Snapshot and a Node; named `object` here because core.model imports
# core.policy (type-only), and import-linter's acyclic_siblings contract counts type-only imports.
def compile_policy(snapshot: object, node: object) -> NftTable | None:
    """The node's policy table (None: no policy table wanted on this node)."""
    return None
