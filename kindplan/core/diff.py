"""diff(desired, observed) -> Plan: the fewest changes that make a node what it should be. Pure.

Changes come out make-before-break: sysctls, veth addresses, route additions and replacements,
the SNAT chains, route deletions, and the conflist last, so that kubelet sees a ready network only
once routes and SNAT are in place.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import assert_never

from kindplan.core.changes import (
    AddAddress,
    AddRoute,
    Change,
    Conflict,
    DelAddress,
    DeleteConflist,
    DelRoute,
    Plan,
    RemoveMasquerade,
    ReplaceRoute,
    SetSysctl,
    WriteConflist,
    WriteMasquerade,
)
from kindplan.core.masq.value import MasqObserved, Masquerade
from kindplan.core.model import DesiredState, ObservedState
from kindplan.core.nexthop_changes import AddNexthop, DelNexthop, ReplaceNexthop
from kindplan.core.nexthop_diff import diff_nexthops, nexthop_in_effect, nexthops_by_id
from kindplan.core.nexthops import Nexthop
from kindplan.core.policychanges import (
    POLICY_CHANGES,
    DelPolicyTable,
    WritePolicyElements,
    WritePolicyTable,
)
from kindplan.core.policydiff import diff_policy, policy_in_effect
from kindplan.core.render import render_conflist
from kindplan.core.routes import (
    DEFAULT_ROUTE_PROTO,
    IPV6_DEFAULT_METRIC,
    ROUTE_ORDER,
    RTPROT_KERNEL,
    Route,
    foreign_routes,
    route_for,
)
from kindplan.core.tunnelchanges import (
    TUNNEL_CHANGES,
    DelFdb,
    DelNeighbour,
    DelVxlan,
    WriteFdb,
    WriteNeighbour,
    WriteVxlan,
)
from kindplan.core.tunneldiff import diff_tunnels, tunnel_in_effect


def diff(
    desired: DesiredState,
    observed: ObservedState,
    *,
    conflist_path: str,
    route_proto: int = DEFAULT_ROUTE_PROTO,
    adopt: bool = False,
) -> Plan:
    """The plan that turns `observed` into `desired`, touching only what kindplan owns."""
    warnings: list[str] = []
    links = {link.name: link for link in observed.links}
    sysctls = {s.name: s.value for s in observed.sysctls}
    changes: list[Change] = [
        SetSysctl(s.name, s.value, sysctls.get(s.name))
        for s in desired.sysctls
        if sysctls.get(s.name) != s.value
    ]
    # The tunnel's devices and entries before the routes through them, their removal after.
    tunnels = diff_tunnels(desired, observed)
    changes += tunnels.writes
    warnings += tunnels.warnings

    # A pod's gateway address goes on its host veth only: on any other link (the uplink, a
    # bridge) it would answer for the pod's gateway where no pod is.
    missing_veths = sorted({a.ifname for a in desired.addresses if a.ifname not in links})
    for ifname in missing_veths:
        pods = sorted({a.pod for a in desired.addresses if a.ifname == ifname})
        warnings.append(f"veth {ifname} of pod {', '.join(pods)} does not exist; skipped")
    not_veths = sorted(
        {
            a.ifname
            for a in desired.addresses
            if a.ifname in links and links[a.ifname].kind != "veth"
        }
    )
    for ifname in not_veths:
        pods = sorted({a.pod for a in desired.addresses if a.ifname == ifname})
        kind = links[ifname].kind or "a device"
        warnings.append(f"{ifname} of pod {', '.join(pods)} is {kind}, not a veth; skipped")
    for address in desired.addresses:
        link = links.get(address.ifname)
        if (
            link
            and link.kind == "veth"
            and (address.address, address.prefixlen) not in link.addresses
        ):
            changes.append(AddAddress(address, link.index))

    skipped = {*missing_veths, *not_veths, *tunnels.skipped}
    nexthops = diff_nexthops(desired, observed, route_proto)
    warnings += nexthops.warnings
    routes = _diff_routes(nexthops.routes, observed.routes, skipped, route_proto, adopt)
    stale = _stale_foreign(desired, observed.routes, route_proto)
    if stale:
        # kindnetd never deletes a route: a departed node's and an old PodCIDR's stay, and one
        # would conflict with the next node that gets that PodCIDR.
        shown = ", ".join(f"{r.dst} via {r.gateway} proto {r.proto}" for r in stale)
        verb = "removed" if adopt else "--adopt removes them"
        warnings.append(f"stale foreign routes in the pod subnets, of no node ({verb}): {shown}")
        if adopt:
            routes.deletions += [DelRoute(r, "foreign, stale: of no node") for r in stale]
    if routes.foreign_ok:
        # A node that ran classic kindnetd: its routes work, but kindplan would not delete them
        # when a peer leaves unless it adopts them. --adopt takes the pods' host routes that
        # ptp made too (named here, not on their own: ptp makes every pod's, kindplan or not).
        warnings.append(
            "correct but not owned by kindplan, --adopt takes them over: "
            + ", ".join(
                routes.foreign_ok
                + [_taken_over(r, was, route_proto) for r, was in routes.foreign_pods]
            )
        )
    changes += nexthops.changes  # an object before the routes through it
    warnings += _source_specific(routes.source_specific)
    changes += routes.changes
    changes += _diff_masq(desired, observed, adopt, warnings)
    policy, policy_warnings = diff_policy(desired, observed)
    changes += policy  # before the conflist: a pod starts only once its policy holds
    warnings += policy_warnings
    changes += routes.deletions
    changes += nexthops.deletions  # and out after them
    changes += tunnels.removals

    if not desired.cni.subnets:
        # A joining node: its routes and SNAT are made now, the conflist once it has a PodCIDR
        # (kindnetd writes one with "subnet": "", which no pod can start with).
        warnings.append(
            f"node {desired.node} has no PodCIDR yet: {conflist_path} waits for one "
            "(its peers are routed meanwhile)"
        )
    else:
        content = render_conflist(desired)
        # An unreadable conflist (a directory, a FIFO, not UTF-8) is left alone: cli names it.
        if observed.conflist != content and observed.conflist_error is None:
            changes.append(WriteConflist(conflist_path, content, observed.conflist))
    return Plan(desired.node, tuple(changes), tuple(routes.conflicts), tuple(warnings))


@dataclass
class _RouteDiff:
    changes: list[Change] = field(default_factory=list)
    deletions: list[Change] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    foreign_ok: list[str] = field(default_factory=list)  # right, but not kindplan's
    # Pods' host routes of that kind, as (route, observed protocol): formatted only if shown.
    foreign_pods: list[tuple[Route, int]] = field(default_factory=list)
    # Source-specific routes (RTA_SRC) at a destination kindplan routes: left alone, named.
    source_specific: list[Route] = field(default_factory=list)


def _diff_routes(
    desired: tuple[Route, ...],
    observed: tuple[Route, ...],
    skipped_links: set[str],
    proto: int,
    adopt: bool,
) -> _RouteDiff:
    # The kernel keys a route by (table, dst, TOS, metric); IPv6 may hold several under one key.
    # The first route of each key in a dict, the rare others aside: no list per route.
    first: dict[object, Route] = {}
    others: dict[object, list[Route]] = defaultdict(list)
    for route in observed:
        if first.setdefault(route.key, route) is not route:
            others[route.key].append(route)
    out = _RouteDiff()
    wanted: set[object] = set()
    for route in desired:
        key = route.key
        wanted.add(key)  # a skipped pod's route is still wanted: left alone, not deleted
        if route.ifname in skipped_links:
            continue
        seen = first.get(key)
        if seen is None:
            out.changes.append(AddRoute(route))
        # Ours and right is the common case on a converged node, checked first (in the loop;
        # seen.owned_by(proto) inlined: a Python call per route cost one added node 0.56 % more
        # instructions, bench/ab.py). `special`: None for both plain routes; the nexthop
        # object (nhid) of a route of the nexthop style, whose gateway is the object's (a
        # changed one is the object's change, not the route's).
        elif (
            seen.proto != proto
            or (others and key in others)
            or (route.special is not seen.special and route.special != seen.special)
            or (route.special is None and not _same_target(route, seen))
        ):
            _diff_present(route, [seen, *others.get(key, ())], proto, adopt, out)
    _diff_unwanted(observed, desired, wanted, out, proto=proto, adopt=adopt)
    return out


def _diff_present(
    route: Route, present: list[Route], proto: int, adopt: bool, out: _RouteDiff
) -> None:
    """A desired route whose key holds routes (`present`, the first one dumped first) that are
    not just the one kindplan wants: right already, to replace, or in conflict."""
    if any(r.owned_by(proto) and _same_route(route, r) for r in present):
        return
    if route.nh_id and any(r.owned_by(proto) and r.special == route.special for r in present):
        return  # through kindplan's object: the object's diff sets where it leads
    # Right already where traffic goes: the same gateway and device, through a nexthop object
    # or not (kindnetd's plain route where kindplan's goes through one, or the reverse).
    right = [r for r in present if _same_target(route, r) and not r.owned_by(proto)]
    if right and not adopt:  # right already (a ptp pod route counts, whatever its protocol)
        if route.gateway is not None:
            out.foreign_ok.append(_taken_over(route, right[0].proto, proto))
        else:
            out.foreign_pods.append((route, right[0].proto))
        return
    old = next((r for r in present if r.owned_by(proto)), present[0])
    if old.owned_by(proto) or adopt:
        out.changes.append(ReplaceRoute(route, old))
    else:
        out.conflicts.append(Conflict(route, old))


def _diff_unwanted(
    observed: tuple[Route, ...],
    desired: tuple[Route, ...],
    wanted: set[object],
    out: _RouteDiff,
    *,
    proto: int,
    adopt: bool,
) -> None:
    """kindplan's routes at keys it no longer wants (deleted), and foreign routes that shadow
    one it wants."""
    # A few: kindplan's stale routes, and foreign ones (the kernel's own, the default route).
    for route in [r for r in observed if r.proto != proto or r.key not in wanted]:
        if route.owned_by(proto):
            out.deletions.append(DelRoute(route))
        else:
            _shadowing(route, desired, wanted, adopt, out)


def _source_specific(routes: list[Route]) -> list[str]:
    """One line naming the source-specific routes at kindplan's destinations, if any."""
    if not routes:
        return []
    shown = ", ".join(f"{r.dst} from {r.src} proto {r.proto}" for r in routes)
    return [
        "source-specific routes at destinations kindplan routes, left alone (they are other "
        f"routes, taken only for traffic from their source): {shown}"
    ]


