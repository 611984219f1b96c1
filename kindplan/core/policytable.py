"""kindplan's NetworkPolicy table in nft's words: read from `nft list table`'s text, written as
`nft -f` transactions. Pure: node/nftables.py runs `nft`.

    table inet kindplan-policy {
        comment "kindplan: NetworkPolicy (owned by kindplan)"     the ownership marker
        set NAME { type ...; flags interval; comment "..."; elements = { ... } }
        chain NAME { type filter hook forward priority filter; policy accept; rules... }
    }

Why the text listing, not `nft -j`: compile holds rules and elements as `nft list table` prints
them (core/nfttable.py), so a table read back as text compares with the compiled one line for
line; JSON would need every rule expression rendered back into nft's syntax, and one that was
rendered differently would rewrite the table every round.

Ownership: a table of that name is kindplan's only when its comment is MARKER (nft 1.0.6 prints
a table's comment as the body's first line). One without it is someone else's: never written,
never deleted (named in the plan). What kindplan cannot read in its own table (a map, a set
declared with typeof, a timeout, a chain's comment, any line of another shape) is named in the
plan and replaced by a full rewrite, never a crash.

Transactions, each one `nft -f -` (atomic: all of it or nothing):
- a table written whole: `delete table` (only when kindplan's is there) then `create table`
  (refused when a table of that name exists: one that appeared since kindplan looked is not
  overwritten), its sets, their elements, its chains, their rules;
- elements only (the structure is the same): `delete element` then `add element` per set; a
  deletion of an element that is not there refuses the whole transaction;
- the table deleted: `delete table`.
Text read back from a journal is replayed inside these commands only: check_table refuses any
name, type, element, rule or comment that could end its command or name another table.
"""

from __future__ import annotations

import hashlib
import re
from typing import NamedTuple

from kindplan.core.nfttable import NftChain, NftSet, NftTable

FAMILY = "inet"
NAME = "kindplan-policy"
MARKER = "kindplan: NetworkPolicy (owned by kindplan)"
MAX_UNREAD = 64  # a listing is untrusted: at most this many lines named


class PolicyRead(NamedTuple):
    """What `nft list table inet kindplan-policy` said: kindplan's table (None: absent, or not
    kindplan's), what of it was not understood, and whether a table of that name is someone
    else's."""

    table: NftTable | None
    unread: tuple[str, ...] = ()
    foreign: bool = False
    # The ruleset's generation it was read at (None: not known). A reading of the generation
    # alone (table None) stands for the table as read at that generation: the converged
    # record's digest (node/observe.py).
    generation: int | None = None


ABSENT = PolicyRead(None)

# -- checking text replayed into nft ------------------------------------------------------------

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
_TYPE = re.compile(r"[a-z0-9_]+( \. [a-z0-9_]+)*")
_BASE = re.compile(
    r"(type (filter|route|nat) hook (prerouting|input|forward|output|postrouting) "
    r"priority [a-z0-9 +-]+; policy (accept|drop);)?"
)
_FORBIDDEN = re.compile(r"[;{}#\n\r\x00]")


def _checked(what: str, text: str, pattern: re.Pattern[str] | None = None) -> str:
    if pattern is not None and not pattern.fullmatch(text):
        raise ValueError(f"{what} {text[:80]!r} is not of the shape kindplan writes")
    if pattern is None and (_FORBIDDEN.search(text) or text.count('"') % 2):
        raise ValueError(f"{what} {text[:80]!r} could end its nft command")
    return text


def check_table(table: NftTable) -> NftTable:
    """`table` if every text in it can go inside kindplan's nft commands as it is (none ends its
    command, names another table or opens a block); else ValueError."""
    if (table.family, table.name) != (FAMILY, NAME):
        raise ValueError(f"table {table.family} {table.name} is not kindplan's policy table")
    for s in table.sets:
        _checked("set", s.name, _NAME)
        _checked(f"set {s.name}: type", s.type, _TYPE)
        for flag in s.flags:
            _checked(f"set {s.name}: flag", flag, _NAME)
        _checked(f"set {s.name}: comment", s.comment)
        if '"' in s.comment:
            raise ValueError(f"set {s.name}: a comment with a quote")
        for element in s.elements:
            _checked(f"set {s.name}: element", element)
    for chain in table.chains:
        _checked("chain", chain.name, _NAME)
        _checked(f"chain {chain.name}: declaration", chain.base, _BASE)
        for rule in chain.rules:
            _checked(f"chain {chain.name}: rule", rule)
    return table


