"""A way back: every apply records how to undo what it changed, as a small generation journal.

Each generation holds the undo of every change of one apply (routes, veth addresses, chain rules,
conflist bytes, sysctls), written before the first change and rewritten with only what was
applied once the apply ends: a killed apply still leaves a generation that `rollback` can use,
and undoing a change that never happened is skipped because its effect is already there.
The journal lives under --state-dir, one file per target (the host or a --netns), written
atomically, and keeps the last MAX_GENERATIONS generations.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from json.encoder import encode_basestring_ascii as _json_str
from pathlib import Path
from typing import Any

from kindplan.errors import RuntimeFailure
from kindplan.files import write_atomic
from kindplan.model import (
    ROUTE_KINDS,
    UNICAST,
    AddAddress,
    Address,
    AddRoute,
    Change,
    DelAddress,
    DeleteConflist,
    DelRoute,
    NextHop,
    RemoveChain,
    ReplaceRoute,
    Route,
    RouteSpecial,
    SetSysctl,
    WriteChain,
    WriteConflist,
    format_ip,
    format_net,
    parse_cidr,
    parse_ip,
)
from kindplan.statedir import target_dir

MAX_GENERATIONS = 10
# Undo as a teardown: the conflist kindplan created goes first (kubelet stops seeing a ready
# network), then routes before addresses (removing a veth's last IPv4 address makes the kernel
# drop that veth's routes), sysctls and a restored conflist last.
_RANK = {
    DeleteConflist: 0,
    AddAddress: 1,
    AddRoute: 2,
    ReplaceRoute: 2,
    WriteChain: 3,
    RemoveChain: 3,
    DelRoute: 4,
    DelAddress: 5,
    SetSysctl: 6,
    WriteConflist: 7,
}


@dataclass(frozen=True)
class Generation:
    number: int
    time: str
    node: str
    families: tuple[int, ...]
    conflist_path: str
    undo: tuple[Change, ...]
    complete: bool  # False: the apply that made it did not finish (it was killed, say)


def undo_of(change: Change) -> Change | None:
    """The change that puts back what `change` replaces."""
    match change:
        case SetSysctl(name, value, old):
            return SetSysctl(name, old, value) if old is not None else None
        case AddAddress(address):
            return DelAddress(address)
        case DelAddress(address):
            return AddAddress(address)
        case AddRoute(route):
            return DelRoute(route)
        case ReplaceRoute(route, old):
            return ReplaceRoute(old, route)
        case DelRoute(route):
            return AddRoute(route)
        case WriteChain(version, rules, old_rules, jumps, want_jumps, backend):
            if old_rules is None and rules is not None:
                return RemoveChain(version, rules, want_jumps, backend)
            if rules is None:  # only the jumps changed; old_rules just says what the chain held
                return WriteChain(version, None, old_rules, want_jumps, jumps, backend)
            return WriteChain(version, old_rules, rules, want_jumps, jumps, backend)
        case RemoveChain(version, old_rules, jumps, backend):
            return WriteChain(version, old_rules, None, 0, jumps, backend)
        case WriteConflist(path, content, old):
            return (
                DeleteConflist(path, content) if old is None else WriteConflist(path, old, content)
            )
        case DeleteConflist(path, old):
            return WriteConflist(path, old, None)
    raise TypeError(change)


def undo_all(changes: list[Change] | tuple[Change, ...]) -> tuple[Change, ...]:
    undone = [u for u in map(undo_of, changes) if u is not None]
    return tuple(sorted(undone, key=lambda c: _RANK[type(c)]))


class Journal:
    """The generations of one target, oldest first, in <state-dir>/<target>/journal.json."""

    def __init__(self, state_dir: Path, netns: str | None) -> None:
        self.path = target_dir(state_dir, netns) / "journal.json"
        # the generation begin() recorded, the changes it was for, and its encoding (the header
        # and the JSON of its undo list, which finish() reuses rather than encodes again)
        self._begun: tuple[Generation, tuple[Change, ...], dict[str, Any], str] | None = None
        self._saved: list[tuple[int, str]] | None = None  # (number, line) begin() wrote

    def load(self) -> list[Generation]:
        try:
            return [_decode_generation(g) for g in self._load_raw()]
        except (ValueError, KeyError, TypeError) as e:
            raise RuntimeFailure(f"{self.path}: unreadable journal ({e}); move it aside") from e

    def _load_raw(self) -> list[dict[str, Any]]:
        """The generations as stored: an apply adds one without decoding the others."""
        try:
            data = json.loads(self.path.read_text("utf-8"))
            generations = data["generations"]
            if not isinstance(generations, list) or not all(
                isinstance(g, dict) and isinstance(g.get("number"), int) for g in generations
            ):
                raise TypeError("generations is not a list of numbered objects")
            return generations
        except FileNotFoundError:
            return []
        except (ValueError, KeyError, TypeError) as e:
            raise RuntimeFailure(f"{self.path}: unreadable journal ({e}); move it aside") from e

    def _save(self, lines: list[tuple[int, str]]) -> None:
        """Write the generations, each given as (number, its line from _line or _join)."""
        text = ",\n".join(line for _, line in lines)
        write_atomic(self.path, '{"generations": [\n' + text + "\n]}\n", mode=0o600)

    def _saved_lines(self) -> list[tuple[int, str]]:
        return [(g["number"], _line(g)) for g in self._load_raw()]

    def begin(
        self, node: str, families: tuple[int, ...], conflist_path: str, changes: tuple[Change, ...]
    ) -> Generation:
        """Record the undo of every planned change before the first one is made."""
        generations = self._load_raw()
        number = generations[-1]["number"] + 1 if generations else 1
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        generation = Generation(
            number, stamp, node, families, conflist_path, undo_all(changes), complete=False
        )
        header, undo = _encode_header(generation), _encode_undo(generation.undo)
        self._begun = (generation, changes, header, undo)
        self._saved = [
            *((g["number"], _line(g)) for g in generations),
            (number, _join(header, undo)),
        ]
        self._save(self._saved)
        return generation

    def finish(self, generation: Generation, applied: list[Change]) -> None:
        """Keep only the undo of what was applied; drop the generation if nothing was."""
        # Under the node lock nobody else writes the journal: what begin saved is what is there.
        saved = self._saved if self._saved is not None else self._saved_lines()
        lines = [(n, line) for n, line in saved if n != generation.number]
        begun = self._begun
        if begun is not None and begun[0] is generation and list(begun[1]) == applied:
            # all of it went in, in order: the undo begin() encoded, now complete
            lines.append((generation.number, _join({**begun[2], "complete": True}, begun[3])))
        elif applied:
            done = replace(generation, undo=undo_all(applied), complete=True)
            lines.append((done.number, _join(_encode_header(done), _encode_undo(done.undo))))
        self._save(lines[-MAX_GENERATIONS:])  # bounded once the apply has ended

    def drop_last(self) -> None:
        self._save(self._saved_lines()[:-1])


# -- JSON ------------------------------------------------------------------------------------


# One compact line per generation: json's C encoder (an indent would mean its Python one, seconds
# for 5,000 routes), and still a file a person can page through.
def _line(generation: dict[str, Any]) -> str:
    return json.dumps(generation, separators=(",", ":"))


def _join(header: dict[str, Any], undo: str) -> str:
    """The line of a generation from its header and its encoded undo list (the same as _line of
    the whole: "undo" is the last key)."""
    return _line(header)[:-1] + ',"undo":' + undo + "}"


def _encode_header(g: Generation) -> dict[str, Any]:
    return {
        "number": g.number,
        "time": g.time,
        "node": g.node,
        "families": list(g.families),
        "conflistPath": g.conflist_path,
        "complete": g.complete,
    }


def _encode_undo(undo: tuple[Change, ...]) -> str:
    """json.dumps([_encode(c) for c in undo]) with _line's separators, the routes written
    directly: 10,000 of them went through a dict each and json's walk of it (~0.1 s)."""
    parts = []
    for change in undo:
        if isinstance(change, AddRoute | DelRoute):
            kind = "AddRoute" if isinstance(change, AddRoute) else "DelRoute"
            parts.append(f'{{"type":"{kind}","route":{_route_json(change.route)}}}')
        else:
            parts.append(json.dumps(_encode(change), separators=(",", ":")))
    return "[" + ",".join(parts) + "]"


