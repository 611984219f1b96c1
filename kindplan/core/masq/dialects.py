"""The masquerade dialects by backend name, and what each must do. Pure.

A dialect is one module of this package that knows one backend's text: it reads what the backend
holds into the value (value.py) and renders values and changes into the backend's payloads. The
rest of kindplan reaches it by name through `dialect(backend)`, so that adding a backend is one
module and one line of DIALECTS (README, "Adding a masquerade dialect"). A dialect is imported
when first asked for: the command line's start-up never loads one it does not use.
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from typing import Protocol

    from kindplan.core.masq.value import MasqObserved, MasqRule, Masquerade

# Backend name -> the module whose DIALECT speaks it.
DIALECTS = {
    "iptables": "kindplan.core.masq.iptables",
    "nftables": "kindplan.core.masq.nftables",
}


class MasqWords(NamedTuple):
    """How trace names the backend's objects (iptables: its chain and POSTROUTING's jump)."""

    holder: str  # what holds the rules: "KIND-MASQ-AGENT chain"
    hook: str  # what sends traffic into it: "POSTROUTING jump to KIND-MASQ-AGENT"
    path: str  # where a decision is taken: "POSTROUTING (destination not LOCAL)"
    rules: str  # whose rules matched or not: "KIND-MASQ-AGENT"


# For mypy alone: a Protocol class costs its typing machinery at import, and every command that
# reads a plan or a journal imports this module (a dialect says `DIALECT: MasqDialect`).
if TYPE_CHECKING:

    class MasqRemove(Protocol):
        """What a dialect reads of a RemoveMasquerade (core/changes.py), named here so that
        this package never imports the change types, which import it."""

        @property
        def version(self) -> int: ...
        @property
        def old(self) -> Masquerade: ...
        @property
        def hooks(self) -> int: ...
        @property
        def variant(self) -> str | None: ...

    class MasqWrite(Protocol):
        """What a dialect reads of a WriteMasquerade, as MasqRemove."""

        @property
        def version(self) -> int: ...
        @property
        def masq(self) -> Masquerade | None: ...
        @property
        def old(self) -> Masquerade | None: ...
        @property
        def hooks(self) -> int: ...
        @property
        def want_hooks(self) -> int: ...
        @property
        def hooks_at(self) -> tuple[int, ...]: ...
        @property
        def want_at(self) -> tuple[int, ...]: ...
        @property
        def variant(self) -> str | None: ...

    class MasqDialect(Protocol):
        """One backend's text for the masquerade value, both ways."""

        @property
        def name(self) -> str: ...

        @property
        def variants(self) -> frozenset[str]:
            """The variants a change may name (iptables: "nft", "legacy", "" the system's own)."""
            ...

        @property
        def words(self) -> MasqWords: ...

        def read(self, version: int, saved: str, variant: str) -> MasqObserved:
            """What the backend's dump (`saved`) holds of kindplan's masquerade."""
            ...

        def rule_text(self, rule: MasqRule) -> str:
            """One rule as the backend shows it (the plan's detail lines, show, trace)."""
            ...

        def held(self, masq: Masquerade) -> Masquerade:
            """`masq` as the backend holds it once written, so that what is read back compares
            equal (iptables: as it is; nftables: the exemptions merged as its set merges them)."""
            ...

        def render_file(self, node: str, masq: Masquerade) -> tuple[str, str]:
            """(file name, content) of `kindplan render`: the value as the backend's tool takes
            it."""
            ...

        def write_payload(self, change: MasqWrite) -> str:
            """The one-commit payload that makes `change` on the backend."""
            ...

        def remove_payload(self, change: MasqRemove) -> str:
            """The one-commit payload that takes kindplan's masquerade and its hooks away."""
            ...

        def describe_write(self, change: MasqWrite) -> str:
            """The plan's line for `change`: what of the backend's it writes."""
            ...

        def describe_remove(self, change: MasqRemove) -> str: ...


@cache
def dialect(backend: str) -> MasqDialect:
    """The dialect of `backend`; ValueError if kindplan has none of that name."""
    module = DIALECTS.get(backend)
    if module is None:
        raise ValueError(f"unknown masquerade backend {backend!r}")
    found: MasqDialect = importlib.import_module(module).DIALECT
    return found
