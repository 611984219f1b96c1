"""The API's pods made into the snapshot without checking 150,000 of them again for each change:
each pod is converted and checked once, alone, and kept by its key in key order; the store names
the keys whose objects changed, and a new snapshot converts and checks only those, with the
checks between pods (each IP one pod's, each pod's node known) kept current as they come and go.
A deleting pod needs no place of its own here: it is ordered after the others only to settle a
shared IP, and a shared IP is never clean.

The one rule that keeps it exact: this path handles only what is clean. A pod with anything to
say about it (a problem, or a warning: an unknown node, an IP that another pod claims, a control
character) makes the caller check the whole List instead (kinds.check_document), which names
every place as for a file. So what this path gives is what the whole check gives, only sooner.
Pure.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping
from functools import cache
from ipaddress import IPv6Address
from typing import Any

from kindplan.core.addresses import IPAddress, addr_order, parse_ip
from kindplan.core.model import Pod
from kindplan.core.schemacheck import Check, compile_schema
from kindplan.core.snapshotpods import check_labels, check_ports
from kindplan.inputs.converted import Converted
from kindplan.inputs.pods import add_pod
from kindplan.resources import load_schema

Key = tuple[str, str]


class Unclean(Exception):
    """Something to say about a pod: the whole List must be checked instead."""


class _Quiet:
    """The checks' collaborator (snapshotpods.Checks) for a pod alone: any word is Unclean."""

    def __init__(self) -> None:
        self.tolerant = True
        self.doubtful_nodes: set[str] = set()

    def problem(self, path: str, what: str) -> None:
        raise Unclean(what)

    def warning(self, path: str, what: str) -> None:
        raise Unclean(what)

    def ip(self, path: str, text: str) -> IPAddress | None:
        return _ip(text)


@cache
def _pod_schema() -> Check:
    schema = load_schema("snapshot.schema.json")
    return compile_schema({"$defs": schema["$defs"], **schema["properties"]["pods"]["items"]})


def _printable(value: Any) -> bool:
    if isinstance(value, str):
        return value.isprintable()
    if isinstance(value, dict):
        return all(map(_printable, value.values()))
    if isinstance(value, list):
        return all(map(_printable, value))
    return True


def _ip(text: str) -> IPAddress:
    try:
        address = parse_ip(text)
    except ValueError as e:
        raise Unclean(text) from e
    if isinstance(address, IPv6Address) and address.scope_id:
        raise Unclean(text)
    return address


def pod_alone(obj: Any) -> Pod | None:
    """The pod of a trimmed v1 Pod, converted and checked alone (None: it does not count, as
    pods.py decides); Unclean if there is anything to say about it."""
    out = Converted({})
    add_pod(obj, "pod", out, False)
    for step in out.later:  # a deleting pod: the caller orders it after the others
        step()
    if out.problems or out.warnings:
        raise Unclean("converter")
    entries = out.document.get("pods")
    if not entries:
        return None
    entry = entries[0]
    if not _pod_schema()(entry) or not _printable(entry):
        raise Unclean("schema")
    quiet = _Quiet()
    ips: list[IPAddress] = []
    for text in entry["ips"]:
        ip = _ip(text)
        if any(other.version == ip.version for other in ips):
            raise Unclean("two IPs of a family")
        ips.append(ip)
    return Pod(
        entry["namespace"],
        entry["name"],
        entry["node"],
        tuple(sorted(ips, key=addr_order)),
        "",
        (),
        check_labels(quiet, "", entry.get("labels")),
        check_ports(quiet, "", entry.get("ports", ())),
        bool(entry.get("hostNetwork", False)),
    )


class KnownPods:
    """The pods made so far from the store's trimmed objects: by key, in key order, with the
    owner of each IP. The store names the keys that changed (touch); update() redoes those only.
    Not thread-safe: the store's lock guards touch, the loop's one thread calls update."""

    def __init__(self) -> None:
        # Written by the watch threads (under the store's lock), taken by the loop's thread:
        self._dirty: set[Key] = set()
        # The loop's thread's alone:
        self._reset()

    def _reset(self) -> None:
        self._valid = False  # the pods made are complete and current (up to _dirty)
        self._nodes: set[str] = set()
        self._from: dict[Key, Pod | None] = {}  # key -> its pod (None: it does not count)
        self._keys: list[Key] = []  # the pods that count, in key order...
        self._pods: list[Pod] = []  # ...and the pods themselves
        self._owner: dict[IPAddress, Key] = {}

    def touch(self, key: Key) -> None:
        """The object of `key` changed (or came, or went)."""
        self._dirty.add(key)

    def take_dirty(self) -> set[Key]:
        """The keys touched since: taken under the store's lock, for the update that follows."""
        dirty, self._dirty = self._dirty, set()
        return dirty

    def forget(self) -> None:
        """The update was not used (the snapshot was checked whole): start afresh next time."""
        self._valid = False

    def update(self, held: Mapping[Key, Any], nodes: set[str], dirty: set[Key]) -> tuple[Pod, ...]:
        """Every pod that counts, in key order, after the changes `dirty` (take_dirty); Unclean
        if any pod has anything to say (and the next update starts afresh)."""
        try:
            if self._valid and nodes == self._nodes:
                for key in sorted(dirty):
                    self._replace(key, held.get(key))
            else:
                self._reset()
                self._nodes = set(nodes)
                for key in sorted(held):  # in key order: each pod appended, not inserted
                    self._add(key, held[key], append=True)
        except Unclean:
            self._valid = False
            raise
        self._valid = True
        return tuple(self._pods)

    def _replace(self, key: Key, obj: Any) -> None:
        old = self._from.pop(key, None)
        if old is not None:
            at = bisect_left(self._keys, key)
            del self._keys[at], self._pods[at]
            for ip in old.ips:
                if self._owner.get(ip) == key:
                    del self._owner[ip]
        if obj is not None:
            self._add(key, obj, append=False)

    def _add(self, key: Key, obj: Any, *, append: bool) -> None:
        pod = pod_alone(obj)
        self._from[key] = pod
        if pod is None:
            return
        if pod.node not in self._nodes:
            raise Unclean("no such node")
        if not pod.host_network:  # a hostNetwork pod's IPs are its node's, shared
            for ip in pod.ips:
                if self._owner.setdefault(ip, key) != key:
                    raise Unclean("an IP of two pods")
        if append:
            self._keys.append(key)
            self._pods.append(pod)
        else:
            at = bisect_left(self._keys, key)
            self._keys.insert(at, key)
            self._pods.insert(at, pod)
