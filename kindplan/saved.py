"""Saved plans (plan --out, apply --plan): the plan, the inputs that made it, and a fingerprint of
the node as observed, so that apply can refuse a plan once the node has changed."""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kindplan.errors import InvalidInputError
from kindplan.files import write_atomic
from kindplan.planview import plan_to_json

if TYPE_CHECKING:
    from kindplan.engine import Options, Planned

SAVED_KIND = "kindplan/SavedPlan"


@dataclass(frozen=True)
class SavedPlan:
    fingerprint: str
    options: Options
    netns: str | None
    snapshot: bytes
    source: str
    pod_subnets: list[str]


def save_plan(
    path: Path,
    planned: Planned,
    options: Options,
    netns: str | None,
    snapshot: bytes,
    source: str,
    pod_subnets: list[str],
) -> None:
    document = {
        "kind": SAVED_KIND,
        "fingerprint": planned.fingerprint,
        "inputs": {
            "options": asdict(options),
            "netns": netns,
            "source": source,
            "podSubnets": pod_subnets,
            "snapshot": base64.b64encode(snapshot).decode(),
        },
        "plan": plan_to_json(planned.plan),
    }
    write_atomic(path, json.dumps(document, indent=1) + "\n", mode=0o600)


def load_plan(path: Path) -> SavedPlan:
    """Read a saved plan; anything malformed is invalid input naming the file and the field."""
    from kindplan.document import parse_document
    from kindplan.engine import Options

    where = str(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InvalidInputError.one(where, f"cannot read: {e.strerror}") from e
    doc = parse_document(data, where)
    try:
        if not isinstance(doc, dict) or doc.get("kind") != SAVED_KIND:
            raise ValueError(f"not a saved kindplan plan (kind {SAVED_KIND!r} expected)")
        inputs = _field(doc, "inputs", dict)
        raw_options = _field(inputs, "options", dict)
        options = Options(**raw_options)
        if not isinstance(options.node, str) or not isinstance(options.route_proto, int):
            raise ValueError("inputs.options: malformed")
        netns = inputs.get("netns")
        if netns is not None and not isinstance(netns, str):
            raise ValueError("inputs.netns: not a string")
        return SavedPlan(
            fingerprint=_field(doc, "fingerprint", str),
            options=options,
            netns=netns,
            snapshot=base64.b64decode(_field(inputs, "snapshot", str), validate=True),
            source=_field(inputs, "source", str),
            pod_subnets=[str(s) for s in _field(inputs, "podSubnets", list)],
        )
    except (ValueError, TypeError) as e:
        raise InvalidInputError.one(
            where, str(e).splitlines()[0] if str(e) else type(e).__name__
        ) from e


def _field(doc: dict[str, Any], key: str, kind: type) -> Any:
    value = doc.get(key)
    if not isinstance(value, kind):
        raise ValueError(f"{key}: missing or not a {kind.__name__}")
    return value