# -- writing ------------------------------------------------------------------------------------


def _where(table: NftTable) -> str:
    return f"{table.family} {table.name}"


def table_payload(table: NftTable, replacing: bool) -> str:
    """`table` written whole in one transaction; `replacing`: kindplan's table is there now and
    goes first (else `create` refuses a table that appeared meanwhile)."""
    t = _where(check_table(table))
    lines = [f"delete table {t}"] if replacing else []
    lines.append(f'create table {t} {{ comment "{MARKER}"; }}')
    for s in table.sets:
        flags = f" flags {','.join(s.flags)};" if s.flags else ""
        comment = f' comment "{s.comment}";' if s.comment else ""
        lines.append(f"add set {t} {s.name} {{ type {s.type};{flags}{comment} }}")
        if s.elements:
            lines.append(f"add element {t} {s.name} {{ {', '.join(sorted(s.elements))} }}")
    for chain in table.chains:  # every chain before any rule: a rule may jump to a later one
        lines.append(f"add chain {t} {chain.name} {{ {chain.base} }}")
    for chain in table.chains:
        lines += [f"add rule {t} {chain.name} {rule}" for rule in chain.rules]
    return "\n".join(lines) + "\n"


def delete_payload() -> str:
    """kindplan's table deleted (refused if there is none: nothing else is named)."""
    return f"delete table {FAMILY} {NAME}\n"


Elements = tuple[tuple[str, str], ...]  # (set, element), sorted


def elements_payload(add: Elements, delete: Elements) -> str:
    """Elements deleted, then added, in one transaction (deleted first: an interval set refuses
    an element that overlaps one that goes in the same change)."""
    t = f"{FAMILY} {NAME}"
    lines = []
    for verb, pairs in (("delete", delete), ("add", add)):
        by_set: dict[str, list[str]] = {}
        for name, element in pairs:
            by_set.setdefault(_checked("set", name, _NAME), []).append(
                _checked(f"set {name}: element", element)
            )
        lines += [f"{verb} element {t} {n} {{ {', '.join(e)} }}" for n, e in by_set.items()]
    return "\n".join(lines) + "\n"


def element_delta(desired: NftTable, observed: NftTable) -> tuple[Elements, Elements]:
    """(added, deleted) elements that turn `observed` into `desired` (same structure)."""
    now = {s.name: s.elements for s in observed.sets}
    added: list[tuple[str, str]] = []
    deleted: list[tuple[str, str]] = []
    for s in desired.sets:
        held = now.get(s.name, frozenset())
        added += ((s.name, e) for e in s.elements - held)
        deleted += ((s.name, e) for e in held - s.elements)
    return tuple(sorted(added)), tuple(sorted(deleted))


def table_digest(table: NftTable | None) -> str:
    """A digest of everything in `table` (elements in any order): equal tables, equal digests."""
    if table is None:
        return "absent"
    sets = [(s.name, s.type, s.flags, s.comment, sorted(s.elements)) for s in table.sets]
    text = repr((table.family, table.name, sets, table.chains))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def rule_count(table: NftTable | None) -> int:
    return 0 if table is None else sum(len(c.rules) for c in table.chains)


# -- reading ------------------------------------------------------------------------------------