def _taken_over(route: Route, was: int, proto: int) -> str:
    """`10.244.2.0/24 (peer NODE, proto 3 -> 75)`: a route --adopt takes over."""
    return f"{route.dst} ({route_for(route)}, proto {was} -> {proto})"


def _stale_foreign(desired: DesiredState, observed: tuple[Route, ...], proto: int) -> list[Route]:
    """Routes that look like kindnetd's leftovers: through a gateway, inside the cluster's pod
    subnets (not the whole subnet), not kindplan's nor the kernel's, to where no node's route goes,
    and to no listed node's PodCIDR (the node's own, a peer off-link or without an InternalIP:
    a foreign route there may be the only way to it, and --adopt must not take it away).

    A pod's host route has no gateway and a route outside the pod subnets is not kindnet's
    business: neither is ever one of these.
    """
    subnets = desired.pod_subnets
    if not subnets:
        return []
    # Not ours first (in C): on a converged node nearly every route is kindplan's.
    candidates = [
        r
        for r in foreign_routes(observed, proto)
        if r.gateway is not None
        and not r.owned_by(RTPROT_KERNEL)
        and any(r.dst.prefixlen > s.prefixlen and r.dst.network_address in s for s in subnets)
        and r.dst not in desired.node_cidrs
        and r.src is None  # a source-specific route is another route: never taken as stale
    ]
    if not candidates:
        return []
    wanted = {r.key[1:4] for r in desired.routes}  # (family, address, prefix length): any metric
    return sorted((r for r in candidates if r.key[1:4] not in wanted), key=ROUTE_ORDER)


