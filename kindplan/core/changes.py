"""The plan's typed changes, in the order they are applied, each with all that it means in one
class (plan text, undo, journal form); the Plan that holds them, and the journal's decoder.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, get_args

from kindplan.core.addresses import parse_ip
from kindplan.core.masq.dialects import DIALECTS, dialect
from kindplan.core.masq.value import Masquerade, decode_masq, encode_masq
from kindplan.core.model import Address
from kindplan.core.nexthop_changes import AddNexthop, DelNexthop, ReplaceNexthop
from kindplan.core.policychanges import DelPolicyTable, WritePolicyElements, WritePolicyTable
from kindplan.core.routes import (
    Route,
    decode_route,
    encode_route,
    route_for,
    route_text,
    route_was,
)
from kindplan.core.tunnelchanges import (
    DelFdb,
    DelNeighbour,
    DelVxlan,
    WriteFdb,
    WriteNeighbour,
    WriteVxlan,
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
    # The index of the veth it goes on, as observed: its undo removes the address from that
    # very link only, not from another that has since taken its name (0: not known).
    ifindex: int = field(default=0, compare=False)

    kind: ClassVar[str] = "address"
    action: ClassVar[str] = "+"
    undo_rank: ClassVar[int] = 1
    on_disk: ClassVar[bool] = False

    def describe(self) -> str:
        return f"address {_address_text(self.address)} (pod {self.address.pod})"

    def undo(self) -> Change:
        return DelAddress(self.address, self.ifindex)

    def encode(self) -> dict[str, Any]:
        return {"type": "AddAddress", **_encode_address(self.address, self.ifindex)}

    @classmethod
    def decode(cls, d: dict[str, Any]) -> AddAddress:
        return cls(_decode_address(d), _decode_ifindex(d))


@dataclass(frozen=True, slots=True)
class AddRoute:
    route: Route
    # The kernel's own message body of `route` (rtmsg and every attribute, as a dump gave it) when
    # the undo of a deletion puts back a foreign route: written back as it was, attributes that
    # a Route does not model too (node/netlink_rawroute.py); b"": written from the Route's
    # fields. Not compared: the same route, said more exactly.
    raw: bytes = field(default=b"", compare=False, repr=False)

    kind: ClassVar[str] = "route"
    action: ClassVar[str] = "+"
    undo_rank: ClassVar[int] = 2
    on_disk: ClassVar[bool] = False

    def describe(self) -> str:
        return f"route {route_text(self.route)}{_why(route_for(self.route))}"

    def undo(self) -> Change:
        return DelRoute(self.route)

    def encode(self) -> dict[str, Any]:
        return {"type": "AddRoute", "route": encode_route(self.route), **_encode_raw(self.raw)}

    @classmethod
    def decode(cls, d: dict[str, Any]) -> AddRoute:
        return cls(decode_route(d["route"]), _decode_raw(d))


@dataclass(frozen=True, slots=True)
class ReplaceRoute:
    route: Route
    old: Route
    raw: bytes = field(default=b"", compare=False, repr=False)  # of `route`, as AddRoute's
    old_raw: bytes = field(default=b"", compare=False, repr=False)  # of `old`: its undo's raw

    kind: ClassVar[str] = "route"
    action: ClassVar[str] = "~"
    undo_rank: ClassVar[int] = 2
    on_disk: ClassVar[bool] = False

    def describe(self) -> str:
        was = f"was {route_was(self.old)}"
        return f"route {route_text(self.route)}{_why(route_for(self.route), was)}"

    def undo(self) -> Change:
        return ReplaceRoute(self.old, self.route, raw=self.old_raw)

    def encode(self) -> dict[str, Any]:
        return {
            "type": "ReplaceRoute",
            "route": encode_route(self.route),
            "old": encode_route(self.old),
            **_encode_raw(self.raw),
        }

    @classmethod
    def decode(cls, d: dict[str, Any]) -> ReplaceRoute:
        return cls(decode_route(d["route"]), decode_route(d["old"]), _decode_raw(d))


@dataclass(frozen=True, slots=True)
class WriteMasquerade:
    """Make one family's masquerade in one backend `masq`, and send traffic into it `want_hooks`
    times, in one commit (its dialect's payload)."""

    version: int
    masq: Masquerade | None  # None: it is right, only its hooks need fixing
    old: Masquerade | None  # what the backend held (None: nothing)
    hooks: int  # hooks observed
    want_hooks: int = 1  # hooks left afterwards (a rollback may restore another count)
    hooks_at: tuple[int, ...] = ()  # where the hooks observed are, in the backend's numbering
    want_at: tuple[int, ...] = ()  # where they go when their count changes (): wherever it adds
    backend: str = "iptables"  # the dialect that writes it (core/masq/dialects.py)
    variant: str | None = None  # the backend's variant written; None: the one in use then
    # What the backend held that its dialect could not read: shown by the plan, replaced, never
    # written back, so neither journaled (an undo restores `old`).
    unread: tuple[str, ...] = ()
    # The write makes the backend's nat table too (there was none): its undo drops the table
    # again if nothing else is in it then (observed before the apply; not compared).
    made_table: bool = field(default=False, compare=False)

    undo_rank: ClassVar[int] = 3
    on_disk: ClassVar[bool] = False

    @property
    def kind(self) -> str:
        return self.backend

    @property
    def action(self) -> str:
        return "+" if self.old is None else "~"

    def describe(self) -> str:
        return dialect(self.backend).describe_write(self)

    def undo(self) -> Change:
        if self.old is None and self.masq is not None:
            return RemoveMasquerade(
                self.version,
                self.masq,
                self.want_hooks,
                self.backend,
                self.variant,
                drop_table=self.made_table,
            )
        swapped = replace(
            self,
            hooks=self.want_hooks,
            want_hooks=self.hooks,
            hooks_at=self.want_at,
            want_at=self.hooks_at,
            unread=(),
        )
        if self.masq is None:  # only the hooks changed; `old` just says what it held
            return swapped
        return replace(swapped, masq=self.old, old=self.masq)

    def encode(self) -> dict[str, Any]:
        return {
            "type": "WriteMasquerade",
            "backend": self.backend,
            "variant": self.variant,
            "version": self.version,
            "masq": encode_masq(self.masq),
            "old": encode_masq(self.old),
            "hooks": self.hooks,
            "wantHooks": self.want_hooks,
            "hooksAt": list(self.hooks_at),
            "wantAt": list(self.want_at),
        }

    @classmethod
    def decode(cls, d: dict[str, Any]) -> WriteMasquerade:
        version = decode_version(d)
        backend, variant = _decode_backend(d)
        return cls(
            version,
            masq=decode_masq(version, d["masq"]),
            old=decode_masq(version, d["old"]),
            hooks=int(d["hooks"]),
            want_hooks=int(d["wantHooks"]),
            hooks_at=tuple(int(at) for at in d["hooksAt"]),
            want_at=tuple(int(at) for at in d["wantAt"]),
            backend=backend,
            variant=variant,
        )


@dataclass(frozen=True, slots=True)
class RemoveMasquerade:
    """Take kindplan's masquerade of one family out of one backend, hooks and all: a rollback to
    before kindplan, a backend the node no longer uses, a family the cluster no longer has."""

    version: int
    old: Masquerade
    hooks: int
    backend: str = "iptables"  # the dialect that removes it (core/masq/dialects.py)
    variant: str | None = None  # the backend's variant; None: the one in use then
    unread: tuple[str, ...] = ()  # as WriteMasquerade's
    drop_table: bool = False  # drop the nat table too if it is empty then (made by the apply)

    action: ClassVar[str] = "-"
    undo_rank: ClassVar[int] = 3
    on_disk: ClassVar[bool] = False

    @property
    def kind(self) -> str:
        return self.backend

    def describe(self) -> str:
        return dialect(self.backend).describe_remove(self)

    def undo(self) -> Change:
        return WriteMasquerade(
            self.version,
            masq=self.old,
            old=None,
            hooks=0,
            want_hooks=self.hooks,
            backend=self.backend,
            variant=self.variant,
        )

    def encode(self) -> dict[str, Any]:
        return {
            "type": "RemoveMasquerade",
            "backend": self.backend,
            "variant": self.variant,
            "version": self.version,
            "old": encode_masq(self.old),
            "hooks": self.hooks,
            **({"dropTable": True} if self.drop_table else {}),
        }

    @classmethod
    def decode(cls, d: dict[str, Any]) -> RemoveMasquerade:
        version = decode_version(d)
        backend, variant = _decode_backend(d)
        old = decode_masq(version, d["old"])
        if old is None:
            raise ValueError("RemoveMasquerade without what it removes")
        drop_table = d.get("dropTable", False) is True  # absent in journals before it
        return cls(version, old, int(d["hooks"]), backend, variant, drop_table=drop_table)


@dataclass(frozen=True, slots=True)
class DelAddress:
    address: Address
    ifindex: int = field(default=0, compare=False)  # as AddAddress's (0: any link of its name)

    kind: ClassVar[str] = "address"
    action: ClassVar[str] = "-"
    undo_rank: ClassVar[int] = 5
    on_disk: ClassVar[bool] = False

    def describe(self) -> str:
        return f"address {_address_text(self.address)}"

    def undo(self) -> Change:
        return AddAddress(self.address, self.ifindex)

    def encode(self) -> dict[str, Any]:
        return {"type": "DelAddress", **_encode_address(self.address, self.ifindex)}

    @classmethod
    def decode(cls, d: dict[str, Any]) -> DelAddress:
        return cls(_decode_address(d), _decode_ifindex(d))


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
    # Why a foreign route goes (--adopt: kindnetd's leftover, a route shadowing kindplan's); ""
    # for one of kindplan's. Words only: not compared, not journaled (an undo that deletes a
    # route deletes one of ours).
    why: str = field(default="", compare=False)
    raw: bytes = field(default=b"", compare=False, repr=False)  # of `route`: its undo's raw

    kind: ClassVar[str] = "route"
    action: ClassVar[str] = "-"
    undo_rank: ClassVar[int] = 4
    on_disk: ClassVar[bool] = False

    def describe(self) -> str:
        # Observed routes carry no peer: one of ours that nothing wants any more is stale.
        stale = self.why or "stale: no longer in the snapshot"
        return f"route {route_text(self.route)}{_why(route_for(self.route) or stale)}"

    def undo(self) -> Change:
        return AddRoute(self.route, raw=self.raw)

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
    | WriteMasquerade
    | RemoveMasquerade
    | DelRoute
    | DelAddress
    | WriteConflist
    | DeleteConflist
    # the cross-subnet tunnel's (core/tunnelchanges.py)
    | WriteVxlan
    | DelVxlan
    | WriteNeighbour
    | DelNeighbour
    | WriteFdb
    | DelFdb
    | AddNexthop
    | ReplaceNexthop
    | DelNexthop
    # kindplan's NetworkPolicy table (core/policychanges.py)
    | WritePolicyTable
    | DelPolicyTable
    | WritePolicyElements
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
# The names journals written before the masquerade value gave their iptables chain changes: still
# read (_decode_legacy), never written.
_LEGACY = ("WriteChain", "RemoveChain")


def decode_change(d: dict[str, Any]) -> Change:
    """The change that `encode()` wrote as `d`; ValueError, KeyError or TypeError if it is not
    one."""
    name = d["type"]
    if name in _LEGACY:  # a journal from before the masquerade value: its chains as rule text
        return _decode_legacy(d)
    cls = _CHANGE_TYPES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"unknown change type {name!r}")
    return cls.decode(d)


