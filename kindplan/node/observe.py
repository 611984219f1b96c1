"""Observe a node: read_* does the I/O through the collaborators; find_*/check_* are pure.

read_observed is the one definition of what kindplan reads from a node; the saved plan's
fingerprint and the converged record's digest are computed from what it returns.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from kindplan.core.addresses import IPAddress, IPNetwork
from kindplan.core.masq.value import MasqObserved
from kindplan.core.model import (
    FORWARDING_SYSCTLS,
    HostFacts,
    Link,
    Node,
    ObservedState,
    Options,
    Pod,
    Snapshot,
)
from kindplan.core.nexthops import Nexthop
from kindplan.core.routes import DEFAULT_MTU, Route
from kindplan.errors import RuntimeFailure
from kindplan.node.cnicache import read_cni_cache
from kindplan.node.files import read_regular
from kindplan.node.iptables import read_masq

if TYPE_CHECKING:
    from kindplan.core.policytable import PolicyRead
    from kindplan.node.ports import IptablesPort, KernelPort


class Where(NamedTuple):
    """Where the node's inputs are, besides its kernel and iptables (from the snapshot, options).

    A named tuple rather than a frozen dataclass: a dataclass is made at import, by generating
    and compiling its methods, which a converged one-shot apply would pay for on every run.
    """

    conflist: Path
    families: tuple[int, ...]  # whose forwarding sysctls are read
    cni_cache: Path | None = None  # libcni's result cache, read only when given
    node: str = ""  # the node and the CNI network whose pods the cache holds
    network: str = ""

    @classmethod
    def of(cls, conflist: Path, families: tuple[int, ...], network: str, options: Options) -> Where:
        """The inputs that plan and apply read with these options (--cni-cache-dir, --node)."""
        cache = Path(options.cni_cache_dir) if options.cni_cache_dir is not None else None
        return cls(conflist, families, cache, options.node, network)


def read_observed(
    kernel: KernelPort,
    iptables: IptablesPort,
    where: Where,
    local_pods: tuple[tuple[Pod, ...], tuple[str, ...]] | None = None,
) -> ObservedState:
    """Everything the plan depends on from the node: links and their addresses, routes,
    forwarding sysctls, SNAT chains, the conflist, the CNI cache.

    The one definition of the observed node: the saved plan's `fingerprint` and the converged
    record's `observed_digest` are digests of what this reads. A conflist that cannot be read
    is not a reason to leave the routes and SNAT undone: it is recorded as `conflist_error`,
    and the plan leaves that file alone. `local_pods`: the CNI cache as read_local_pods read
    it already (make_plan compiles the cache's pods into the snapshot first: one read of the
    cache serves both); else it is read here.
    """
    return _read(
        kernel, iptables, where, kernel.read_routes, local_pods, read_nexthops=kernel.read_nexthops
    )


def _read_policy(iptables: IptablesPort, *, generation_only: bool = False) -> PolicyRead:
    nft = iptables.nftables  # the NetworkPolicy table: none without nft
    if nft is None:
        from kindplan.core.policytable import ABSENT  # not at import: a converged apply's cost

        return ABSENT
    return nft.policy_generation() if generation_only else nft.read_policy()


def _read(
    kernel: KernelPort,
    iptables: IptablesPort,
    where: Where,
    read_routes: Callable[[], tuple[Route, ...]],
    local_pods: tuple[tuple[Pod, ...], tuple[str, ...]] | None,
    *,
    read_nexthops: Callable[[], tuple[Nexthop, ...] | None],
    policy_generation_only: bool = False,
) -> ObservedState:
    links = kernel.read_links()  # first: the routes name their links by index
    conflist, conflist_error = None, None
    try:
        conflist = read_conflist(where.conflist)
    except RuntimeFailure as e:
        conflist_error = str(e)
    pods, cache_warnings = read_local_pods(where) if local_pods is None else local_pods
    tunnels, neighbours, fdb = kernel.read_tunnels()  # after the links: it names them
    policy = _read_policy(iptables, generation_only=policy_generation_only)
    return ObservedState(
        links=links,
        routes=read_routes(),
        sysctls=kernel.read_sysctls(tuple(FORWARDING_SYSCTLS[v] for v in where.families)),
        masq=read_masq(iptables),
        conflist=conflist,
        iptables_backend=iptables.backend,
        masq_tools=masq_tools(iptables),
        conflist_error=conflist_error,
        local_pods=pods,
        cache_warnings=cache_warnings,
        tunnels=tunnels,
        neighbours=neighbours,
        fdb=fdb,
        nexthops=read_nexthops(),
        policy=policy.table,
        policy_unread=policy.unread,
        policy_foreign=policy.foreign,
        policy_generation=policy.generation,
    )


def masq_tools(iptables: IptablesPort) -> tuple[str, ...]:
    """The masquerade backends the node has tools for."""
    have = (("iptables", iptables.present), ("nftables", iptables.nftables is not None))
    return tuple(name for name, present in have if present)


def read_local_pods(where: Where) -> tuple[tuple[Pod, ...], tuple[str, ...]]:
    """The node's pods in the CNI cache, and a warning for each entry skipped (none without one)."""
    if where.cni_cache is None:
        return (), ()
    pods, warnings = read_cni_cache(where.cni_cache, where.node, where.network)
    return tuple(pods), tuple(warnings)