# The metrics compile_desired gives routes (IPv4: 0; IPv6: 0, which the kernel stores as 1024).
_DESIRED_METRICS = (0, IPV6_DEFAULT_METRIC)


def _shadowing(
    route: Route, desired: tuple[Route, ...], wanted: set[object], adopt: bool, out: _RouteDiff
) -> None:
    """A foreign route at a destination kindplan routes, with a lower metric: the kernel takes
    it, not kindplan's (IPv4 routes of kindplan's have metric 0, so only IPv6 ones can be
    shadowed this way). A conflict unless it sends traffic where kindplan's would; --adopt
    deletes it. A source-specific route shadows nothing (only traffic from its source takes it):
    named, left alone."""
    if route.src is not None:
        if any(isinstance(key, tuple) and key[:4] == route.key[:4] for key in wanted):
            out.source_specific.append(route)
        return
    table, version, address, prefixlen, tos_metric = route.key
    tos, metric = tos_metric >> 32 << 32, route.metric
    for mine in _DESIRED_METRICS:
        key = (table, version, address, prefixlen, tos | mine)
        if mine <= metric or key not in wanted:
            continue
        shadowed = next(r for r in desired if r.key == key)  # rare: a search is fine
        if _same_target(shadowed, route):
            continue
        if adopt:
            out.deletions.append(DelRoute(route, "foreign: shadows kindplan's"))
        else:
            out.conflicts.append(Conflict(shadowed, route, shadows=True))
        return


