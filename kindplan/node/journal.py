"""A way back: every apply records how to undo what it changed, as a small generation journal.

Each generation holds the undo of every change of one apply (routes, veth addresses, chain rules,
conflist bytes, sysctls). The undo of each batch of changes is on disk before the batch is sent,
so whatever stops an apply (a kill, Ctrl-C, an error), its generation holds every undo that may
be needed; it is marked complete only when the apply returned normally. Undoing a change that
never happened is skipped, because its effect is already there. The journal lives under
--state-dir, one file per target (the host or a --netns), and keeps the last MAX_GENERATIONS.
"""

from __future__ import annotations

import errno
import json
import os
import posixpath
import re
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from kindplan.core.changes import (
    AddRoute,
    Change,
    DeleteConflist,
    DelRoute,
    ReplaceRoute,
    WriteConflist,
    decode_change,
)
from kindplan.core.routes import route_json
from kindplan.core.schemacheck import compile_schema
from kindplan.errors import RuntimeFailure, one_line
from kindplan.node.files import NotRegularFile, read_regular, write_atomic
from kindplan.node.statedir import target_dir
from kindplan.node.trust import check_existing, ensure_trusted
from kindplan.resources import load_schema

MAX_GENERATIONS = 10
# How every line kindplan writes begins: a last line without its newline (a write cut short) is
# torn only if it begins so; anything else was not written by kindplan, and is named, not cut.
_LINE_STARTS = (b'{"generation":', b'{"undo":', b'{"complete":')
# The file is opened without following a symbolic link, and never waits on a FIFO.
_OPEN = os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK


def _undo_order(change: Change) -> int:
    """Undo as a teardown: by each change type's undo_rank (core/changes.py says why)."""
    return change.undo_rank


@dataclass(frozen=True)
class Generation:
    number: int
    time: str
    node: str
    families: tuple[int, ...]
    conflist_path: str
    undo: tuple[Change, ...]
    complete: bool  # False: the apply that made it did not finish (it was killed, say)
    netns: str | None = None  # the namespace it changed, `dev:inode`; None: a journal before it


def undo_all(changes: Sequence[Change]) -> tuple[Change, ...]:
    """The undo of each of `changes`, in the order of a teardown (each type's undo_rank)."""
    undone = [u for u in (c.undo() for c in changes) if u is not None]
    return tuple(sorted(undone, key=_undo_order))