def _why(*parts: str) -> str:
    text = "; ".join(p for p in parts if p)
    return f" ({text})" if text else ""


# A route message body is a few hundred bytes; a journal line naming a much longer one is not
# kindplan's (schemas/journal.schema.json bounds the hex too).
MAX_RAW_ROUTE = 4096


def _encode_raw(raw: bytes) -> dict[str, str]:
    return {"raw": raw.hex()} if raw else {}


def _decode_raw(d: dict[str, Any]) -> bytes:
    """A route change's raw message body (b"": none, as in every journal before it). Only its
    form is checked here: what it says is checked against the route by the journal's reader
    (node/netlink_rawroute.check_raw), which knows netlink."""
    raw = bytes.fromhex(str(d.get("raw", "")))
    if len(raw) > MAX_RAW_ROUTE:
        raise ValueError(f"a route's raw attributes of {len(raw)} bytes (at most {MAX_RAW_ROUTE})")
    return raw


def _address_text(address: Address) -> str:
    return f"{address.address}/{address.prefixlen} dev {address.ifname}"


def _encode_address(address: Address, ifindex: int) -> dict[str, Any]:
    d = {"ifname": address.ifname, "address": str(address.address), "pod": address.pod}
    return d | {"ifindex": ifindex} if ifindex else d