def _route_json(r: Route) -> str:
    """_route(r) exactly as json.dumps writes it (strings through json's own C escaper)."""
    if r.special is not None:  # (the routes kindplan writes are journaled without its fields)
        return json.dumps(_route(r), separators=(",", ":"))
    gateway = _json_str(format_ip(r.gateway)) if r.gateway else "null"
    return (
        f'{{"dst":{_json_str(format_net(r.dst))},"ifname":{_json_str(r.ifname)},'
        f'"gateway":{gateway},"scope":{_json_str(r.scope)},"metric":{int(r.metric)},'
        f'"proto":{int(r.proto)},"table":{int(r.table)},"peer":{_json_str(r.peer)}}}'
    )


def _decode_generation(d: dict[str, Any]) -> Generation:
    return Generation(
        int(d["number"]),
        str(d["time"]),
        str(d["node"]),
        tuple(int(v) for v in d["families"]),
        str(d["conflistPath"]),
        tuple(_decode(c) for c in d["undo"]),
        bool(d["complete"]),
    )


def _route(r: Route) -> dict[str, Any]:
    d: dict[str, Any] = {
        "dst": format_net(r.dst),  # inet_ntop: str() of 10,000 IPv6 networks takes 0.1 s
        "ifname": r.ifname,
        "gateway": format_ip(r.gateway) if r.gateway else None,
        "scope": r.scope,
        "metric": r.metric,
        "proto": r.proto,
        "table": r.table,
        "peer": r.peer,
    }
    if r.special is not None:  # a route observed, to be restored exactly as it was
        d |= {
            "kind": r.kind,
            "tos": r.tos,
            "nexthops": [
                [format_ip(h.gateway) if h.gateway else None, h.ifname, h.weight]
                for h in r.nexthops
            ],
            "nhId": r.nh_id,
        }
    return d