def fingerprint(observed: ObservedState) -> str:
    """A digest of the observed node, to refuse a saved plan once the node changed."""
    # What the kernel dumps, addresses as integers, cheaper than as text (the key holds the
    # table, the destination, TOS and metric). Not the peer label: it names a snapshot's node,
    # not anything of the node's own.
    routes = repr(
        [(r.key, r.ifname, _int(r.gateway), r.scope, r.proto, r.special) for r in observed.routes]
    )
    objects = repr([(*n[:2], _int(n.gateway), *n[3:]) for n in observed.nexthops or ()])
    return digest(observed, hashlib.sha256(f"{routes}{objects}".encode()).digest())


def _int(ip: IPAddress | None) -> tuple[int, int] | None:
    return None if ip is None else (ip.version, int(ip))


def observed_digest(kernel: KernelPort, iptables: IptablesPort, where: Where) -> str:
    """The converged record's digest of the node: what read_observed reads, the routes hashed
    as the kernel dumps them instead of parsed (equal bytes parse to equal routes)."""
    # The routes and the nexthop objects: hashed below, as dumped; the policy table by the
    # generation it is at (no nft process: a big table takes seconds to list).
    observed = _read(
        kernel,
        iptables,
        where,
        lambda: (),
        None,
        read_nexthops=lambda: (),
        policy_generation_only=True,
    )
    return digest(observed, kernel.route_digest(), stamped=True)


_POLICY = ("policy", "policy_unread", "policy_foreign", "policy_generation")


def digest(observed: ObservedState, routes: bytes, *, stamped: bool = False) -> str:
    """A digest of every field of `observed` but its routes and nexthop objects, which the digest
    `routes` stands for (every field: an input added to read_observed is in the fingerprint and
    the record too). `stamped` (the converged record's): the policy table by the ruleset's
    generation it was read at, when known; else (a saved plan's fingerprint) by its content."""
    h = hashlib.sha256(routes)
    stamp = observed.policy_generation if stamped else None
    for field in fields(observed):
        if field.name in _POLICY:
            continue
        if field.name not in ("routes", "nexthops"):
            h.update(f"{field.name}={getattr(observed, field.name)!r}\n".encode())
    if stamp is not None:  # every nf_tables commit moves it: the same generation, the same table
        h.update(f"policy@{stamp}\n".encode())
    else:  # sets of elements by table_digest: their repr's order differs by process
        from kindplan.core.policytable import table_digest

        h.update(f"policy={table_digest(observed.policy)}\n".encode())
        h.update(f"{observed.policy_unread!r}{observed.policy_foreign!r}\n".encode())
    return h.hexdigest()


def read_conflist(path: Path) -> str | None:
    """The conflist's text, None if there is none; RuntimeFailure if it is not a regular file
    of UTF-8 text (never waits: a FIFO there is refused, not opened for a writer). A symbolic
    link is not followed: it is someone's (an operator's, a config manager's), and its target's
    bytes must not land in the journal, nor be replaced by a regular file."""
    try:
        return read_regular(path, follow=False).decode("utf-8")
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
    """--mtu, else the snapshot's cluster.mtu, else the uplink's MTU; the uplink's networks."""
    from ipaddress import ip_interface

    networks = tuple(
        ip_interface(f"{a}/{n}").network for a, n in uplink.addresses if not a.is_link_local
    )
    mtu = mtu or snapshot.cluster.mtu or uplink.mtu or DEFAULT_MTU
    return HostFacts(uplink.name, mtu, networks)


def off_link_peers(
    snapshot: Snapshot,
    node: Node,
    uplink: Link,
    tunneled: frozenset[tuple[str, int]] = frozenset(),
) -> list[str]:
    """Peers on none of the uplink's prefixes: the kernel will refuse their routes (but for
    the `tunneled` (peer, family) pairs, which --cross-subnet vxlan reaches)."""
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
            if tunneled and (peer.name, ip.version) in tunneled:
                continue
            for net in prefixes[ip.version]:
                if ip in net:
                    break
            else:
                off.append(f"{peer.name} ({ip})")
    return off


def _live_masq(iptables: IptablesPort, families: tuple[int, ...]) -> tuple[MasqObserved, ...]:
    """Per family, what masquerades on the node: kindplan's masquerade in whichever backend
    holds it (nftables' table or iptables' chain), else the iptables chain's absence."""
    found = [m for m in read_masq(iptables) if m.masq is not None and m.variant != "kindnet"]
    found.sort(key=lambda m: m.hooks == 0)  # a hooked one decides first
    out = []
    for v in families:
        mine = [m for m in found if m.version == v]
        out.append(mine[0] if mine else MasqObserved(v, None, variant=iptables.backend))
    return tuple(out)


def read_routing(
    kernel: KernelPort, iptables: IptablesPort, families: tuple[int, ...]
) -> ObservedState:
    """What routes a packet on this node (for trace): links, routes, forwarding, SNAT chains."""
    links = kernel.read_links()
    return ObservedState(
        links=links,
        routes=kernel.read_routes(),
        nexthops=kernel.read_nexthops(),
        sysctls=kernel.read_sysctls(tuple(FORWARDING_SYSCTLS[v] for v in families)),
        masq=_live_masq(iptables, families),
        conflist=None,
        iptables_backend=iptables.backend,
    )