def parse_listing(text: str | None) -> PolicyRead:
    """kindplan's table from `nft list table inet kindplan-policy` (None: no such table)."""
    if text is None:
        return ABSENT
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != f"table {FAMILY} {NAME} {{" or lines[-1] != "}":
        return PolicyRead(None, (f"not a listing of table {FAMILY} {NAME}",))
    body = lines[1:-1]
    if not body or body[0] != f'comment "{MARKER}"':
        return PolicyRead(None, foreign=True)
    reader = _Reader(body[1:])
    reader.read()
    table = NftTable(
        FAMILY,
        NAME,
        tuple(sorted(reader.sets, key=lambda s: s.name)),
        tuple(sorted(reader.chains, key=lambda c: c.name)),
    )
    return PolicyRead(table, tuple(reader.unread[:MAX_UNREAD]))


class _Reader:
    """The blocks of a table's body, in order: sets and chains read, anything else unread."""

    def __init__(self, lines: list[str]) -> None:
        self.lines, self.at = lines, 0
        self.sets: list[NftSet] = []
        self.chains: list[NftChain] = []
        self.unread: list[str] = []

    def read(self) -> None:
        while self.at < len(self.lines):
            line = self.lines[self.at]
            self.at += 1
            kind, _, rest = line.partition(" ")
            name = rest.removesuffix(" {")
            if kind == "set" and rest.endswith(" {") and _NAME.fullmatch(name):
                self._set(name, self._block())
            elif kind == "chain" and rest.endswith(" {") and _NAME.fullmatch(name):
                self._chain(name, self._block())
            else:
                self.unread.append(line[:200])
                if line.endswith("{"):
                    self._block()  # a map, a flowtable, a named counter: skipped whole

    def _block(self) -> list[str]:
        """The lines up to the block's closing brace (nested blocks included)."""
        out, depth = [], 1
        while self.at < len(self.lines):
            line = self.lines[self.at]
            self.at += 1
            depth += line.endswith("{") - (line == "}")
            if depth == 0:
                break
            out.append(line)
        return out

    def _set(self, name: str, lines: list[str]) -> None:
        fields: dict[str, str] = {}
        elements: list[str] = []
        joined = _join_elements(lines)
        for line in joined:
            key, _, value = line.partition(" ")
            if key == "elements" and value.startswith("= {") and value.endswith("}"):
                elements = _split(value[3:-1])
            elif key in ("type", "flags") and key not in fields:
                fields[key] = value
            elif key == "comment" and value.startswith('"') and value.endswith('"'):
                fields[key] = value[1:-1]
            else:
                self.unread.append(f"set {name}: {line[:200]}")
        if "type" not in fields or not _TYPE.fullmatch(fields["type"]):
            self.unread.append(f"set {name}: no type kindplan writes")
        flags = tuple(sorted(fields.get("flags", "").split(","))) if "flags" in fields else ()
        self.sets.append(
            NftSet(
                name, fields.get("type", ""), flags, frozenset(elements), fields.get("comment", "")
            )
        )

    def _chain(self, name: str, lines: list[str]) -> None:
        base = ""
        if lines and lines[0].startswith("type ") and " hook " in lines[0]:
            base, lines = lines[0], lines[1:]
        rules = []
        for line in lines:
            if line.startswith(("comment ", "policy ", "type ", "devices ")) or line.endswith("{"):
                self.unread.append(f"chain {name}: {line[:200]}")
            else:
                rules.append(line)
        self.chains.append(NftChain(name, base, tuple(rules)))


def _join_elements(lines: list[str]) -> list[str]:
    """A set's lines with its elements on one line (nft wraps a long list over many)."""
    out: list[str] = []
    open_list = False
    for line in lines:
        if open_list:
            out[-1] += " " + line
        else:
            out.append(line)
            open_list = line.startswith("elements = {")
        if open_list and _closed(out[-1]):
            open_list = False
    return out


def _closed(text: str) -> bool:
    """Does the list opened in `text` close at its end (a brace outside quotes)?"""
    outside = text.split('"')[::2]  # the parts outside quotes
    return text.endswith("}") and sum(p.count("{") - p.count("}") for p in outside) == 0


def _split(text: str) -> list[str]:
    """Elements separated by commas outside quotes."""
    out: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            out.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    out.append("".join(current).strip())
    return [e for e in out if e]