class Journal:
    """The generations of one target, oldest first, in <state-dir>/<target>/journal.json.

    The file is JSON Lines, only ever appended to while an apply runs: a generation's header
    line, one line with the undo of each batch before the batch is sent, and a "complete" line
    once the apply returned normally. Dropping the newest generation (nothing applied, or rolled
    back) truncates the file where it began; the oldest are cut off in one rewrite once there are
    twice MAX_GENERATIONS, so that an apply never rewrites what it did not write.
    """

    def __init__(self, state_dir: Path, netns: str | None) -> None:
        self.path = target_dir(state_dir, netns) / "journal.json"

    def check(self) -> None:
        """UntrustedPath (one line, with the fix) if another user could write the journal's
        folder or one above it: the journal tells rollback what to write as root."""
        check_existing(self.path.parent)

    def load(self) -> list[Generation]:
        """The newest MAX_GENERATIONS generations, every line of theirs checked against the
        schema (older ones wait in the file to be cut off)."""
        data = self._read()
        spans = _spans(data, self._unusable)
        start = spans[-MAX_GENERATIONS][1] if len(spans) > MAX_GENERATIONS else 0
        generations = []
        first_line = data.count(b"\n", 0, start)
        for number, lines in self._generations(data[start:], first_line):
            try:
                generations.append(_decode_generation(number, lines))
            except (ValueError, KeyError, TypeError, RecursionError) as e:
                raise self._unusable(f"generation {number}: {e}") from e
        return generations

    def last(self) -> Generation | None:
        """The newest generation (the one rollback undoes), only its lines checked: an unusable
        older one stops a rollback when it comes to it, not before."""
        data = self._read()
        spans = _spans(data, self._unusable)
        if not spans:
            return None
        number, offset = spans[-1]
        ((_, lines),) = self._generations(data[offset:], first_line=data.count(b"\n", 0, offset))
        try:
            return _decode_generation(number, lines)
        except (ValueError, KeyError, TypeError, RecursionError) as e:
            raise self._unusable(f"generation {number}: {e}") from e

    def begin(
        self, node: str, families: tuple[int, ...], conflist_path: str, netns: str | None = None
    ) -> Recording:
        """A new generation, written to the file with the undo of its first batch; `netns` is
        the identity of the network namespace it changes (netns.namespace_identity)."""
        data = self._read(convert=True)
        spans = _spans(data, self._unusable)
        if len(spans) >= 2 * MAX_GENERATIONS:  # keep the newest, in one rewrite now and then
            keep = data[spans[-MAX_GENERATIONS + 1][1] :]
            write_atomic(self.path, keep.decode("utf-8"), mode=0o600)
            data, spans = keep, _spans(keep, self._unusable)
        end = len(data)
        if data and not data.endswith(b"\n"):  # a torn last line: its batch was never sent
            end = data.rfind(b"\n") + 1
            _truncate(self.path, end)
        number = spans[-1][0] + 1 if spans else 1
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        header = {
            "generation": number,
            "time": stamp,
            "node": node,
            "families": list(families),
            "conflistPath": conflist_path,
            **({"netns": netns} if netns is not None else {}),
        }
        return Recording(self.path, number, _line(header), end)

    def drop_last(self) -> None:
        """Forget the newest generation (it was rolled back)."""
        spans = _spans(self._read(convert=True), self._unusable)
        if spans:
            _truncate(self.path, spans[-1][1])

    def _read(self, convert: bool = False) -> bytes:
        """The file's bytes as lines (a journal of kindplan 1 is converted, and if `convert`,
        written so: lines are appended to it next)."""
        self.check()
        try:
            data = read_regular(self.path, follow=False)
        except FileNotFoundError:
            return b""
        except OSError as e:
            raise self._unusable(f"cannot read: {e.strerror}") from e
        if data.startswith(b'{"generations"'):
            data = _from_first_format(data, self._unusable)
            if convert:
                write_atomic(self.path, data.decode("utf-8"), mode=0o600)
        return data

    def _generations(
        self, data: bytes, first_line: int = 0
    ) -> list[tuple[int, list[dict[str, Any]]]]:
        """Each generation's number and its records (header first), every line parsed and
        checked against schemas/journal.schema.json."""
        check = _line_check()
        generations: list[tuple[int, list[dict[str, Any]]]] = []
        lines = data.split(b"\n")
        if lines[-1]:  # a torn last line: its batch was never sent
            lines[-1] = b""
        for n, raw in enumerate(lines[:-1], first_line + 1):
            try:
                record = json.loads(raw)
            except (ValueError, RecursionError) as e:
                raise self._unusable(f"line {n}: not JSON ({type(e).__name__})") from None
            if not check(record):
                raise self._unusable(f"line {n}: {_schema_error(record)}")
            if "generation" in record:
                generations.append((record["generation"], [record]))
            elif not generations:
                raise self._unusable(f"line {n}: before the first generation")
            elif "complete" in record and record["complete"] != generations[-1][0]:
                raise self._unusable(f"line {n}: completes another generation")
            else:
                generations[-1][1].append(record)
        return generations

    def _unusable(self, why: str) -> RuntimeFailure:
        return RuntimeFailure(
            f"{self.path}: unusable journal ({one_line(why)}); rollback cannot use it: "
            "move it aside (mv it to another name) to start a new one"
        )