def _same_route(desired: Route, observed: Route) -> bool:
    """The same target, and the same form: a plain route, or through the same nexthop object."""
    return _same_target(desired, observed) and desired.special == observed.special


def _same_target(desired: Route, observed: Route) -> bool:
    """Does the observed route send traffic where the desired one would?"""
    # The cheap comparisons first: gateways are often the very same object (the snapshot's, in
    # both), and ipaddress's __eq__ is Python.
    return (
        (desired.gateway is observed.gateway or desired.gateway == observed.gateway)
        and desired.ifname == observed.ifname
        and (desired.scope == observed.scope or desired.dst.version == 6)
    )  # no more: a route of another type or multipath is observed with no device of its own
    # (netlink._parse_route), and desired routes always have one; a route through a single
    # nexthop object has its gateway and device (its nhid is in `special`)


def _diff_masq(
    desired: DesiredState, observed: ObservedState, adopt: bool, warnings: list[str]
) -> list[Change]:
    backend = desired.masq_backend
    # iptables writes with the variant in use; nftables' own variant is "" (kindplan's tables)
    variant = observed.iptables_backend if backend == "iptables" else ""
    seen = {(m.backend, m.variant, m.version): m for m in observed.masq}
    changes: list[Change] = []
    for want in desired.masq:
        now = seen.pop((backend, variant, want.version), None) or MasqObserved(want.version, None)
        right = now.right and now.masq == want
        if not right or now.hooks != 1:
            # of several copies of the hook, the first one stays where it is
            write = WriteMasquerade(
                want.version,
                masq=None if right else want,
                old=now.masq,
                hooks=now.hooks,
                backend=backend,
                variant=variant,
                unread=now.unread,
            )
            if now.hooks > 1:
                write = replace(write, hooks_at=now.hooks_at, want_at=now.hooks_at[:1])
            changes.append(write)
    # What is left is kindplan's masquerade where nothing wants it: a backend (or variant) the
    # node no longer uses, a family the cluster lost. Both still hook netfilter: removed, hooks
    # and all. kindnet's table is not kindplan's: removed with --adopt only, named until then.
    taken = [m for m in seen.values() if m.variant == _KINDNET and m.masq is not None]
    if taken and not adopt:
        families = " and ".join(f"IPv{m.version}" for m in sorted(taken, key=lambda m: m.version))
        warnings.append(
            f"kindnet's table inet kindnet-ipmasq masquerades {families} too: two masquerade "
            "paths are live (--adopt takes it over: removed, journaled)"
        )
    for (other, other_variant, version), masq in sorted(seen.items()):
        if other_variant == _KINDNET and not adopt:
            continue
        if masq.masq is not None or masq.hooks:
            changes.append(
                RemoveMasquerade(
                    version,
                    masq.masq or Masquerade(version, ()),
                    masq.hooks,
                    backend=other,
                    variant=other_variant,
                    unread=masq.unread,
                )
            )
    return changes


