"""Where snapshots come from: a file or stdin. The only place that reads them."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from kindplan.document import MAX_INPUT_BYTES
from kindplan.errors import InvalidInputError
from kindplan.snapshot import Loaded, parse_snapshot


def read_source(path: str) -> tuple[bytes, str]:
    """The bytes of `path` ('-' is stdin) and the name to use for it in messages."""
    source = "<stdin>" if path == "-" else path
    try:
        if path == "-":
            return sys.stdin.buffer.read(MAX_INPUT_BYTES + 1), source
        with open(path, "rb") as f:
            return f.read(MAX_INPUT_BYTES + 1), source
    except OSError as e:
        raise InvalidInputError.one(source, f"cannot read: {e.strerror or e}") from e


def load_snapshot(path: str, *, pod_subnets: Sequence[str] = ()) -> Loaded:
    """Read and parse a snapshot or node list from a file, or from stdin when `path` is '-'."""
    data, source = read_source(path)
    return parse_snapshot(data, source=source, pod_subnets=pod_subnets)
