"""The converged fast path of a one-shot apply: no parse, compile or diff when nothing changed.

kindplan's plan is a pure function of its inputs (the snapshot's bytes, the options, its own code)
and of the node as observed. After an apply that leaves the node converged, the state dir keeps
a digest of each. The next apply with the same inputs observes the node cheaply (the route table
hashed as the kernel dumps it, not parsed) and, if that digest matches too, the plan is the one
recorded: empty. Any difference at all, and the full path runs. A cron job or a kubelet-style
caller running `kindplan apply` every few seconds on a big cluster then pays for a read of the
node, not for checking 5,000 nodes again.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import kindplan
from kindplan.core.schemacheck import compile_schema
from kindplan.node.files import read_regular, write_atomic
from kindplan.node.observe import Where, observed_digest
from kindplan.node.opener import open_node
from kindplan.node.trust import check_existing, ensure_trusted
from kindplan.resources import load_schema, resource_dir

if TYPE_CHECKING:
    from kindplan.core.changes import Plan
    from kindplan.core.model import Options

# What the plan is made with besides kindplan itself: a new version of one may render differently.
_LIBRARIES = ("jinja2", "yaml")


@dataclass(frozen=True, slots=True)
class Record:
    inputs: str  # digest of what the plan was made from
    observed: str  # digest of the node when it was converged
    conflist_path: str  # what the snapshot said; the same as long as the inputs are
    families: tuple[int, ...]
    network: str
    output: str  # what apply printed for the converged node (the plan's warnings included)
    warnings: str  # what it said on stderr about the snapshot


@dataclass(frozen=True, slots=True)
class Remember:
    """What apply needs to record a converged node: where, its inputs, the snapshot's warnings,
    and how the command line prints the converged node's plan (recorded, then printed as it is)."""

    path: Path
    inputs: str
    warnings: str
    output: Callable[[Plan], str]


def inputs_digest(
    snapshot: bytes, pod_subnets: tuple[str, ...], options: Options, netns: str | None
) -> str:
    """A digest of everything a plan is made from but the node: input bytes, options, code."""
    h = hashlib.sha256()
    h.update(hashlib.sha256(snapshot).digest())
    h.update(repr((pod_subnets, options, netns, sys.version, kindplan.__version__)).encode())
    h.update(_code_stamp().encode())
    return h.hexdigest()


def _code_stamp() -> str:
    """Sizes and mtimes of kindplan's files and of the libraries' (a stat each: no import)."""
    roots = [Path(kindplan.__file__).parent, resource_dir("templates"), resource_dir("schemas")]
    for name in _LIBRARIES:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin:
            roots.append(Path(spec.origin).parent)
    stamps: list[str] = []
    for root in dict.fromkeys(roots):  # a wheel has templates/ inside the package
        _stamp_tree(str(root), stamps)
    return "\n".join(stamps)


def _stamp_tree(folder: str, stamps: list[str]) -> None:
    """`path:size:mtime` of each source file below `folder`, by name, folders after files:
    os.scandir's entries, whose stat is the one the listing read (pathlib's rglob took three
    times as long, a fiftieth of a converged apply)."""
    entries = sorted(os.scandir(folder), key=lambda e: e.name)
    for entry in entries:
        if entry.name.endswith((".py", ".j2", ".json")) and entry.is_file():
            st = entry.stat()
            stamps.append(f"{entry.path}:{st.st_size}:{st.st_mtime_ns}")
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            _stamp_tree(entry.path, stamps)


def load_record(path: Path) -> Record | None:
    """The record, or None if there is none or it cannot be used (then the full path runs, and
    writes a new one): a cache is never a reason to fail, but a state folder that another user
    could write is (it could make an apply skip its work)."""
    check_existing(path.parent)
    try:
        data = json.loads(read_regular(path, follow=False))
        if not _record_check()(data) or not set(data["families"]) <= {4, 6}:
            return None
        return Record(
            str(data["inputs"]),
            str(data["observed"]),
            str(data["conflist_path"]),
            tuple(int(v) for v in data["families"]),
            str(data["network"]),
            str(data["output"]),
            str(data["warnings"]),
        )
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None


@cache
def _record_check() -> Callable[[Any], bool]:
    return compile_schema(load_schema("converged.schema.json"))


def save_record(path: Path, record: Record) -> None:
    ensure_trusted(path.parent)
    write_atomic(path, json.dumps(asdict(record)) + "\n", mode=0o600)


def converged_record(
    netns: str | None,
    options: Options,
    remember: Remember,
    *,
    lock_timeout: float,
) -> Record | None:
    """The record of the last converged apply if its inputs and the node are still the same
    (then the plan is empty without parsing, compiling or diffing anything); else None."""
    record = load_record(remember.path)
    if record is None or record.inputs != remember.inputs:
        return None
    where = Where.of(Path(record.conflist_path), record.families, record.network, options)
    with open_node(netns, lock_timeout) as node:
        digest = observed_digest(node.kernel, node.iptables, where)
    return record if digest == record.observed else None
