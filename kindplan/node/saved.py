"""Saved plans (plan --out, apply --plan): the plan, the inputs that made it, and a fingerprint of
the node as observed, so that apply can refuse a plan once the node has changed."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kindplan.core.model import path_problem
from kindplan.core.routes import RESERVED_ROUTE_PROTOS
from kindplan.errors import InvalidInputError, RuntimeFailure
from kindplan.node.files import write_output

if TYPE_CHECKING:
    from kindplan.core.changes import Plan
    from kindplan.core.model import Options
    from kindplan.node.engine import Planned

SAVED_KIND = "kindplan/SavedPlan"


@dataclass(frozen=True)
class SavedPlan:
    fingerprint: str
    options: Options
    netns: str | None
    snapshot: bytes
    source: str
    pod_subnets: list[str]
    plan: dict[str, Any]  # as plan_to_json made it: apply refuses to do anything else

    def check(self, planned: Planned) -> Plan:
        """apply --plan's step of reconcile: the plan, if the node and the plan made from it are
        still those saved (and reviewed); else RuntimeFailure, before anything is written."""
        from kindplan.core.planview import plan_to_json

        node = self.options.node
        if planned.fingerprint != self.fingerprint:
            raise RuntimeFailure(f"node {node} changed since the plan was made; plan again")
        if plan_to_json(planned.plan) != self.plan:
            raise RuntimeFailure(f"the plan for node {node} is not the one saved; plan again")
        return planned.plan


def save_plan(path: Path, saved: SavedPlan) -> None:
    """Write `saved` as the document parse_plan reads back."""
    document = {
        "kind": SAVED_KIND,
        "fingerprint": saved.fingerprint,
        "inputs": {
            "options": asdict(saved.options),
            "netns": saved.netns,
            "source": saved.source,
            "podSubnets": saved.pod_subnets,
            "snapshot": base64.b64encode(saved.snapshot).decode(),
        },
        "plan": saved.plan,
    }
    write_output(path, json.dumps(document, indent=1) + "\n", "--out", mode=0o600)


def parse_plan(data: bytes, where: str) -> SavedPlan:
    """A saved plan from its bytes; anything malformed is invalid input naming `where` and the
    field."""
    from kindplan.core.document import parse_document

    doc = parse_document(data, where)
    try:
        if not isinstance(doc, dict) or doc.get("kind") != SAVED_KIND:
            raise ValueError(f"not a saved kindplan plan (kind {SAVED_KIND!r} expected)")
        inputs = _field(doc, "inputs", dict)
        options = _options(_field(inputs, "options", dict))
        if "netns" not in inputs:  # absent must not mean "the host's own namespace"
            raise ValueError("inputs.netns: missing (null for the host's namespace)")
        netns = inputs["netns"]
        if netns is not None and not (
            isinstance(netns, str) and _NAME.fullmatch(netns) and netns not in (".", "..")
        ):
            raise ValueError("inputs.netns: not a namespace name")
        return SavedPlan(
            fingerprint=_field(doc, "fingerprint", str),
            options=options,
            netns=netns,
            snapshot=base64.b64decode(_field(inputs, "snapshot", str), validate=True),
            source=_field(inputs, "source", str),
            pod_subnets=[str(s) for s in _field(inputs, "podSubnets", list)],
            plan=_field(doc, "plan", dict),
        )
    except (ValueError, TypeError) as e:
        raise InvalidInputError.one(
            where, str(e).splitlines()[0] if str(e) else type(e).__name__
        ) from e


_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_OPTIONAL_STR = ("conf_dir", "uplink", "cni_cache_dir")


def _options(raw: dict[str, Any]) -> Options:
    """The saved options, each checked as the command line checks it: a saved plan is input."""
    from kindplan.core.model import Options

    # A plan saved before --masq-backend, --no-masquerade-cidr or --cross-subnet has no such key.
    raw = {"masq_backend": None, "no_masquerade": [], "cross_subnet": None, **raw}
    if set(raw) != {*_KEYS, "masq_backend", "no_masquerade", "cross_subnet"}:
        raise ValueError("inputs.options: unexpected or missing keys")
    _later_options(raw)
    for key in _OPTIONAL_STR:
        if raw[key] is not None and not (isinstance(raw[key], str) and raw[key].isprintable()):
            raise ValueError(f"inputs.options.{key}: not a string")
    for key in ("conf_dir", "cni_cache_dir"):
        problem = path_problem(raw[key]) if raw[key] is not None else None
        if problem:
            raise ValueError(f"inputs.options.{key}: {problem}")
    node, mtu, proto, adopt = raw["node"], raw["mtu"], raw["route_proto"], raw["adopt"]
    if not (isinstance(node, str) and node and node.isprintable()):
        raise ValueError("inputs.options.node: not a node name")
    if mtu is not None and not (type(mtu) is int and 576 <= mtu <= 65535):
        raise ValueError("inputs.options.mtu: not an MTU")
    if not (type(proto) is int and 1 <= proto <= 255 and proto not in RESERVED_ROUTE_PROTOS):
        raise ValueError("inputs.options.route_proto: not a usable route protocol number")
    if type(adopt) is not bool:
        raise ValueError("inputs.options.adopt: not true or false")
    return Options(**raw)


_KEYS = ("node", "conf_dir", "uplink", "mtu", "route_proto", "adopt", "cni_cache_dir")


def _later_options(raw: dict[str, Any]) -> None:
    """--masq-backend, --no-masquerade-cidr and --cross-subnet as saved: checked, the CIDRs
    made a tuple in place."""
    from kindplan.core.addresses import parse_cidr

    if raw["cross_subnet"] not in (None, "none", "vxlan"):
        raise ValueError("inputs.options.cross_subnet: not none or vxlan")
    if raw["masq_backend"] not in (None, "auto", "iptables", "nftables"):
        raise ValueError("inputs.options.masq_backend: not a masquerade backend")
    cidrs = raw["no_masquerade"]
    if not isinstance(cidrs, list) or len(cidrs) > 256:
        raise ValueError("inputs.options.no_masquerade: not a list of CIDRs")
    try:
        raw["no_masquerade"] = tuple(str(parse_cidr(c)) for c in cidrs if isinstance(c, str))
    except ValueError as e:
        raise ValueError(f"inputs.options.no_masquerade: {e}") from e
    if len(raw["no_masquerade"]) != len(cidrs):
        raise ValueError("inputs.options.no_masquerade: not a list of CIDRs")


def _field(doc: dict[str, Any], key: str, kind: type) -> Any:
    value = doc.get(key)
    if not isinstance(value, kind):
        raise ValueError(f"{key}: missing or not a {kind.__name__}")
    return value
