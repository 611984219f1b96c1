"""The change types of the cross-subnet tunnel: kindplan's VXLAN device, and a peer's neighbour
and FDB entries on it. Members of changes.Change, each with all it means in one class, as the
others there (changes.py says what each method is for).

undo_rank places them in a teardown among the others: a device comes back before its entries
and the routes through it (1), entries with the routes (2); entries go after the routes through
the device (5, with the veths' addresses), the device last (6, with the sysctls).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from kindplan.core.tunnel import (
    FdbEntry,
    Neighbour,
    Vxlan,
    decode_fdb,
    decode_neighbour,
    decode_vxlan,
    encode_fdb,
    encode_neighbour,
    encode_vxlan,
    fdb_text,
    neighbour_text,
    vxlan_text,
)


def _for(peer: str) -> str:
    return f" (peer {peer})" if peer else ""


@dataclass(frozen=True, slots=True)
class WriteVxlan:
    """Create kindplan's VXLAN device of a family (old None), or set what differs on it."""

    vxlan: Vxlan
    old: Vxlan | None

    kind: ClassVar[str] = "vxlan"
    undo_rank: ClassVar[int] = 1
    on_disk: ClassVar[bool] = False

    @property
    def action(self) -> str:
        return "+" if self.old is None else "~"

    def describe(self) -> str:
        return f"device {vxlan_text(self.vxlan)}"

    def undo(self) -> WriteVxlan | DelVxlan:
        if self.old is None:
            return DelVxlan(self.vxlan)
        return WriteVxlan(self.old, self.vxlan)

    def encode(self) -> dict[str, Any]:
        old = None if self.old is None else encode_vxlan(self.old)
        return {"type": "WriteVxlan", "vxlan": encode_vxlan(self.vxlan), "old": old}

    @classmethod
    def decode(cls, d: dict[str, Any]) -> WriteVxlan:
        old = None if d["old"] is None else decode_vxlan(d["old"])
        return cls(decode_vxlan(d["vxlan"]), old)


@dataclass(frozen=True, slots=True)
class DelVxlan:
    """Delete kindplan's VXLAN device (its entries, and routes through it, go with it)."""

    vxlan: Vxlan

    kind: ClassVar[str] = "vxlan"
    action: ClassVar[str] = "-"
    undo_rank: ClassVar[int] = 6
    on_disk: ClassVar[bool] = False

    def describe(self) -> str:
        return f"device {vxlan_text(self.vxlan)} (no peer needs it)"

    def undo(self) -> WriteVxlan:
        return WriteVxlan(self.vxlan, None)

    def encode(self) -> dict[str, Any]:
        return {"type": "DelVxlan", "vxlan": encode_vxlan(self.vxlan)}

    @classmethod
    def decode(cls, d: dict[str, Any]) -> DelVxlan:
        return cls(decode_vxlan(d["vxlan"]))


@dataclass(frozen=True, slots=True)
class WriteNeighbour:
    """Put a peer's permanent neighbour entry on the device (replacing `old`, if any)."""

    neighbour: Neighbour
    old: Neighbour | None

    kind: ClassVar[str] = "neighbour"
    undo_rank: ClassVar[int] = 2
    on_disk: ClassVar[bool] = False

    @property
    def action(self) -> str:
        return "+" if self.old is None else "~"

    def describe(self) -> str:
        was = "" if self.old is None else f", was lladdr {self.old.mac}"
        peer = f"peer {self.neighbour.peer}" if self.neighbour.peer else ""
        words = "; ".join(w for w in (peer, was.removeprefix(", ")) if w)
        return f"neighbour {neighbour_text(self.neighbour)}" + (f" ({words})" if words else "")

    def undo(self) -> WriteNeighbour | DelNeighbour:
        if self.old is None:
            return DelNeighbour(self.neighbour)
        return WriteNeighbour(self.old, self.neighbour)

    def encode(self) -> dict[str, Any]:
        old = None if self.old is None else encode_neighbour(self.old)
        return {"type": "WriteNeighbour", "neighbour": encode_neighbour(self.neighbour), "old": old}

    @classmethod
    def decode(cls, d: dict[str, Any]) -> WriteNeighbour:
        old = None if d["old"] is None else decode_neighbour(d["old"])
        return cls(decode_neighbour(d["neighbour"]), old)


@dataclass(frozen=True, slots=True)
class DelNeighbour:
    neighbour: Neighbour

    kind: ClassVar[str] = "neighbour"
    action: ClassVar[str] = "-"
    undo_rank: ClassVar[int] = 5
    on_disk: ClassVar[bool] = False

    def describe(self) -> str:
        return f"neighbour {neighbour_text(self.neighbour)}{_for(self.neighbour.peer)}"

    def undo(self) -> WriteNeighbour:
        return WriteNeighbour(self.neighbour, None)

    def encode(self) -> dict[str, Any]:
        return {"type": "DelNeighbour", "neighbour": encode_neighbour(self.neighbour)}

    @classmethod
    def decode(cls, d: dict[str, Any]) -> DelNeighbour:
        return cls(decode_neighbour(d["neighbour"]))


@dataclass(frozen=True, slots=True)
class WriteFdb:
    """Put a peer's permanent FDB entry on the device (replacing `old`, if any)."""

    entry: FdbEntry
    old: FdbEntry | None

    kind: ClassVar[str] = "fdb"
    undo_rank: ClassVar[int] = 2
    on_disk: ClassVar[bool] = False

    @property
    def action(self) -> str:
        return "+" if self.old is None else "~"

    def describe(self) -> str:
        peer = f"peer {self.entry.peer}" if self.entry.peer else ""
        was = "" if self.old is None else f"was dst {self.old.dst}"
        words = "; ".join(w for w in (peer, was) if w)
        return f"fdb {fdb_text(self.entry)}" + (f" ({words})" if words else "")

    def undo(self) -> WriteFdb | DelFdb:
        if self.old is None:
            return DelFdb(self.entry)
        return WriteFdb(self.old, self.entry)

    def encode(self) -> dict[str, Any]:
        old = None if self.old is None else encode_fdb(self.old)
        return {"type": "WriteFdb", "entry": encode_fdb(self.entry), "old": old}

    @classmethod
    def decode(cls, d: dict[str, Any]) -> WriteFdb:
        old = None if d["old"] is None else decode_fdb(d["old"])
        return cls(decode_fdb(d["entry"]), old)


@dataclass(frozen=True, slots=True)
class DelFdb:
    entry: FdbEntry

    kind: ClassVar[str] = "fdb"
    action: ClassVar[str] = "-"
    undo_rank: ClassVar[int] = 5
    on_disk: ClassVar[bool] = False

    def describe(self) -> str:
        return f"fdb {fdb_text(self.entry)}{_for(self.entry.peer)}"

    def undo(self) -> WriteFdb:
        return WriteFdb(self.entry, None)

    def encode(self) -> dict[str, Any]:
        return {"type": "DelFdb", "entry": encode_fdb(self.entry)}

    @classmethod
    def decode(cls, d: dict[str, Any]) -> DelFdb:
        return cls(decode_fdb(d["entry"]))


TunnelChange = WriteVxlan | DelVxlan | WriteNeighbour | DelNeighbour | WriteFdb | DelFdb
TUNNEL_CHANGES = (WriteVxlan, DelVxlan, WriteNeighbour, DelNeighbour, WriteFdb, DelFdb)
