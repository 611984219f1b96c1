"""The cross-subnet tunnel on a node: read kindplan's VXLAN devices and the entries on them, and
make the tunnel's changes, through one netlink socket (the Kernel's). The messages are in
netlink_tunnel.py.

Ownership: a device is read as kindplan's only when it is a VXLAN device of kindplan's name
carrying its alias (core/tunnel.py's MARKER); entries are read, written and deleted only on such
a device, and a device is deleted only if it still is one when the delete is sent (compare and
swap: one that someone replaced since the plan is left alone, and said so).
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from typing import TYPE_CHECKING

from kindplan.core.routes import DEVICE_NAMES, DEVICES
from kindplan.core.tunnel import FdbEntry, Neighbour, Vxlan
from kindplan.node.netlink import Netlink
from kindplan.node.netlink_codec import NetlinkError
from kindplan.node.netlink_tunnel import (
    LINK_DUMP,
    RTM_GETLINK,
    RTM_GETNEIGH,
    RTM_NEWLINK,
    RTM_NEWNEIGH,
    Request,
    address_request,
    fdb_dump,
    fdb_request,
    link_change,
    link_create,
    link_delete,
    link_name,
    neighbour_dump,
    neighbour_request,
    parse_fdb,
    parse_neighbour,
    parse_vxlan,
)

if TYPE_CHECKING:
    from kindplan.core.tunnelchanges import DelVxlan, TunnelChange, WriteVxlan

TunnelsSeen = tuple[tuple[Vxlan, ...], tuple[Neighbour, ...], tuple[FdbEntry, ...]]


def read_tunnels(netlink: Netlink, index: dict[str, int]) -> TunnelsSeen:
    """The devices of kindplan's names (`index`: the links by name, as just dumped) and the
    permanent neighbour and FDB entries on those that are kindplan's. Nothing is asked of the
    kernel on a node without such a device."""
    if not any(name in index for name in DEVICE_NAMES):
        return (), (), ()
    devices = _devices(netlink)
    neighbours: list[Neighbour] = []
    fdb: list[FdbEntry] = []
    for at, device in devices.values():
        if not device.owned:
            continue
        for kind, message in netlink.dump(RTM_GETNEIGH, neighbour_dump(device.version, at)):
            n = parse_neighbour(message, at, device.name) if kind == RTM_NEWNEIGH else None
            if n is not None:
                neighbours.append(n)
        for kind, message in netlink.dump(RTM_GETNEIGH, fdb_dump(at)):
            f = parse_fdb(message, at, device.name) if kind == RTM_NEWNEIGH else None
            if f is not None:
                fdb.append(f)
    return (
        tuple(sorted((d for _, d in devices.values()), key=lambda d: d.key)),
        tuple(sorted(neighbours, key=lambda n: n.key)),
        tuple(sorted(fdb, key=lambda f: f.key)),
    )


def _devices(netlink: Netlink) -> dict[str, tuple[int, Vxlan]]:
    """(index, device) of each link of kindplan's names, by name, with its addresses of its
    family (an IPv6 link-local address is the kernel's, not part of the device)."""
    addresses = netlink.addresses()
    found = {}
    for kind, message in netlink.dump(RTM_GETLINK, LINK_DUMP):
        if kind != RTM_NEWLINK:
            continue
        at, name = link_name(message)
        if name not in DEVICE_NAMES:
            continue
        version = 4 if name == DEVICES[4] else 6
        own = sorted(
            {
                a
                for i, a, _ in addresses
                if i == at and a.version == version and not a.is_link_local
            },
            key=int,
        )
        found[name] = (at, parse_vxlan(message, version, tuple(own)))
    return found


def write_tunnel(
    netlink: Netlink, index: dict[str, int], changes: Sequence[TunnelChange]
) -> list[NetlinkError | None]:
    """Make `changes` in order: a device at a time (its index is needed next), the entries of
    consecutive changes in batches. `index` (the links by name) follows what is created and
    deleted. The error of each change, None for one done."""
    from kindplan.core.tunnelchanges import DelVxlan, WriteVxlan  # the change types: a write's

    results: list[NetlinkError | None] = [None] * len(changes)
    pending: list[int] = []  # entry changes waiting to go in one batch

    def flush() -> None:
        requests = [_entry_request(changes[i], index) for i in pending]
        sent = [(i, r) for i, r in zip(pending, requests, strict=True) if r is not None]
        for i, r in zip(pending, requests, strict=True):
            if r is None:
                results[i] = NetlinkError(errno.ENODEV, f"no device {_device_of(changes[i])}")
        outcome = netlink.write_requests([r for _, r in sent])
        for (i, _), error in zip(sent, outcome, strict=True):
            results[i] = _gone_is_done(changes[i], error)
        pending.clear()

    for i, change in enumerate(changes):
        if isinstance(change, WriteVxlan | DelVxlan):
            flush()
            results[i] = _device_change(netlink, index, change)
        else:
            pending.append(i)
    flush()
    return results


def _device_of(change: TunnelChange) -> str:
    from kindplan.core.tunnelchanges import (
        DelFdb,
        DelNeighbour,
        DelVxlan,
        WriteFdb,
        WriteNeighbour,
        WriteVxlan,
    )

    match change:
        case WriteNeighbour(neighbour=n) | DelNeighbour(neighbour=n):
            return n.ifname
        case WriteFdb(entry=f) | DelFdb(entry=f):
            return f.ifname
        case WriteVxlan(vxlan=v) | DelVxlan(vxlan=v):
            return v.name


def _entry_request(change: TunnelChange, index: dict[str, int]) -> Request | None:
    from kindplan.core.tunnelchanges import (
        DelFdb,
        DelNeighbour,
        DelVxlan,
        WriteFdb,
        WriteNeighbour,
        WriteVxlan,
    )

    at = index.get(_device_of(change))
    if at is None:
        return None
    match change:
        case WriteNeighbour(neighbour=n):
            return neighbour_request("write", at, n)
        case DelNeighbour(neighbour=n):
            return neighbour_request("del", at, n)
        case WriteFdb(entry=f):
            return fdb_request("write", at, f)
        case DelFdb(entry=f):
            return fdb_request("del", at, f)
        case WriteVxlan() | DelVxlan():
            raise TypeError(f"not an entry: {change}")


def _gone_is_done(change: TunnelChange, error: NetlinkError | None) -> NetlinkError | None:
    """A delete of an entry that is not there (ENOENT) has nothing left to do."""
    if error is not None and error.errno == errno.ENOENT and change.action == "-":
        return None
    return error


def _device_change(
    netlink: Netlink, index: dict[str, int], change: WriteVxlan | DelVxlan
) -> NetlinkError | None:
    from kindplan.core.tunnelchanges import DelVxlan

    name = change.vxlan.name
    seen = _devices(netlink).get(name)
    if isinstance(change, DelVxlan):
        if seen is None:
            return None
        if not seen[1].owned:  # compare and swap: someone else's device now
            return NetlinkError(errno.EEXIST, f"{name} is not kindplan's now; left alone")
        error = _one(netlink, link_delete(seen[0]))
        if error is None:
            index.pop(name, None)
        return error
    want, old = change.vxlan, change.old
    if old is None:
        if seen is not None:
            return NetlinkError(errno.EEXIST, f"{name} exists since it was observed; left alone")
        error = _one(netlink, link_create(want))
        seen = _devices(netlink).get(name)
        if error is not None or seen is None:
            return error or NetlinkError(errno.ENODEV, f"{name} vanished once created")
        index[name] = seen[0]
    elif seen is None or not seen[1].owned:
        return NetlinkError(errno.ENODEV, f"{name} is gone or not kindplan's now; left alone")
    at, now = seen
    requests = link_change(at, want)
    requests += [address_request("del", at, a) for a in now.addresses if a not in want.addresses]
    requests += [address_request("add", at, a) for a in want.addresses if a not in now.addresses]
    return next((e for e in netlink.write_requests(requests) if e is not None), None)


def _one(netlink: Netlink, request: Request) -> NetlinkError | None:
    return netlink.write_requests([request])[0]
