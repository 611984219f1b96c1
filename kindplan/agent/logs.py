"""The reconcile loop's log: one line per event, for people (text) or for machines (JSON lines)."""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any, TextIO

from kindplan.errors import one_line


class Log:
    """Writes `time level message key=value...` lines, or one JSON object per line."""

    def __init__(self, fmt: str = "text", stream: TextIO | None = None) -> None:
        self.json = fmt == "json"
        self.stream = stream if stream is not None else sys.stderr
        self._lock = threading.Lock()  # a source's threads (the API watches) log too

    def __call__(self, level: str, msg: str, **fields: Any) -> None:
        now = time.time()
        stamp = (
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
        )
        if self.json:
            line = json.dumps({"time": stamp, "level": level, "msg": msg, **fields})
        else:
            extra = " ".join(f"{k}={_text(v)}" for k, v in fields.items())
            line = one_line(f"{stamp} {level} {msg}" + (f" {extra}" if extra else ""))
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()

    def info(self, msg: str, **fields: Any) -> None:
        self("info", msg, **fields)

    def warning(self, msg: str, **fields: Any) -> None:
        self("warning", msg, **fields)

    def error(self, msg: str, **fields: Any) -> None:
        self("error", msg, **fields)


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return ",".join(f"{k}:{v}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return str(value)
