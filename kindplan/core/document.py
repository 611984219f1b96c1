"""Bytes to a JSON-like document: strict UTF-8, JSON or YAML, duplicate keys refused.

Pure: takes bytes, returns plain dicts, lists and scalars, or raises InvalidInputError.
"""

from __future__ import annotations

import json
from typing import Any

from kindplan.errors import InvalidInputError

MAX_INPUT_BYTES = 64 * 1024 * 1024  # a 5,000-node dual-stack kubectl dump is about 30 MiB


def parse_document(data: bytes, source: str) -> Any:
    """Decode `data` (JSON or YAML) into plain Python values; `source` names it in messages."""
    if len(data) > MAX_INPUT_BYTES:
        raise InvalidInputError.one(source, f"input is larger than {MAX_INPUT_BYTES >> 20} MiB")
    nul = data.find(b"\x00")
    if nul >= 0:
        raise InvalidInputError.one(
            source, f"binary input (NUL byte at offset {nul}); expected JSON or YAML"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InvalidInputError.one(
            source, f"not UTF-8 text (invalid byte at offset {e.start})"
        ) from e
    if not text.strip():
        raise InvalidInputError.one(source, "empty input")
    try:
        if text.lstrip()[0] in "{[":
            return _parse_json(text, source)
        from kindplan.core.yamldoc import parse_yaml  # PyYAML only for YAML input (start-up time)

        return parse_yaml(text, source)
    except RecursionError as e:
        raise InvalidInputError.one(source, "input is nested too deeply") from e


def _parse_json(text: str, source: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_refuse_duplicate_keys, parse_constant=_no_nan)
    except json.JSONDecodeError as e:
        raise InvalidInputError.one(
            f"{source}:{e.lineno}:{e.colno}", f"invalid JSON: {e.msg}"
        ) from e
    except _NotJSONError as e:
        raise InvalidInputError.one(source, str(e)) from e
    except ValueError as e:  # an integer of more than 4,300 digits, say
        raise InvalidInputError.one(source, f"invalid JSON: {str(e).split(';')[0]}") from e


class _NotJSONError(ValueError):
    """What Python's json module accepts but JSON does not (or a snapshot must not have)."""


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _NotJSONError(f"duplicate key {key!r} in one object")
        result[key] = value
    return result


def _no_nan(name: str) -> Any:
    raise _NotJSONError(f"invalid JSON: {name} is not a JSON number")
