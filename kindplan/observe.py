"""Observe a node: read_* does the I/O through the collaborators; find_*/check_* are pure."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from kindplan.compiler import FORWARDING_SYSCTLS
from kindplan.errors import RuntimeFailure
from kindplan.iptables import Iptables, read_masq
from kindplan.kernel import Kernel
from kindplan.model import (
    DEFAULT_MTU,
    HostFacts,
    IPNetwork,
    Link,
    Node,
    ObservedState,
    Snapshot,
)


def read_observed(
    kernel: Kernel, iptables: Iptables, conflist_path: Path, families: tuple[int, ...]
) -> ObservedState:
    """Everything kindplan compares against: links, routes, sysctls, SNAT chains, the conflist."""
    links = kernel.read_links()
    return ObservedState(
        links=links,
        routes=kernel.read_routes(),
        sysctls=kernel.read_sysctls(tuple(FORWARDING_SYSCTLS[v] for v in families)),
        masq=read_masq(iptables),
        conflist=read_conflist(conflist_path),
        iptables_backend=iptables.backend,
    )


def read_conflist(path: Path) -> str | None:
    try:
        return path.read_text("utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise RuntimeFailure(f"{path}: cannot read: {e}") from e


def find_uplink(links: tuple[Link, ...], node: Node, name: str | None) -> Link:
    """The uplink: the interface named by --uplink, else the one holding the node's InternalIP."""
    if name is not None:
        for link in links:
            if link.name == name:
                return link
        raise RuntimeFailure(f"uplink {name} does not exist on node {node.name}")
    for link in links:
        if any(addr in node.internal_ips for addr, _ in link.addresses):
            return link
    ips = ", ".join(str(ip) for ip in node.internal_ips)
    raise RuntimeFailure(f"no interface of node {node.name} holds its InternalIP {ips}")


def host_facts(snapshot: Snapshot, uplink: Link, mtu: int | None) -> HostFacts:
    """--mtu, else the snapshot's cluster.mtu, else the uplink's MTU."""
    return HostFacts(uplink.name, mtu or snapshot.cluster.mtu or uplink.mtu or DEFAULT_MTU)


def off_link_peers(snapshot: Snapshot, node: Node, uplink: Link) -> list[str]:
    """Peers on none of the uplink's prefixes: the kernel will refuse their routes."""
    from ipaddress import ip_interface

    prefixes: dict[int, list[IPNetwork]] = {4: [], 6: []}
    for addr, length in uplink.addresses:
        prefixes[addr.version].append(ip_interface(f"{addr}/{length}").network)
    off = []
    for peer in snapshot.nodes:  # 5,000 of them: plain loops, no generator per address
        if peer.name == node.name:
            continue
        for ip in peer.internal_ips:
            if peer.pod_cidr(ip.version) is None:
                continue
            for net in prefixes[ip.version]:
                if ip in net:
                    break
            else:
                off.append(f"{peer.name} ({ip})")
    return off


def fingerprint(observed: ObservedState) -> str:
    """A digest of everything the plan depends on, to refuse a saved plan once the node changed."""
    state = {
        "links": [
            (x.name, x.index, x.mtu, x.up, [str(a) for a in x.addresses]) for x in observed.links
        ],
        "routes": [
            (str(r.dst), r.ifname, str(r.gateway), r.scope, r.metric, r.proto, r.table)
            + ((repr(r.special),) if r.special is not None else ())
            for r in observed.routes
        ],
        "sysctls": [(s.name, s.value) for s in observed.sysctls],
        "masq": [(m.backend, m.version, m.rules, m.jumps) for m in observed.masq],
        "conflist": observed.conflist,
    }
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()