_KINDNET = "kindnet"  # the nftables variant that names kindnet's table (core/masq/nftables.py)


def not_in_effect(changes: tuple[Change, ...], observed: ObservedState) -> tuple[Change, ...]:
    """The changes whose effect the node does not show yet. (Verifies rollbacks, and lets a
    rollback of a half-applied generation skip what never happened.)"""
    routes: dict[object, list[Route]] = defaultdict(list)
    for route in observed.routes:
        routes[route.key].append(route)
    held = nexthops_by_id(observed)
    return tuple(c for c in changes if not _in_effect(c, observed, routes, held))


def _in_effect(
    change: Change,
    observed: ObservedState,
    routes: dict[object, list[Route]],
    held: dict[int, Nexthop],
) -> bool:
    if isinstance(change, TUNNEL_CHANGES):
        return tunnel_in_effect(change, observed)
    if isinstance(change, POLICY_CHANGES):
        return policy_in_effect(change, observed)
    return _node_in_effect(change, observed, routes, held)


def _node_in_effect(
    change: Change,
    observed: ObservedState,
    routes: dict[object, list[Route]],
    held: dict[int, Nexthop],
) -> bool:
    """_in_effect of the node's own plumbing: sysctls, addresses, routes, SNAT, the conflist."""
    match change:
        case SetSysctl(name=name, value=value):
            return any(s.name == name and s.value == value for s in observed.sysctls)
        case AddAddress(address=address) | DelAddress(address=address):
            link = observed.link(address.ifname)
            present = link is not None and (address.address, address.prefixlen) in link.addresses
            return present == isinstance(change, AddAddress)
        case AddRoute(route=route) | ReplaceRoute(route=route):
            return any(
                r.owned_by(route.proto) and _same_target(route, r) and route.special == r.special
                for r in routes.get(route.key, ())
            )  # a route restored by a rollback: the same type and paths too
        case DelRoute(route=route):
            return not any(r.owned_by(route.proto) for r in routes.get(route.key, ()))
        case WriteMasquerade() | RemoveMasquerade():
            return _masq_in_effect(change, observed)
        case WriteConflist() | DeleteConflist():
            content = change.content if isinstance(change, WriteConflist) else None
            return observed.conflist == content
        case AddNexthop() | ReplaceNexthop() | DelNexthop():
            return nexthop_in_effect(change, held)
        case (
            WriteVxlan()
            | DelVxlan()
            | WriteNeighbour()
            | DelNeighbour()
            | WriteFdb()
            | DelFdb()
            | WritePolicyTable()
            | DelPolicyTable()
            | WritePolicyElements()
        ):
            raise TypeError(f"weighed by its own module: {change}")
        case _:
            assert_never(change)


def _masq_in_effect(change: WriteMasquerade | RemoveMasquerade, observed: ObservedState) -> bool:
    now = _masq(observed, change)
    if isinstance(change, RemoveMasquerade):
        return now is None or (now.masq is None and now.hooks == 0)
    masq = change.masq
    return (
        now is not None
        and (masq is None or (now.right and now.masq == masq))
        and now.hooks == change.want_hooks
    )


def masquerade_held(
    observed: ObservedState, change: WriteMasquerade | RemoveMasquerade
) -> tuple[Masquerade | None, int, tuple[str, ...]]:
    """The masquerade, the count of hooks and the rules its dialect could not read that the
    backend and variant of `change` hold (no chain: None, 0, ()): what a rollback compares with
    what the apply left there (its own rules and hooks, nothing unread)."""
    now = _masq(observed, change)
    return (None, 0, ()) if now is None else (now.masq, now.hooks, now.unread)


def _masq(
    observed: ObservedState, change: WriteMasquerade | RemoveMasquerade
) -> MasqObserved | None:
    """What the backend and variant of `change` (None: the variant in use) hold, as observed."""
    variant = observed.iptables_backend if change.variant is None else change.variant
    key = (change.backend, variant, change.version)
    return next((m for m in observed.masq if (m.backend, m.variant, m.version) == key), None)
