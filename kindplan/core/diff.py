"""diff(desired, observed) -> Plan: the fewest changes that make a node what it should be. Pure.

Changes come out make-before-break: sysctls, veth addresses, route additions and replacements,
the SNAT chains, route deletions, and the conflist last, so that kubelet sees a ready network only
once routes and SNAT are in place.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import assert_never

from kindplan.core.model import (
    DEFAULT_ROUTE_PROTO,
    IPV6_DEFAULT_METRIC,
    ROUTE_ORDER,
    RTPROT_KERNEL,
    AddAddress,
    AddRoute,
    Change,
    Conflict,
    DelAddress,
    DeleteConflist,
    DelRoute,
    DesiredState,
    MasqObserved,
    ObservedState,
    Plan,
    RemoveChain,
    ReplaceRoute,
    Route,
    SetSysctl,
    WriteChain,
    WriteConflist,
    foreign_routes,
)
from kindplan.core.render import masq_rules, render_conflist


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
            changes.append(AddAddress(address))

    skipped = {*missing_veths, *not_veths}
    routes = _diff_routes(desired.routes, observed.routes, skipped, route_proto, adopt)
    stale = _stale_foreign(desired, observed.routes, route_proto)
    if stale:
        # kindnetd never deletes a route: a departed node's and an old PodCIDR's stay, and one
        # would conflict with the next node that gets that PodCIDR.
        shown = ", ".join(f"{r.dst} via {r.gateway} proto {r.proto}" for r in stale)
        verb = "removed" if adopt else "--adopt removes them"
        warnings.append(f"stale foreign routes in the pod subnets, of no node ({verb}): {shown}")
        if adopt:
            routes.deletions += [DelRoute(r) for r in stale]
    if routes.foreign_ok:
        # A node that ran classic kindnetd: its routes work, but kindplan would not delete them
        # when a peer leaves unless it adopts them.
        warnings.append(
            "correct but not owned by kindplan, --adopt takes them over: "
            + ", ".join(routes.foreign_ok)
        )
    changes += routes.changes
    changes += _diff_masq(desired, observed)
    changes += routes.deletions

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
            continue
        # seen.owned_by(proto), inlined here and below: the two checks made for every route
        # (a Python call each cost one added node 0.56 % more instructions, bench/ab.py)
        if seen.proto == proto and (not others or key not in others) and _same_target(route, seen):
            continue  # ours and right: the common case on a converged node, checked first
        present = [seen, *others.get(key, ())]
        right = [r for r in present if _same_target(route, r)]
        if any(r.owned_by(proto) for r in right):
            continue
        if right and not adopt:  # right already (a ptp pod route counts, whatever its protocol)
            if route.gateway is not None:
                out.foreign_ok.append(f"{route.dst} (peer {route.peer}, proto {right[0].proto})")
            continue
        old = next((r for r in present if r.owned_by(proto)), seen)
        if old.owned_by(proto) or adopt:
            out.changes.append(ReplaceRoute(route, old))
        else:
            out.conflicts.append(Conflict(route, old))
    # A few: kindplan's stale routes, and foreign ones (the kernel's own, the default route).
    for route in [r for r in observed if r.proto != proto or r.key not in wanted]:
        if route.owned_by(proto):
            out.deletions.append(DelRoute(route))
        else:
            _shadowing(route, desired, wanted, adopt, out)
    return out


def _stale_foreign(desired: DesiredState, observed: tuple[Route, ...], proto: int) -> list[Route]:
    """Routes that look like kindnetd's leftovers: through a gateway, inside the cluster's pod
    subnets (not the whole subnet), not kindplan's nor the kernel's, to where no node's route goes.

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
    deletes it."""
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
            out.deletions.append(DelRoute(route))
        else:
            out.conflicts.append(Conflict(shadowed, route, shadows=True))
        return


def _same_target(desired: Route, observed: Route) -> bool:
    """Does the observed route send traffic where the desired one would?"""
    # The cheap comparisons first: gateways are often the very same object (the snapshot's, in
    # both), and ipaddress's __eq__ is Python.
    return (
        (desired.gateway is observed.gateway or desired.gateway == observed.gateway)
        and desired.ifname == observed.ifname
        and (desired.scope == observed.scope or desired.dst.version == 6)
    )  # no more: a route of another type, multipath or through a nexthop object is observed
    # with no device of its own (netlink._parse_route), and desired routes always have one


def _diff_masq(desired: DesiredState, observed: ObservedState) -> list[Change]:
    backend = observed.iptables_backend
    seen = {(m.backend, m.version): m for m in observed.masq}
    changes: list[Change] = []
    for chain in desired.masq:
        rules = masq_rules(chain)
        now = seen.pop((backend, chain.version), None)
        old_rules, jumps = (now.rules, now.jumps) if now else (None, 0)
        jumps_at = now.jumps_at if now else ()
        if old_rules != rules or jumps != 1:
            # of several copies of the jump, the first one stays where it is
            write = WriteChain(
                chain.version,
                rules=rules if old_rules != rules else None,
                old_rules=old_rules,
                jumps=jumps,
                backend=backend,
            )
            if jumps > 1:
                write = replace(write, jumps_at=jumps_at, want_at=jumps_at[:1])
            changes.append(write)
    # What is left is kindplan's chain where nothing wants it: a backend the node no longer
    # uses, a family the cluster lost. Both still hook netfilter: removed, jumps and all.
    for (other, version), masq in sorted(seen.items()):
        if masq.rules is not None or masq.jumps:
            changes.append(RemoveChain(version, masq.rules or (), masq.jumps, backend=other))
    return changes


def not_in_effect(changes: tuple[Change, ...], observed: ObservedState) -> tuple[Change, ...]:
    """The changes whose effect the node does not show yet. (Verifies rollbacks, and lets a
    rollback of a half-applied generation skip what never happened.)"""
    routes: dict[object, list[Route]] = defaultdict(list)
    for route in observed.routes:
        routes[route.key].append(route)
    return tuple(c for c in changes if not _in_effect(c, observed, routes))


def _in_effect(change: Change, observed: ObservedState, routes: dict[object, list[Route]]) -> bool:
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
        case WriteChain(version=version, rules=rules, want_jumps=want_jumps, backend=backend):
            masq = _masq(observed, version, backend)
            return (
                masq is not None
                and (rules is None or masq.rules == rules)
                and masq.jumps == want_jumps
            )
        case RemoveChain(version=version, backend=backend):
            masq = _masq(observed, version, backend)
            return masq is None or (masq.rules is None and masq.jumps == 0)
        case WriteConflist(content=content):
            return observed.conflist == content
        case DeleteConflist():
            return observed.conflist is None
        case _:
            assert_never(change)


def _masq(observed: ObservedState, version: int, backend: str | None) -> MasqObserved | None:
    """The chain of `version` in `backend` (None: the backend in use) as observed."""
    backend = observed.iptables_backend if backend is None else backend
    return next((m for m in observed.masq if (m.version, m.backend) == (version, backend)), None)
