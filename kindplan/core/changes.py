"""The plan's typed changes, in the order they are applied, each with all that it means in one
class (plan text, undo, journal form); the Plan that holds them, and the journal's decoder.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar, get_args

from kindplan.core.addresses import parse_ip
from kindplan.core.model import Address
from kindplan.core.routes import (
    Route,
    decode_route,
    encode_route,
    route_for,
    route_text,
    route_was,
)

# -- the plan: typed changes, in the order they are applied -------------------------------------
#
# Each change type carries, in its class below, what it means wherever it goes: its `action`
# (+ ~ -), `kind` and `describe()` for the plan's text and JSON, its `undo()` and `undo_rank`, and
# `encode()`/`decode()` for the journal, whose undo line waits for the disk when it is `on_disk`
# (outlives a reboot). The code that acts on the node, or weighs a change
# against it, dispatches with a `match` that ends in assert_never (node/apply.py's apply_change
# and route_write, diff's _in_effect, guard's removed_state and owned_routes_delta, planview's
# details), so that mypy names every place a new change type is missing from; a class without
# one of the methods fails mypy where the union is used (tests/unit/test_change_types.py).
#
# undo_rank orders the undo of a generation as a teardown: the conflist kindplan created goes
# first (kubelet stops seeing a ready network), then routes before addresses (removing a veth's
# last IPv4 address makes the kernel drop that veth's routes), sysctls and a restored conflist last.


@dataclass(frozen=True, slots=True)
class SetSysctl:
    name: str
    value: str
    old: str | None

    kind: ClassVar[str] = "sysctl"
    action: ClassVar[str] = "~"
    undo_rank: ClassVar[int] = 6
    on_disk: ClassVar[bool] = False

    def describe(self) -> str:
        return f"sysctl {self.name} = {self.value} (was {self.old})"

    def undo(self) -> Change | None:
        # No value was observed before (the sysctl could not be read): none to put back.
        return SetSysctl(self.name, self.old, self.value) if self.old is not None else None

    def encode(self) -> dict[str, Any]:
        return {"type": "SetSysctl", "name": self.name, "value": self.value, "old": self.old}

    @classmethod
    def decode(cls, d: dict[str, Any]) -> SetSysctl:
        return cls(str(d["name"]), str(d["value"]), d["old"])


@dataclass(frozen=True, slots=True)
class AddAddress:
    address: Address

    kind: ClassVar[str] = "address"
    action: ClassVar[str] = "+"
    undo_rank: ClassVar[int] = 1
    on_disk: ClassVar[bool] = False

    def describe(self) -> str:
        return f"address {_address_text(self.address)} (pod {self.address.pod})"

    def undo(self) -> Change:
        return DelAddress(self.address)

    def encode(self) -> dict[str, Any]:
        return {"type": "AddAddress", **_encode_address(self.address)}

    @classmethod
    def decode(cls, d: dict[str, Any]) -> AddAddress:
        return cls(_decode_address(d))


@dataclass(frozen=True, slots=True)
class AddRoute:
    route: Route

    kind: ClassVar[str] = "route"
    action: ClassVar[str] = "+"
    undo_rank: ClassVar[int] = 2
    on_disk: ClassVar[bool] = False

    def describe(self) -> str:
        return f"route {route_text(self.route)}{_why(route_for(self.route))}"

    def undo(self) -> Change:
        return DelRoute(self.route)

    def encode(self) -> dict[str, Any]:
        return {"type": "AddRoute", "route": encode_route(self.route)}

    @classmethod
    def decode(cls, d: dict[str, Any]) -> AddRoute:
        return cls(decode_route(d["route"]))


@dataclass(frozen=True, slots=True)
class ReplaceRoute:
    route: Route
    old: Route

    kind: ClassVar[str] = "route"
    action: ClassVar[str] = "~"
    undo_rank: ClassVar[int] = 2
    on_disk: ClassVar[bool] = False

    def describe(self) -> str:
        was = f"was {route_was(self.old)}"
        return f"route {route_text(self.route)}{_why(route_for(self.route), was)}"

    def undo(self) -> Change:
        return ReplaceRoute(self.old, self.route)

    def encode(self) -> dict[str, Any]:
        return {
            "type": "ReplaceRoute",
            "route": encode_route(self.route),
            "old": encode_route(self.old),
        }

    @classmethod
    def decode(cls, d: dict[str, Any]) -> ReplaceRoute:
        return cls(decode_route(d["route"]), decode_route(d["old"]))


@dataclass(frozen=True, slots=True)
class WriteChain:
    """Rewrite KIND-MASQ-AGENT of one family and fix its POSTROUTING jump, in one commit."""

    version: int
    rules: tuple[str, ...] | None  # None: the chain is right, only the jump needs fixing
    old_rules: tuple[str, ...] | None
    jumps: int  # jumps observed
    want_jumps: int = 1  # jumps left afterwards (a rollback may restore another count)
    jumps_at: tuple[int, ...] = ()  # positions of the jumps observed (1: POSTROUTING's first)
    want_at: tuple[int, ...] = ()  # where the jumps go when their count changes (): appended
    backend: str | None = None  # the iptables variant written; None: the one in use then

    kind: ClassVar[str] = "iptables"
    undo_rank: ClassVar[int] = 3
    on_disk: ClassVar[bool] = False

    @property
    def action(self) -> str:
        return "+" if self.old_rules is None else "~"

    def describe(self) -> str:
        parts = []
        if self.rules is not None:
            parts.append("chain KIND-MASQ-AGENT" + (" (new)" if self.old_rules is None else ""))
        if self.jumps != self.want_jumps:
            parts.append(f"POSTROUTING jump ({self.jumps} present, {self.want_jumps} wanted)")
        return f"{_iptables(self.version)} nat: {', '.join(parts)}"

    def undo(self) -> Change:
        if self.old_rules is None and self.rules is not None:
            return RemoveChain(
                self.version, old_rules=self.rules, jumps=self.want_jumps, backend=self.backend
            )
        swapped = replace(
            self,
            jumps=self.want_jumps,
            want_jumps=self.jumps,
            jumps_at=self.want_at,
            want_at=self.jumps_at,
        )
        if self.rules is None:  # only the jumps changed; old_rules just says what the chain held
            return swapped
        return replace(swapped, rules=self.old_rules, old_rules=self.rules)

    def encode(self) -> dict[str, Any]:
        return {
            "type": "WriteChain",
            "version": self.version,
            "rules": _list_or_none(self.rules),
            "oldRules": _list_or_none(self.old_rules),
            "jumps": self.jumps,
            "wantJumps": self.want_jumps,
            "jumpsAt": list(self.jumps_at),
            "wantAt": list(self.want_at),
            "backend": self.backend,
        }

    @classmethod
    def decode(cls, d: dict[str, Any]) -> WriteChain:
        return cls(
            version=_decode_version(d),
            rules=_tuple_or_none(d["rules"]),
            old_rules=_tuple_or_none(d["oldRules"]),
            jumps=int(d["jumps"]),
            want_jumps=int(d["wantJumps"]),
            jumps_at=tuple(d.get("jumpsAt", ())),  # a journal of kindplan 1 has no positions
            want_at=tuple(d.get("wantAt", ())),
            backend=_decode_backend(d),
        )


@dataclass(frozen=True, slots=True)
class RemoveChain:
    """Delete KIND-MASQ-AGENT of one family and every jump to it: a rollback to before kindplan,
    a backend the node no longer uses, a family the cluster no longer has."""

    version: int
    old_rules: tuple[str, ...]
    jumps: int
    backend: str | None = None  # the iptables variant written; None: the one in use then

    kind: ClassVar[str] = "iptables"
    action: ClassVar[str] = "-"
    undo_rank: ClassVar[int] = 3
    on_disk: ClassVar[bool] = False

    def describe(self) -> str:
        table = _iptables(self.version)
        table = f"{table}-{self.backend}" if self.backend else table
        return f"{table} nat: chain KIND-MASQ-AGENT and {self.jumps} jump(s)"

    def undo(self) -> Change:
        return WriteChain(
            self.version,
            rules=self.old_rules,
            old_rules=None,
            jumps=0,
            want_jumps=self.jumps,
            backend=self.backend,
        )

    def encode(self) -> dict[str, Any]:
        return {
            "type": "RemoveChain",
            "version": self.version,
            "oldRules": list(self.old_rules),
            "jumps": self.jumps,
            "backend": self.backend,
        }

    @classmethod
    def decode(cls, d: dict[str, Any]) -> RemoveChain:
        version = _decode_version(d)
        return cls(version, tuple(d["oldRules"]), int(d["jumps"]), _decode_backend(d))


@dataclass(frozen=True, slots=True)
class DelAddress:
    address: Address

    kind: ClassVar[str] = "address"
    action: ClassVar[str] = "-"
    undo_rank: ClassVar[int] = 5
    on_disk: ClassVar[bool] = False

    def describe(self) -> str:
        return f"address {_address_text(self.address)}"

    def undo(self) -> Change:
        return AddAddress(self.address)

    def encode(self) -> dict[str, Any]:
        return {"type": "DelAddress", **_encode_address(self.address)}

    @classmethod
    def decode(cls, d: dict[str, Any]) -> DelAddress:
        return cls(_decode_address(d))


@dataclass(frozen=True, slots=True)
class DeleteConflist:
    path: str
    old: str

    kind: ClassVar[str] = "conflist"
    action: ClassVar[str] = "-"
    undo_rank: ClassVar[int] = 0
    on_disk: ClassVar[bool] = True

    def describe(self) -> str:
        return f"file {self.path}"

    def undo(self) -> Change:
        return WriteConflist(self.path, self.old, None)

    def encode(self) -> dict[str, Any]:
        return {"type": "DeleteConflist", "path": self.path, "old": self.old}

    @classmethod
    def decode(cls, d: dict[str, Any]) -> DeleteConflist:
        return cls(str(d["path"]), str(d["old"]))


@dataclass(frozen=True, slots=True)
class DelRoute:
    route: Route

    kind: ClassVar[str] = "route"
    action: ClassVar[str] = "-"
    undo_rank: ClassVar[int] = 4
    on_disk: ClassVar[bool] = False

    def describe(self) -> str:
        # Observed routes carry no peer: one of ours that nothing wants any more is stale.
        stale = "stale: no longer in the snapshot"
        return f"route {route_text(self.route)}{_why(route_for(self.route) or stale)}"

    def undo(self) -> Change:
        return AddRoute(self.route)

    def encode(self) -> dict[str, Any]:
        return {"type": "DelRoute", "route": encode_route(self.route)}

    @classmethod
    def decode(cls, d: dict[str, Any]) -> DelRoute:
        return cls(decode_route(d["route"]))


@dataclass(frozen=True, slots=True)
class WriteConflist:
    path: str
    content: str
    old: str | None

    kind: ClassVar[str] = "conflist"
    undo_rank: ClassVar[int] = 7
    on_disk: ClassVar[bool] = True

    @property
    def action(self) -> str:
        return "+" if self.old is None else "~"

    def describe(self) -> str:
        return f"file {self.path}" + (" (new)" if self.old is None else "")

    def undo(self) -> Change:
        if self.old is None:
            return DeleteConflist(self.path, self.content)
        return WriteConflist(self.path, self.old, self.content)

    def encode(self) -> dict[str, Any]:
        return {
            "type": "WriteConflist",
            "path": self.path,
            "content": self.content,
            "old": self.old,
        }

    @classmethod
    def decode(cls, d: dict[str, Any]) -> WriteConflist:
        return cls(str(d["path"]), str(d["content"]), d["old"])


Change = (
    SetSysctl
    | AddAddress
    | AddRoute
    | ReplaceRoute
    | WriteChain
    | RemoveChain
    | DelRoute
    | DelAddress
    | WriteConflist
    | DeleteConflist
)


@dataclass(frozen=True, slots=True)
class Conflict:
    """A foreign route where kindplan needs its own: named in the plan, replaced only with adopt."""

    desired: Route
    observed: Route
    shadows: bool = False  # observed has another key, but a lower metric: the kernel takes it


@dataclass(frozen=True, slots=True)
class Plan:
    node: str
    changes: tuple[Change, ...]
    conflicts: tuple[Conflict, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.changes


# -- what the change types share: their journal form, their words in the plan ---------------


# The type of every change by its name, as the journal writes it.
_CHANGE_TYPES: dict[str, type[Change]] = {cls.__name__: cls for cls in get_args(Change)}


def decode_change(d: dict[str, Any]) -> Change:
    """The change that `encode()` wrote as `d`; ValueError, KeyError or TypeError if it is not
    one."""
    name = d["type"]
    cls = _CHANGE_TYPES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"unknown change type {name!r}")
    return cls.decode(d)


def _why(*parts: str) -> str:
    text = "; ".join(p for p in parts if p)
    return f" ({text})" if text else ""


def _address_text(address: Address) -> str:
    return f"{address.address}/{address.prefixlen} dev {address.ifname}"


def _iptables(version: int) -> str:
    return "ip6tables" if version == 6 else "iptables"


def _encode_address(address: Address) -> dict[str, Any]:
    return {"ifname": address.ifname, "address": str(address.address), "pod": address.pod}


def _decode_address(d: dict[str, Any]) -> Address:
    return Address(str(d["ifname"]), parse_ip(d["address"]), str(d["pod"]))


def _list_or_none(rules: tuple[str, ...] | None) -> list[str] | None:
    return list(rules) if rules is not None else None


def _tuple_or_none(rules: list[str] | None) -> tuple[str, ...] | None:
    return tuple(str(r) for r in rules) if rules is not None else None


def _decode_version(d: dict[str, Any]) -> int:
    if d["version"] not in (4, 6):
        raise ValueError(f"iptables version {d['version']!r}")
    return int(d["version"])


def _decode_backend(d: dict[str, Any]) -> str | None:
    """The iptables backend a chain change went to (journals before it was recorded: None,
    the backend in use)."""
    backend = d.get("backend")
    if backend not in (None, "", "legacy", "nft"):
        raise ValueError(f"unknown iptables backend {backend!r}")
    return None if backend is None else str(backend)