class Recording:
    """One generation being written: the undo of each batch appended before the batch is sent."""

    def __init__(self, path: Path, number: int, header: str, start: int) -> None:
        self.path, self.number = path, number
        self._header: str | None = header  # written with the first batch
        self._start = start  # where the generation begins in the file
        self._fd: int | None = None

    @property
    def written(self) -> bool:
        return self._header is None

    def record(self, changes: Sequence[Change]) -> None:
        """Append the undo of `changes` (about to be made); durable when one is a file."""
        text = "" if self._header is None else self._header + "\n"
        text += '{"undo":' + _encode_undo(undo_all(changes)) + "}\n"
        self._append(text, durable=any(c.on_disk for c in changes))
        self._header = None

    def complete(self) -> None:
        """The apply returned normally: mark the generation complete (if anything was sent)."""
        if self.written:
            self._append(f'{{"complete":{self.number}}}\n', durable=True)

    def drop(self) -> None:
        """Nothing was applied: cut the generation off the file again."""
        self.close()
        if self.written:
            _truncate(self.path, self._start)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _append(self, text: str, durable: bool) -> None:
        # Routes, addresses, sysctls and chains do not outlive a reboot; the conflist does: only
        # its undo (and the end of a generation) waits for the disk, the rest for the page cache,
        # which is what a killed process needs.
        data = text.encode("utf-8")
        try:
            if self._fd is None:
                ensure_trusted(self.path.parent)
                self._fd = _open_regular(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            end = os.fstat(self._fd).st_size
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self._fd, view) :]
                if durable:
                    os.fsync(self._fd)
            except OSError:
                os.ftruncate(self._fd, end)  # no torn line (a full disk, say)
                raise
        except OSError as e:
            raise RuntimeFailure(f"{self.path}: cannot write the journal: {e.strerror}") from e


def _spans(data: bytes, unusable: Callable[[str], RuntimeFailure]) -> list[tuple[int, int]]:
    """(number, offset) of each generation's header line: only the headers are parsed, which
    spares an apply reading 10 generations of 10,000 undos each; load() checks every line."""
    spans: list[tuple[int, int]] = []
    offset = 0
    while (end := data.find(b"\n", offset)) >= 0:  # a torn last line has no end: not counted
        if data.startswith(b'{"generation":', offset):
            try:
                number = json.loads(data[offset:end])["generation"]
            except (ValueError, KeyError, TypeError, RecursionError) as e:
                raise unusable(f"at byte {offset}: {type(e).__name__}") from None
            if type(number) is not int or (spans and number <= spans[-1][0]):
                raise unusable(f"at byte {offset}: generation {number!r} out of order")
            spans.append((number, offset))
        elif not data.startswith((b'{"undo":', b'{"complete":'), offset):
            raise unusable(f"at byte {offset}: not a journal line")
        offset = end + 1
    tail = data[offset:]
    if tail and not any(tail.startswith(s) or s.startswith(tail) for s in _LINE_STARTS):
        raise unusable(f"at byte {offset}: not a journal line (and no newline after it)")
    return spans


def _truncate(path: Path, size: int) -> None:
    try:
        fd = _open_regular(path, os.O_WRONLY)
        try:
            os.ftruncate(fd, size)
        finally:
            os.close(fd)
    except OSError as e:
        raise RuntimeFailure(f"{path}: cannot write the journal: {e.strerror}") from e


def _open_regular(path: Path, flags: int) -> int:
    """A descriptor of the regular file at `path`, never through a symbolic link (OSError)."""
    try:
        fd = os.open(path, flags | _OPEN, 0o600)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise NotRegularFile(e.errno, "not a regular file (a symbolic link)") from e
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotRegularFile(errno.EINVAL, "not a regular file")
    return fd