def _decode_ifindex(d: dict[str, Any]) -> int:
    """A link index (0: none, as in every journal before it)."""
    ifindex = d.get("ifindex", 0)
    if type(ifindex) is not int or not 0 <= ifindex < 1 << 31:
        raise ValueError(f"ifindex {ifindex!r}")
    return ifindex


def _decode_address(d: dict[str, Any]) -> Address:
    return Address(str(d["ifname"]), parse_ip(d["address"]), str(d["pod"]))


def decode_version(d: dict[str, Any]) -> int:
    """The IP family of a masquerade change of the journal."""
    if d["version"] not in (4, 6):
        raise ValueError(f"iptables version {d['version']!r}")
    return int(d["version"])


def _decode_backend(d: dict[str, Any]) -> tuple[str, str | None]:
    """The backend a masquerade change went to, and its variant (None: the one in use then)."""
    backend = d["backend"]
    if not isinstance(backend, str) or backend not in DIALECTS:
        raise ValueError(f"unknown masquerade backend {backend!r}")
    variant = d["variant"]
    if variant is not None and variant not in dialect(backend).variants:
        raise ValueError(f"unknown {backend} variant {variant!r}")
    return backend, variant


# -- journals written before the value: their chain changes as rule text ------------------------


def _decode_legacy(d: dict[str, Any]) -> WriteMasquerade | RemoveMasquerade:
    """A WriteChain or RemoveChain line of a journal from before the value: its rules read as
    values (a line kindplan cannot read is not written back; see MasqObserved.unread)."""
    from kindplan.core.masq.iptables import VARIANTS, read_rules

    version = decode_version(d)
    variant = d.get("backend")
    if variant is not None and variant not in VARIANTS:
        raise ValueError(f"unknown iptables backend {variant!r}")

    def value(lines: Any) -> Masquerade | None:
        return None if lines is None else read_rules(version, [str(r) for r in lines])[0]

    if d["type"] == "RemoveChain":
        old = value(d["oldRules"])
        assert old is not None
        return RemoveMasquerade(version, old, int(d["jumps"]), variant=variant)
    return WriteMasquerade(
        version,
        masq=value(d["rules"]),
        old=value(d["oldRules"]),
        hooks=int(d["jumps"]),
        want_hooks=int(d["wantJumps"]),
        hooks_at=tuple(d.get("jumpsAt", ())),  # a journal of kindplan 1 has no positions
        want_at=tuple(d.get("wantAt", ())),
        variant=variant,
    )
