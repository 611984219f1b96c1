"""diff_tunnels: the changes that make kindplan's VXLAN devices and their neighbour and FDB entries
what the desired state says, and whether such a change is in effect. Pure; diff.py places the
changes in the plan (devices and entries before the routes through them, their removal after).

Only a device that carries kindplan's marker is kindplan's (Vxlan.owned): one of the same name
without it is someone else's, named in a warning and left alone with whatever is on it, and
the routes that would go through it are not written either. Every permanent entry on a device
of kindplan's is kindplan's (learning is off: the kernel adds none).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kindplan.core.model import DesiredState, ObservedState
from kindplan.core.tunnel import FdbEntry, Neighbour
from kindplan.core.tunnelchanges import (
    DelFdb,
    DelNeighbour,
    DelVxlan,
    TunnelChange,
    WriteFdb,
    WriteNeighbour,
    WriteVxlan,
)


@dataclass
class TunnelDiff:
    writes: list[TunnelChange] = field(default_factory=list)  # devices, then entries
    removals: list[TunnelChange] = field(default_factory=list)  # entries, then devices
    skipped: set[str] = field(default_factory=set)  # device names that are not kindplan's
    warnings: list[str] = field(default_factory=list)


def diff_tunnels(desired: DesiredState, observed: ObservedState) -> TunnelDiff:
    out = TunnelDiff()
    if not desired.tunnels and not observed.tunnels:
        return out  # the common case: no tunnel wanted, none there
    seen = {t.name: t for t in observed.tunnels}
    ours = {name for name, t in seen.items() if t.owned}
    for want in desired.tunnels:
        now = seen.get(want.name)
        if now is not None and not now.owned:
            out.skipped.add(want.name)
            out.warnings.append(
                f"device {want.name} is not kindplan's (no alias {want.alias!r}): left alone; "
                "the peers it would reach are not routed"
            )
        elif now is not None and (now.vni, now.port, now.version) != (
            want.vni,
            want.port,
            want.version,
        ):
            out.skipped.add(want.name)
            out.warnings.append(
                f"device {want.name} has VNI {now.vni} port {now.port}, which cannot be "
                f"changed in place (kindplan's: {want.vni}, {want.port}): delete it by hand"
            )
        elif now != want:
            out.writes.append(WriteVxlan(want, now))
    wanted_devices = {t.name for t in desired.tunnels} - out.skipped
    _entries(desired.neighbours, observed.neighbours, wanted_devices, ours, out)
    _entries(desired.fdb, observed.fdb, wanted_devices, ours, out)
    out.removals += [
        DelVxlan(t) for t in observed.tunnels if t.owned and t.name not in wanted_devices
    ]
    return out


def _entries(
    desired: tuple[Neighbour, ...] | tuple[FdbEntry, ...],
    observed: tuple[Neighbour, ...] | tuple[FdbEntry, ...],
    devices: set[str],
    ours: set[str],
    out: TunnelDiff,
) -> None:
    """The writes and removals of one kind of entry: only on devices of kindplan's."""
    now: dict[object, Neighbour | FdbEntry] = {e.key: e for e in observed if e.ifname in ours}
    for want in desired:
        if want.ifname not in devices:
            continue
        old = now.pop(want.key, None)
        if old is None or not _same(old, want):
            out.writes.append(_write(want, old))
    for gone in now.values():  # a peer on-link again, or gone, or a device going away
        out.removals.append(DelNeighbour(gone) if isinstance(gone, Neighbour) else DelFdb(gone))


def _same(a: Neighbour | FdbEntry, b: Neighbour | FdbEntry) -> bool:
    if isinstance(a, Neighbour) and isinstance(b, Neighbour):
        return a.same(b)
    if isinstance(a, FdbEntry) and isinstance(b, FdbEntry):
        return a.same(b)
    return False


def _write(want: Neighbour | FdbEntry, old: Neighbour | FdbEntry | None) -> TunnelChange:
    if isinstance(want, Neighbour):
        assert old is None or isinstance(old, Neighbour)
        return WriteNeighbour(want, old)
    assert old is None or isinstance(old, FdbEntry)
    return WriteFdb(want, old)


def tunnel_in_effect(change: TunnelChange, observed: ObservedState) -> bool:
    """Does the node show `change` made? (Verifies rollbacks; see diff.not_in_effect.)"""
    match change:
        case WriteVxlan(vxlan=vxlan):
            return vxlan in observed.tunnels
        case DelVxlan(vxlan=vxlan):
            return not any(t.name == vxlan.name and t.owned for t in observed.tunnels)
        case WriteNeighbour(neighbour=n):
            return any(o.same(n) for o in observed.neighbours)
        case DelNeighbour(neighbour=n):
            return not any(o.key == n.key for o in observed.neighbours)
        case WriteFdb(entry=f):
            return any(o.same(f) for o in observed.fdb)
        case DelFdb(entry=f):
            return not any(o.key == f.key for o in observed.fdb)
