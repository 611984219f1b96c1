"""Observe a node: read_* does the I/O through the collaborators; find_*/check_* are pure."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from kindplan.core.compiler import FORWARDING_SYSCTLS
from kindplan.core.model import (
    DEFAULT_MTU,
    HostFacts,
    IPNetwork,
    Link,
    Node,
    ObservedState,
    Snapshot,
)
from kindplan.errors import RuntimeFailure
from kindplan.node.files import read_regular
from kindplan.node.iptables import parse_nat, read_masq

if TYPE_CHECKING:
    from kindplan.node.ports import IptablesPort, KernelPort


def read_observed(
    kernel: KernelPort, iptables: IptablesPort, conflist_path: Path, families: tuple[int, ...]
) -> ObservedState:
    """Everything kindplan compares against: links, routes, sysctls, SNAT chains, the conflist.

    A conflist that cannot be read is not a reason to leave the routes and SNAT undone: it is
    recorded as `conflist_error`, and the plan leaves that file alone.
    """
    links = kernel.read_links()
    conflist, conflist_error = None, None
    try:
        conflist = read_conflist(conflist_path)
    except RuntimeFailure as e:
        conflist_error = str(e)
    return ObservedState(
        links=links,
        routes=kernel.read_routes(),
        sysctls=kernel.read_sysctls(tuple(FORWARDING_SYSCTLS[v] for v in families)),
        masq=read_masq(iptables),
        conflist=conflist,
        iptables_backend=iptables.backend,
        conflist_error=conflist_error,
    )


def read_conflist(path: Path) -> str | None:
    """The conflist's text, None if there is none; RuntimeFailure if it is not a regular file
    of UTF-8 text (never waits: a FIFO there is refused, not opened for a writer)."""
    try:
        return read_regular(path).decode("utf-8")
    except FileNotFoundError:
        return None
    except OSError as e:
        raise RuntimeFailure(f"{path}: cannot read: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise RuntimeFailure(f"{path}: cannot read: not UTF-8 text (byte {e.start})") from e


def find_uplink(
    links: tuple[Link, ...], snapshot: Snapshot, node: Node, name: str | None
) -> tuple[Link, list[str]]:
    """The uplink and what had to be assumed to find it.

    The interface named by --uplink, else the one holding the node's InternalIP, else (a node
    that has no InternalIP yet) the one whose prefixes hold the peers' InternalIPs. A family in
    which the node has no InternalIP is routed through that uplink all the same, and said so.
    """
    if name is not None:
        uplink = next((link for link in links if link.name == name), None)
        if uplink is None:
            raise RuntimeFailure(f"uplink {name} does not exist on node {node.name}")
        how = "given by --uplink"
    elif node.internal_ips:
        uplink = next(
            (x for x in links if any(a in node.internal_ips for a, _ in x.addresses)), None
        )
        if uplink is None:
            ips = ", ".join(str(ip) for ip in node.internal_ips)
            raise RuntimeFailure(f"no interface of node {node.name} holds its InternalIP {ips}")
        how = "the uplink of its other InternalIP"
    else:
        uplink, how = _uplink_of_peers(links, snapshot, node)
    missing = [v for v in snapshot.families if node.internal_ip(v) is None]
    if not missing or not any(p.name != node.name and p.internal_ips for p in snapshot.nodes):
        return uplink, []
    families = " and ".join(f"IPv{v}" for v in missing)
    return uplink, [
        f"node {node.name} has no {families} InternalIP yet: its {families} peers are routed "
        f"through {uplink.name} ({how}), assumed to be on their link"
    ]


def _uplink_of_peers(links: tuple[Link, ...], snapshot: Snapshot, node: Node) -> tuple[Link, str]:
    """The interface on whose prefixes most peers' InternalIPs lie (kindnetd assumes eth0)."""
    from ipaddress import ip_interface

    peer_ips = [ip for p in snapshot.nodes if p.name != node.name for ip in p.internal_ips]
    best, best_count, best_net = None, 0, ""
    for link in links:
        for addr, length in link.addresses:
            net = ip_interface(f"{addr}/{length}").network
            count = sum(1 for ip in peer_ips if ip.version == net.version and ip in net)
            if count > best_count:
                best, best_count, best_net = link, count, str(net)
    if best is None and not peer_ips:  # nothing to route: the uplink only gives the MTU
        best = next((link for link in links if link.name == "eth0"), None)
    if best is None:
        raise RuntimeFailure(
            f"node {node.name} has no InternalIP yet and no interface holds its peers' "
            "InternalIPs: name the uplink with --uplink"
        )
    return best, f"it holds the peers' range {best_net}"


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
    if observed.conflist_error is not None:  # only then: earlier fingerprints stay valid
        state["conflist_error"] = observed.conflist_error
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()


def read_routing(
    kernel: KernelPort, iptables: IptablesPort, families: tuple[int, ...]
) -> ObservedState:
    """What routes a packet on this node (for trace): links, routes, forwarding, SNAT chains."""
    links = kernel.read_links()
    return ObservedState(
        links=links,
        routes=kernel.read_routes(),
        sysctls=kernel.read_sysctls(tuple(FORWARDING_SYSCTLS[v] for v in families)),
        masq=tuple(parse_nat(v, iptables.save_nat(v), iptables.backend) for v in families),
        conflist=None,
        iptables_backend=iptables.backend,
    )
