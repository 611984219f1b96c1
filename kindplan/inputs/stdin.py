"""Snapshots streamed on stdin (`apply --watch -`): each document ended by a line `---`.

A thread of its own reads them as they come, so that the loop waits on a descriptor, never on a
read; the loop parses only the latest document, and only when its bytes changed.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Sequence
from typing import Any

from kindplan.core.document import MAX_INPUT_BYTES
from kindplan.core.snapshot import Loaded
from kindplan.errors import InvalidInputError, SourceError
from kindplan.inputs.kinds import parse_snapshot

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