def _unroute(d: dict[str, Any]) -> Route:
    kind = str(d.get("kind", UNICAST))
    if kind not in ROUTE_KINDS:
        raise ValueError(f"unknown route kind {kind!r}")
    return Route(
        parse_cidr(d["dst"]),
        str(d["ifname"]),
        parse_ip(d["gateway"]) if d["gateway"] else None,
        str(d["scope"]),
        int(d["metric"]),
        int(d["proto"]),
        int(d["table"]),
        str(d["peer"]),
        RouteSpecial(
            kind,
            int(d.get("tos", 0)),
            tuple(
                NextHop(parse_ip(gateway) if gateway else None, str(ifname), int(weight))
                for gateway, ifname, weight in d.get("nexthops", ())
            ),
            int(d.get("nhId", 0)),
        ),
    )


def _rules(rules: tuple[str, ...] | None) -> list[str] | None:
    return list(rules) if rules is not None else None


def _unrules(rules: list[str] | None) -> tuple[str, ...] | None:
    return tuple(str(r) for r in rules) if rules is not None else None


def _encode(change: Change) -> dict[str, Any]:
    kind = type(change).__name__
    match change:
        case SetSysctl(name, value, old):
            return {"type": kind, "name": name, "value": value, "old": old}
        case AddAddress(a) | DelAddress(a):
            return {"type": kind, "ifname": a.ifname, "address": str(a.address), "pod": a.pod}
        case AddRoute(route) | DelRoute(route):
            return {"type": kind, "route": _route(route)}
        case ReplaceRoute(route, old):
            return {"type": kind, "route": _route(route), "old": _route(old)}
        case WriteChain(version, rules, old_rules, jumps, want_jumps, backend):
            return {
                "type": kind,
                "version": version,
                "rules": _rules(rules),
                "oldRules": _rules(old_rules),
                "jumps": jumps,
                "wantJumps": want_jumps,
                "backend": backend,
            }
        case RemoveChain(version, old_rules, jumps, backend):
            return {
                "type": kind,
                "version": version,
                "oldRules": list(old_rules),
                "jumps": jumps,
                "backend": backend,
            }
        case WriteConflist(path, content, old):
            return {"type": kind, "path": path, "content": content, "old": old}
        case DeleteConflist(path, old):
            return {"type": kind, "path": path, "old": old}
    raise TypeError(change)


def _decode(d: dict[str, Any]) -> Change:
    kind = d["type"]
    if kind == "SetSysctl":
        return SetSysctl(str(d["name"]), str(d["value"]), d["old"])
    if kind in ("AddAddress", "DelAddress"):
        address = Address(str(d["ifname"]), parse_ip(d["address"]), str(d["pod"]))
        return AddAddress(address) if kind == "AddAddress" else DelAddress(address)
    if kind in ("AddRoute", "DelRoute"):
        route = _unroute(d["route"])
        return AddRoute(route) if kind == "AddRoute" else DelRoute(route)
    if kind == "ReplaceRoute":
        return ReplaceRoute(_unroute(d["route"]), _unroute(d["old"]))
    if kind == "WriteChain":
        return WriteChain(
            int(d["version"]),
            _unrules(d["rules"]),
            _unrules(d["oldRules"]),
            int(d["jumps"]),
            int(d["wantJumps"]),
            _backend(d),
        )
    if kind == "RemoveChain":
        return RemoveChain(int(d["version"]), tuple(d["oldRules"]), int(d["jumps"]), _backend(d))
    if kind == "WriteConflist":
        return WriteConflist(str(d["path"]), str(d["content"]), d["old"])
    if kind == "DeleteConflist":
        return DeleteConflist(str(d["path"]), str(d["old"]))
    raise ValueError(f"unknown change type {kind!r}")


def _backend(d: dict[str, Any]) -> str | None:
    """The iptables backend a chain change went to (journals before it was recorded: None,
    the backend in use)."""
    backend = d.get("backend")
    if backend not in (None, "", "legacy", "nft"):
        raise ValueError(f"unknown iptables backend {backend!r}")
    return None if backend is None else str(backend)
