"""The change types of nexthop objects (core/nexthops.py), beside changes.py's: each with all that
it means in one class, as there. Part of changes.py's `Change` union.

Order: an object goes in before the routes that use it and out after them (the kernel deletes
the routes of an object it deletes, another's included: diff never deletes one that a foreign
route uses). undo_rank keeps that order in a teardown, where it ranks the undo changes as they
run: AddNexthop (1, with AddAddress) before any route is put back (2, 4), DelNexthop (5, with
DelAddress) once the routes through it are gone (2, 4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from kindplan.core.nexthops import Nexthop, decode_nexthop, encode_nexthop, nexthop_text


def _for(nexthop: Nexthop, *more: str) -> str:
    parts = [f"peer {nexthop.peer}" if nexthop.peer else "", *more]
    text = "; ".join(p for p in parts if p)
    return f" ({text})" if text else ""


@dataclass(frozen=True, slots=True)
class AddNexthop:
    nexthop: Nexthop

    kind: ClassVar[str] = "nexthop"
    action: ClassVar[str] = "+"
    undo_rank: ClassVar[int] = 1
    on_disk: ClassVar[bool] = False

    def describe(self) -> str:
        return f"nexthop {nexthop_text(self.nexthop)}{_for(self.nexthop)}"

    def undo(self) -> DelNexthop:
        return DelNexthop(self.nexthop)

    def encode(self) -> dict[str, Any]:
        return {"type": "AddNexthop", "nexthop": encode_nexthop(self.nexthop)}

    @classmethod
    def decode(cls, d: dict[str, Any]) -> AddNexthop:
        return cls(decode_nexthop(d["nexthop"]))


@dataclass(frozen=True, slots=True)
class ReplaceNexthop:
    """kindplan's object at an id, changed in place: every route through it follows at once (a
    peer's new InternalIP is one write, its route untouched)."""

    nexthop: Nexthop
    old: Nexthop

    kind: ClassVar[str] = "nexthop"
    action: ClassVar[str] = "~"
    undo_rank: ClassVar[int] = 2
    on_disk: ClassVar[bool] = False

    def describe(self) -> str:
        old = self.old
        via = f"via {old.gateway} " if old.gateway is not None else ""
        was = f"was {via}dev {old.ifname} proto {old.proto}"
        return f"nexthop {nexthop_text(self.nexthop)}{_for(self.nexthop, was)}"

    def undo(self) -> ReplaceNexthop:
        return ReplaceNexthop(self.old, self.nexthop)

    def encode(self) -> dict[str, Any]:
        return {
            "type": "ReplaceNexthop",
            "nexthop": encode_nexthop(self.nexthop),
            "old": encode_nexthop(self.old),
        }

    @classmethod
    def decode(cls, d: dict[str, Any]) -> ReplaceNexthop:
        return cls(decode_nexthop(d["nexthop"]), decode_nexthop(d["old"]))


@dataclass(frozen=True, slots=True)
class DelNexthop:
    nexthop: Nexthop

    kind: ClassVar[str] = "nexthop"
    action: ClassVar[str] = "-"
    undo_rank: ClassVar[int] = 5
    on_disk: ClassVar[bool] = False

    def describe(self) -> str:
        stale = "" if self.nexthop.peer else "stale: no peer route uses it"
        return f"nexthop {nexthop_text(self.nexthop)}{_for(self.nexthop, stale)}"

    def undo(self) -> AddNexthop:
        return AddNexthop(self.nexthop)

    def encode(self) -> dict[str, Any]:
        return {"type": "DelNexthop", "nexthop": encode_nexthop(self.nexthop)}

    @classmethod
    def decode(cls, d: dict[str, Any]) -> DelNexthop:
        return cls(decode_nexthop(d["nexthop"]))
