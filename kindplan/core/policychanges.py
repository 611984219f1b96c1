"""The change types of kindplan's NetworkPolicy table (core/policytable.py): written whole,
deleted, or its sets' elements changed. Members of changes.Change, each with all it means in one
class, as the others there (changes.py says what each method is for).

The journal holds what a rollback writes back exactly: the table as it was before a write or a
deletion (every set, element, chain and rule), and for an element change the elements and the
digests of the table before and after (a rollback puts the elements back only while the table is
the one the apply left: table_digest). undo_rank 3, with the masquerade: a teardown takes the
conflist away first, then policy and SNAT together, before routes and addresses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from kindplan.core.nfttable import NftChain, NftSet, NftTable
from kindplan.core.policytable import (
    FAMILY,
    NAME,
    Elements,
    check_table,
    delete_payload,
    elements_payload,
    rule_count,
    table_payload,
)

TABLE_WORDS = f"nftables: table {FAMILY} {NAME}"
MAX_JOURNAL_ITEMS = 1_000_000  # elements, rules or sets in one journaled table: more is not ours


@dataclass(frozen=True, slots=True)
class WritePolicyTable:
    """Write the policy table whole in one transaction (old None: there was none)."""

    table: NftTable
    old: NftTable | None
    # What kindplan's table held that could not be read: named, replaced, never written back.
    unread: tuple[str, ...] = field(default=(), compare=False)

    kind: ClassVar[str] = "policy"
    undo_rank: ClassVar[int] = 3
    on_disk: ClassVar[bool] = False

    @property
    def action(self) -> str:
        return "+" if self.old is None else "~"

    def describe(self) -> str:
        if self.old is None:
            return f"{TABLE_WORDS} (new, {_size(self.table)})"
        return f"{TABLE_WORDS} (rewritten whole, {_size(self.table)}, was {_size(self.old)})"

    def undo(self) -> WritePolicyTable | DelPolicyTable:
        if self.old is None:
            return DelPolicyTable(self.table)
        return WritePolicyTable(self.old, self.table)

    def encode(self) -> dict[str, Any]:
        old = None if self.old is None else encode_table(self.old)
        return {"type": "WritePolicyTable", "table": encode_table(self.table), "old": old}

    @classmethod
    def decode(cls, d: dict[str, Any]) -> WritePolicyTable:
        old = None if d["old"] is None else decode_table(d["old"])
        return cls(decode_table(d["table"]), old)


@dataclass(frozen=True, slots=True)
class DelPolicyTable:
    """Delete kindplan's policy table: no NetworkPolicy is wanted on the node any more."""

    old: NftTable
    unread: tuple[str, ...] = field(default=(), compare=False)

    kind: ClassVar[str] = "policy"
    action: ClassVar[str] = "-"
    undo_rank: ClassVar[int] = 3
    on_disk: ClassVar[bool] = False

    def describe(self) -> str:
        return f"{TABLE_WORDS} ({_size(self.old)}; no policy for this node's pods)"

    def undo(self) -> WritePolicyTable:
        return WritePolicyTable(self.old, None)

    def encode(self) -> dict[str, Any]:
        return {"type": "DelPolicyTable", "old": encode_table(self.old)}

    @classmethod
    def decode(cls, d: dict[str, Any]) -> DelPolicyTable:
        return cls(decode_table(d["old"]))


