"""Where snapshots come from: a file, a directory, stdin (and the Kubernetes API, in kube.py).

Every source ends in the same parse and checks (snapshot.parse_snapshot / check_document). For the
reconcile loop a source also says when it may have changed (a file descriptor to wait on) and keeps
the last bytes it parsed, so a round whose input did not change costs a read, not a parse.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from kindplan.core.document import MAX_INPUT_BYTES, parse_document
from kindplan.core.nodelist import NODE_LIST_KINDS
from kindplan.core.snapshot import SNAPSHOT_KIND, Loaded, parse_snapshot
from kindplan.errors import InvalidInputError, Problem, SourceError

SNAPSHOT_SUFFIXES = (".json", ".yaml", ".yml")


class Source(Protocol):
    """What the reconcile loop needs from a source of snapshots."""

    name: str

    def fileno(self) -> int | None:
        """A descriptor that turns readable when the source may have changed (None: none)."""

    def poll(self) -> bool:
        """Consume change notifications; True if the source may have changed since the last read."""

    def read(self) -> Loaded:
        """The snapshot now: InvalidInputError if it is wrong, SourceError if it cannot be read."""

    def reload(self) -> None:
        """Forget what was read (SIGHUP): the next read starts from scratch."""

    def close(self) -> None: ...


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
    with open(path, "rb") as f:
        return f.read(MAX_INPUT_BYTES + 1)


def load_snapshot(path: str, *, pod_subnets: Sequence[str] = ()) -> Loaded:
    """Read and parse a snapshot or node list from a file, or from stdin when `path` is '-'."""
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
    """A directory as one document: its only file, or its node lists and Nodes as one List.

    That covers a ConfigMap holding a snapshot, and a folder of `kubectl get node NAME -o yaml`.
    """
    names = snapshot_files(directory)
    if not names:
        raise InvalidInputError.one(
            directory, f"no snapshot file ({', '.join(SNAPSHOT_SUFFIXES)}) in the directory"
        )
    if len(names) == 1:
        with open(os.path.join(directory, names[0]), "rb") as f:
            return f.read(MAX_INPUT_BYTES + 1)
    items: list[Any] = []
    problems: list[Problem] = []
    total = 0
    for name in names:
        path = os.path.join(directory, name)
        with open(path, "rb") as f:
            data = f.read(MAX_INPUT_BYTES + 1)
        total += len(data)
        if total > MAX_INPUT_BYTES:
            raise InvalidInputError.one(directory, "the files together are over the size limit")
        doc = parse_document(data, path)
        kind = doc.get("kind") if isinstance(doc, dict) else None
        if kind == "Node":
            items.append(doc)
        elif kind in NODE_LIST_KINDS and isinstance(doc.get("items"), list):
            items.extend(doc["items"])
        else:
            what = SNAPSHOT_KIND if kind == SNAPSHOT_KIND else f"kind {kind!r}"
            problems.append(
                Problem(path, f"{what}: with several files, each must be a Node or a node list")
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
        from kindplan.agent.inotify import (
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


_SEPARATOR = re.compile(rb"^---\s*$")
_READ_BYTES = 1 << 20


class StdinSource:
    """Snapshots streamed on stdin, each ended by a line `---` (or by the end of the input)."""

    def __init__(self, pod_subnets: Sequence[str] = (), stream: Any = None) -> None:
        self.name = "<stdin>"
        import threading

        self._pod_subnets = tuple(pod_subnets)
        # A reader of its own on a copy of fd 0: the interpreter closes sys.stdin at exit, and
        # doing so while this thread waits in sys.stdin's readline aborts the process (SIGABRT,
        # "could not acquire lock ... at interpreter shutdown") on a SIGTERM.
        if stream is None:
            try:
                stream = open(os.dup(0), "rb")  # noqa: SIM115 (read until the process ends)
            except OSError as e:  # the process was started with fd 0 closed
                raise SourceError(f"<stdin>: cannot read: {e.strerror or e}") from e
        self._stream = stream
        self._lock = threading.Lock()
        self._latest: bytes | InvalidInputError | None = None  # the last document, or its refusal
        self._parsed: tuple[bytes, Loaded] | None = None
        self.closed = False
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        threading.Thread(target=self._pump, name="stdin", daemon=True).start()

    def _pump(self) -> None:
        document: list[bytes] = []
        size = 0
        line_start = True  # a line longer than a read continues in the next one
        # Read in bounded pieces: a document without a newline must not fill the memory.
        for chunk in iter(lambda: self._stream.readline(_READ_BYTES), b""):
            if line_start and _SEPARATOR.match(chunk):
                self._publish(b"".join(document), size)
                document, size = [], 0
                continue
            line_start = chunk.endswith(b"\n")
            size += len(chunk)
            if size <= MAX_INPUT_BYTES:  # beyond: dropped, and the document refused whole
                document.append(chunk)
        if any(chunk.strip() for chunk in document) or size > MAX_INPUT_BYTES:
            self._publish(b"".join(document), size)
        self.closed = True
        self._wake()

    def _publish(self, data: bytes, size: int) -> None:
        latest: bytes | InvalidInputError
        if size > MAX_INPUT_BYTES:
            # Never its prefix: cut anywhere, a document can still parse, minus nodes and pods.
            latest = InvalidInputError.one(
                "<stdin>",
                f"document of {size} bytes is over the {MAX_INPUT_BYTES >> 20} MiB limit; "
                "refused whole",
            )
        elif not data.strip():
            return
        else:
            latest = data
        with self._lock:
            self._latest = latest
        self._wake()

    def _wake(self) -> None:
        # A full pipe means a wake-up is pending already; a closed one, that the loop is done.
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"\0")

    def fileno(self) -> int | None:
        return self._wake_r

    def poll(self) -> bool:
        try:
            return bool(os.read(self._wake_r, 4096))
        except BlockingIOError:
            return False

    def read(self) -> Loaded:
        with self._lock:
            data = self._latest
        if data is None:
            raise SourceError(
                "<stdin>: no snapshot yet" + (" (input closed)" if self.closed else "")
            )
        if isinstance(data, InvalidInputError):
            raise InvalidInputError(data.problems)
        if self._parsed is not None and self._parsed[0] == data:
            return self._parsed[1]
        loaded = parse_snapshot(data, source="<stdin>", pod_subnets=self._pod_subnets)
        self._parsed = (data, loaded)
        return loaded

    def reload(self) -> None:
        self._parsed = None

    def close(self) -> None:
        os.close(self._wake_r)
        os.close(self._wake_w)
