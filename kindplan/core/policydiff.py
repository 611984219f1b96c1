"""diff_policy: the change that makes kindplan's NetworkPolicy table what the desired state says,
and whether such a change is in effect. Pure; diff.py places it in the plan (after SNAT, before
the conflist: pods start only once their policy holds).

The same structure on both sides (NftTable.structure: sets declared alike, the same chains and
rules): the elements that differ, in one change. Anything else, or anything in kindplan's table
that could not be read: the table written whole, in one transaction. A table of that name that
is not kindplan's (no marker) is left alone, and said so: the node enforces no policy then.
"""

from __future__ import annotations

from typing import assert_never

from kindplan.core.model import DesiredState, ObservedState
from kindplan.core.policychanges import (
    DelPolicyTable,
    PolicyChange,
    WritePolicyElements,
    WritePolicyTable,
)
from kindplan.core.policytable import FAMILY, NAME, element_delta, table_digest


def diff_policy(
    desired: DesiredState, observed: ObservedState
) -> tuple[list[PolicyChange], list[str]]:
    """The policy table's change (none, or one), and warnings."""
    want, now = desired.policy, observed.policy
    if want is None and now is None:
        return [], []  # the common case: no policy here (a foreign table of that name: theirs)
    if observed.policy_foreign:
        return [], [
            f"table {FAMILY} {NAME} is not kindplan's (its comment is not kindplan's marker): "
            "left alone; this node's pods get no NetworkPolicy until it is removed"
        ]
    unread = observed.policy_unread
    if want is None:
        assert now is not None
        return [DelPolicyTable(now, unread)], []
    if now is None:  # none; or a listing not read at all (unread): replaced whole
        return [WritePolicyTable(want, None, unread)], []
    if not unread and now.structure() == want.structure():
        added, deleted = element_delta(want, now)
        if not added and not deleted:
            return [], []
        return [WritePolicyElements(added, deleted, table_digest(now), table_digest(want))], []
    return [WritePolicyTable(want, now, unread)], []


def policy_in_effect(change: PolicyChange, observed: ObservedState) -> bool:
    """Does the node hold what `change` makes (kindplan's table, all of it read)?"""
    if observed.policy_foreign or observed.policy_unread:
        return False
    match change:
        case WritePolicyTable(table=table):
            return observed.policy == table
        case DelPolicyTable():
            return observed.policy is None
        case WritePolicyElements(after=after):
            return table_digest(observed.policy) == after
        case _:
            assert_never(change)


def policy_held(change: PolicyChange) -> str:
    """The digest of the table as the change that `change` undoes left it: what a rollback
    finds before it puts anything back (compare-and-swap)."""
    match change:
        case WritePolicyTable(old=old):  # undoing a write of `old`, or of nothing before
            return table_digest(old)
        case DelPolicyTable(old=old):  # undoing the making of `old`
            return table_digest(old)
        case WritePolicyElements(before=before):
            return before
        case _:
            assert_never(change)
