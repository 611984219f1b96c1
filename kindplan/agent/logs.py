"""The reconcile loop's log: one line per event, for people (text) or for machines (JSON lines).

The standard library's logging writes it (a handler's lock serialises the API watches' threads);
what is ours is the line: `time level message key=value...`, or one JSON object.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

from kindplan.errors import one_line


class Log:
    """Writes `time level message key=value...` lines, or one JSON object per line."""

    def __init__(self, fmt: str = "text", stream: TextIO | None = None) -> None:
        self.json = fmt == "json"
        self.stream = stream if stream is not None else sys.stderr
        handler = logging.StreamHandler(self.stream)
        handler.setFormatter(_LineFormatter(self.json))
        # A logger of its own, outside logging's registry: each Log writes to its own stream only.
        self._logger = logging.Logger("kindplan")
        self._logger.addHandler(handler)

    def __call__(self, level: str, msg: str, **fields: Any) -> None:
        self._logger.log(logging.getLevelName(level.upper()), msg, extra={"fields": fields})

    def info(self, msg: str, **fields: Any) -> None:
        self("info", msg, **fields)

    def warning(self, msg: str, **fields: Any) -> None:
        self("warning", msg, **fields)

    def error(self, msg: str, **fields: Any) -> None:
        self("error", msg, **fields)


class _LineFormatter(logging.Formatter):
    def __init__(self, as_json: bool) -> None:
        super().__init__()
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        stamp += f".{int(record.msecs):03d}Z"
        level, msg = record.levelname.lower(), record.getMessage()
        fields: dict[str, Any] = getattr(record, "fields", {})
        if self.as_json:
            return json.dumps({"time": stamp, "level": level, "msg": msg, **fields})
        extra = " ".join(f"{k}={_text(v)}" for k, v in fields.items())
        return one_line(f"{stamp} {level} {msg}" + (f" {extra}" if extra else ""))


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return ",".join(f"{k}:{v}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return str(value)