@dataclass(frozen=True, slots=True)
class WritePolicyElements:
    """Add and delete elements of the policy table's sets in one transaction; the structure
    (sets, chains, rules) stays as it is. `before` and `after` are the table's digests
    (policytable.table_digest) before and after: what a rollback compares with."""

    add: Elements
    delete: Elements
    before: str
    after: str

    kind: ClassVar[str] = "policy"
    action: ClassVar[str] = "~"
    undo_rank: ClassVar[int] = 3
    on_disk: ClassVar[bool] = False

    def describe(self) -> str:
        sets = len({name for name, _ in (*self.add, *self.delete)})
        return (
            f"{TABLE_WORDS}: {len(self.add)} element(s) added, {len(self.delete)} deleted "
            f"in {sets} set(s) (elements only)"
        )

    def undo(self) -> WritePolicyElements:
        return WritePolicyElements(self.delete, self.add, self.after, self.before)

    def encode(self) -> dict[str, Any]:
        return {
            "type": "WritePolicyElements",
            "add": [list(p) for p in self.add],
            "delete": [list(p) for p in self.delete],
            "before": self.before,
            "after": self.after,
        }

    @classmethod
    def decode(cls, d: dict[str, Any]) -> WritePolicyElements:
        return cls(_pairs(d["add"]), _pairs(d["delete"]), str(d["before"]), str(d["after"]))


PolicyChange = WritePolicyTable | DelPolicyTable | WritePolicyElements
POLICY_CHANGES = (WritePolicyTable, DelPolicyTable, WritePolicyElements)


def policy_payload(change: PolicyChange) -> str:
    """The one `nft -f -` transaction that makes `change`."""
    if isinstance(change, WritePolicyTable):
        return table_payload(change.table, replacing=change.old is not None or bool(change.unread))
    if isinstance(change, DelPolicyTable):
        return delete_payload()
    return elements_payload(change.add, change.delete)


def _size(table: NftTable) -> str:
    elements = sum(len(s.elements) for s in table.sets)
    return f"{len(table.sets)} set(s), {elements} element(s), {rule_count(table)} rule(s)"


def table_lines(table: NftTable) -> list[str]:
    """The table's declarations and rules as plan lines (`set S: type ...`, `chain C: rule`)."""
    lines = []
    for s in table.sets:
        flags = f" flags {','.join(s.flags)}" if s.flags else ""
        comment = f' comment "{s.comment}"' if s.comment else ""
        lines.append(f"set {s.name}: type {s.type}{flags}{comment}")
    for c in table.chains:
        lines += [f"chain {c.name}: {c.base}"] if c.base else []
        lines += [f"chain {c.name}: {rule}" for rule in c.rules]
    return lines


# -- the journal's form of a table --------------------------------------------------------------


def encode_table(table: NftTable) -> dict[str, Any]:
    return {
        "family": table.family,
        "name": table.name,
        "sets": [
            {
                "name": s.name,
                "type": s.type,
                "flags": list(s.flags),
                "comment": s.comment,
                "elements": sorted(s.elements),
            }
            for s in table.sets
        ],
        "chains": [{"name": c.name, "base": c.base, "rules": list(c.rules)} for c in table.chains],
    }


def decode_table(d: dict[str, Any]) -> NftTable:
    """The table encode_table wrote; ValueError (or KeyError, TypeError) for anything else, and
    for any text that kindplan would not write into its own table (check_table)."""
    sets = tuple(
        NftSet(
            _str(s["name"]),
            _str(s["type"]),
            tuple(map(_str, _list(s["flags"]))),
            frozenset(map(_str, _list(s["elements"]))),
            _str(s["comment"]),
        )
        for s in _list(d["sets"])
    )
    chains = tuple(
        NftChain(_str(c["name"]), _str(c["base"]), tuple(map(_str, _list(c["rules"]))))
        for c in _list(d["chains"])
    )
    table = NftTable(_str(d["family"]), _str(d["name"]), sets, chains)
    if [s.name for s in sets] != sorted({s.name for s in sets}) or [
        c.name for c in chains
    ] != sorted({c.name for c in chains}):
        raise ValueError("the table's sets and chains are not sorted by name, once each")
    return check_table(table)


def _pairs(value: Any) -> Elements:
    pairs = []
    for pair in _list(value):
        name, element = _list(pair)
        pairs.append((_str(name), _str(element)))
    return tuple(pairs)


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list) or len(value) > MAX_JOURNAL_ITEMS:
        raise TypeError(f"not a list of at most {MAX_JOURNAL_ITEMS}: {str(value)[:80]}")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"not a string: {str(value)[:80]}")
    return value
