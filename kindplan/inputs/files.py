"""Snapshots in files: a file or stdin read once, a folder's files taken together as one
document, and FileSource, a file or folder the reconcile loop watches (with inotify.py).

Every source ends in the same parse and checks (kinds.parse_snapshot). For the loop, FileSource
also says when it may have changed (a descriptor to wait on) and keeps a digest of the last bytes
it parsed, so a round whose input did not change costs a read, not a parse.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kindplan.core.document import MAX_INPUT_BYTES  # a constant: its parser is imported to parse
from kindplan.errors import InvalidInputError, Problem, SourceError

if TYPE_CHECKING:
    from kindplan.core.snapshot import Loaded

SNAPSHOT_SUFFIXES = (".json", ".yaml", ".yml")


def read_source(path: str) -> tuple[bytes, str]:
    """The bytes of `path` ('-' is stdin, a directory is combined) and its name for messages."""
    source = "<stdin>" if path == "-" else path
    try:
        if path == "-":
            return sys.stdin.buffer.read(MAX_INPUT_BYTES + 1), source
        return _read_path(path), source
    except OSError as e:
        raise InvalidInputError.one(source, f"cannot read: {e.strerror or e}") from e


def _read_path(path: str) -> bytes:
    if os.path.isdir(path):
        return combine_directory(path)
    return _read_file(path)


def _read_file(path: str) -> bytes:
    """A regular file's bytes, up to one past the limit. Opened without waiting and checked
    before it is read: a FIFO swapped in at a watched path would hold the loop in open() or
    read() for good, where not even SIGTERM reaches it (stdin is `-`)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a FIFO" if stat.S_ISFIFO(mode) else "not a file or folder"
            raise OSError(errno.EINVAL, f"not a regular file ({kind}); for a pipe, use - (stdin)")
        return f.read(MAX_INPUT_BYTES + 1)


def load_snapshot(path: str, *, pod_subnets: Sequence[str] = ()) -> Loaded:
    """Read and parse a snapshot or node list from a file, or from stdin when `path` is '-'."""
    from kindplan.inputs.kinds import parse_snapshot

    data, source = read_source(path)
    return parse_snapshot(data, source=source, pod_subnets=pod_subnets)


def snapshot_files(directory: str) -> list[str]:
    """The snapshot files of a directory in name order; dot names (a ConfigMap's ..data) skipped."""
    return sorted(
        name
        for name in os.listdir(directory)
        if not name.startswith(".")
        and name.endswith(SNAPSHOT_SUFFIXES)
        and os.path.isfile(os.path.join(directory, name))
    )


def combine_directory(directory: str) -> bytes:
    """A directory as one document: its only file, or its lists and objects (Nodes, Namespaces,
    Pods, NetworkPolicies) as one List.

    That covers a ConfigMap holding a snapshot, and a folder of `kubectl get node NAME -o yaml`.
    """
    names = snapshot_files(directory)
    if not names:
        raise InvalidInputError.one(
            directory, f"no snapshot file ({', '.join(SNAPSHOT_SUFFIXES)}) in the directory"
        )
    if len(names) == 1:
        return _read_file(os.path.join(directory, names[0]))
    from kindplan.core.document import parse_document
    from kindplan.core.snapshot import SNAPSHOT_KIND
    from kindplan.inputs.kinds import ITEMS, objects_of

    items: list[Any] = []
    problems: list[Problem] = []
    total = 0
    for name in names:
        path = os.path.join(directory, name)
        data = _read_file(path)
        total += len(data)
        if total > MAX_INPUT_BYTES:
            raise InvalidInputError.one(directory, "the files together are over the size limit")
        doc = parse_document(data, path)
        objects = objects_of(doc)
        if objects is not None:
            items.extend(objects)
        else:
            kind = doc.get("kind") if isinstance(doc, dict) else None
            what = SNAPSHOT_KIND if kind == SNAPSHOT_KIND else f"kind {kind!r}"
            problems.append(
                Problem(
                    path,
                    f"{what}: with several files, each must be a Kubernetes list or "
                    f"object ({', '.join(ITEMS)})",
                )
            )
    if problems:
        raise InvalidInputError(problems)
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items}).encode()


class FileSource:
    """A snapshot file or directory, watched with inotify (and re-read every round regardless).

    The watch is on the folder that holds the file (or on the directory): a file behind a
    symlink into another folder is still re-read every round, only not at once.
    """

    def __init__(
        self, path: str, pod_subnets: Sequence[str] = (), log: Callable[[str], None] | None = None
    ) -> None:
        self.name = path
        self._path = path
        self._pod_subnets = tuple(pod_subnets)
        self._is_dir = os.path.isdir(path)
        directory = path if self._is_dir else str(Path(path).parent)
        self._watched_name = "" if self._is_dir else Path(path).name
        from kindplan.inputs.inotify import (
            DirectoryWatch,  # the loop's only: one-shot commands skip it
        )

        self._watch: DirectoryWatch | None = None
        try:
            self._watch = DirectoryWatch(directory)
        except OSError as e:  # e.g. fs.inotify.max_user_instances reached: polling still works
            if log is not None:
                log(f"{path}: no inotify ({e.strerror or e}); changes are seen every round only")
        self._last: tuple[bytes, Loaded] | None = None

    def fileno(self) -> int | None:
        return self._watch.fd if self._watch is not None else None

    def poll(self) -> bool:
        if self._watch is None:
            return False
        names = self._watch.names()
        if self._is_dir or "" in names:
            return bool(names)
        # A ConfigMap updates its files by swapping the ..data symlink in the same directory.
        return self._watched_name in names or any(n.startswith("..") for n in names)

    def read(self) -> Loaded:
        import hashlib

        from kindplan.inputs.kinds import parse_snapshot

        if self._watch is not None:
            self._watch.rearm()  # the folder may be back (or new) since the watch was lost
        try:
            data = _read_path(self._path)
        except OSError as e:  # not the snapshot's fault: the loop counts it as a source error
            raise SourceError(f"{self._path}: cannot read: {e.strerror or e}") from e
        source = self._path
        digest = hashlib.sha256(data).digest()
        if self._last is not None and self._last[0] == digest:
            return self._last[1]
        loaded = parse_snapshot(data, source=source, pod_subnets=self._pod_subnets)
        self._last = (digest, loaded)
        return loaded

    def reload(self) -> None:
        self._last = None

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