def _from_first_format(data: bytes, unusable: Callable[[str], RuntimeFailure]) -> bytes:
    """A journal of kindplan 1 ({"generations": [...]}, rewritten whole by every apply) as
    lines."""
    try:
        generations = json.loads(data)["generations"]
        lines = []
        for g in generations:
            header = {
                "generation": g["number"],
                "time": g["time"],
                "node": g["node"],
                "families": g["families"],
                "conflistPath": g["conflistPath"],
            }
            lines += [_line(header), _line({"undo": g["undo"]})]
            if g["complete"]:
                lines.append(_line({"complete": g["number"]}))
    except (ValueError, KeyError, TypeError, RecursionError) as e:
        raise unusable(f"{type(e).__name__}: {e}") from None
    return "".join(line + "\n" for line in lines).encode("utf-8")


@cache
def _line_check() -> Callable[[Any], bool]:
    return compile_schema(load_schema("journal.schema.json"))


def _schema_error(record: Any) -> str:
    """Why a line is not one the schema allows (jsonschema says, for the rare bad line): the
    deepest error, which names the field rather than "not valid under any of the schemas"."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema("journal.schema.json"))
    errors = list(validator.iter_errors(record))
    while any(e.context for e in errors):
        errors = [c for e in errors for c in (e.context or [e])]
    if not errors:
        return "not a journal line"
    error = max(errors, key=lambda e: len(e.absolute_path))
    where = "".join(f"[{p!r}]" for p in error.absolute_path)
    return f"{where or 'the line'}: {error.message[:120]}"


# -- JSON ------------------------------------------------------------------------------------


# One compact line per generation: json's C encoder (an indent would mean its Python one, seconds
# for 5,000 routes), and still a file a person can page through.
def _line(generation: dict[str, Any]) -> str:
    return json.dumps(generation, separators=(",", ":"))


def _encode_undo(undo: tuple[Change, ...]) -> str:
    """The JSON of `undo`'s encode()s, as json.dumps writes them; the deletes of routes that a
    first apply's undo holds by the thousand written out at once (routes.route_json)."""
    return "[" + ",".join([_encode_change(c) for c in undo]) + "]"


def _encode_change(change: Change) -> str:
    if type(change) is DelRoute:
        route = route_json(change.route)
        if route is not None:
            return f'{{"type":"DelRoute","route":{route}}}'
    return json.dumps(change.encode(), separators=(",", ":"))


def _decode_generation(number: int, records: list[dict[str, Any]]) -> Generation:
    header = records[0]
    families = tuple(header["families"])
    if not set(families) <= {4, 6}:
        raise ValueError(f"families {list(families)}: not IP versions 4 and 6")
    conflist = header["conflistPath"]
    if not _conflist_path(conflist):
        raise ValueError(f"conflistPath {conflist!r}: not an absolute path to a .conflist file")
    changes = [decode_change(c) for r in records[1:] if "undo" in r for c in r["undo"]]
    for change in changes:
        _check_change(change, conflist)
    return Generation(
        number,
        header["time"],
        header["node"],
        families,
        header["conflistPath"],
        tuple(sorted(changes, key=_undo_order)),  # stable: batches in order
        any("complete" in r for r in records),
        header.get("netns"),
    )


def _check_change(change: Change, conflist: str) -> None:
    """ValueError for an undo that writes what no apply of this target could have journaled."""
    # A rollback writes or removes only the conflist of the generation's own target.
    if isinstance(change, (WriteConflist, DeleteConflist)) and change.path != conflist:
        raise ValueError(f"a conflist change at {change.path!r}, not at {conflist!r}")
    # A route written back from the kernel's own bytes: those of the very route it names.
    if isinstance(change, (AddRoute, ReplaceRoute)) and change.raw:
        from kindplan.node.netlink_rawroute import check_raw  # only for such a line: see there

        check_raw(change.route, change.raw)


_CONFLIST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.conflist")


def _conflist_path(path: str) -> bool:
    """Is `path` one kindplan writes: absolute, normal (no `..`), printable, and a file name as
    the snapshot schema allows for cni.confFile? A journal is read as untrusted (DESIGN)."""
    return (
        path.startswith("/")
        and path.isprintable()
        and posixpath.normpath(path) == path
        and _CONFLIST_NAME.fullmatch(posixpath.basename(path)) is not None
    )
