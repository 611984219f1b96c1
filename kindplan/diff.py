"""diff(desired, observed) -> Plan: the fewest changes that make a node what it should be. Pure.

Changes come out make-before-break: sysctls, veth addresses, route additions and replacements,
the SNAT chains, route deletions, and the conflist last, so that kubelet sees a ready network only
once routes and SNAT are in place.
"""

from __future__ import annotations

from collections import defaultdict

from kindplan.model import (
    DEFAULT_ROUTE_PROTO,
    AddAddress,
    AddRoute,
    Change,
    Conflict,
    DelRoute,
    DesiredState,
    ObservedState,
    Plan,
    ReplaceRoute,
    Route,
    SetSysctl,
    WriteChain,
    WriteConflist,
)
from kindplan.render import masq_rules, render_conflist


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

    missing_veths = sorted({a.ifname for a in desired.addresses if a.ifname not in links})
    for ifname in missing_veths:
        pods = sorted({a.pod for a in desired.addresses if a.ifname == ifname})
        warnings.append(f"veth {ifname} of pod {', '.join(pods)} does not exist; skipped")
    for address in desired.addresses:
        link = links.get(address.ifname)
        if link and (address.address, address.prefixlen) not in link.addresses:
            changes.append(AddAddress(address))

    route_changes, deletions, conflicts = _diff_routes(
        desired.routes, observed.routes, set(missing_veths), route_proto, adopt
    )
    if not adopt:
        warnings += _foreign_peer_routes(desired.routes, observed.routes, route_proto)
    changes += route_changes
    changes += _diff_masq(desired, observed)
    changes += deletions

    content = render_conflist(desired)
    if observed.conflist != content:
        changes.append(WriteConflist(conflist_path, content, observed.conflist))
    return Plan(desired.node, tuple(changes), tuple(conflicts), tuple(warnings))


def _diff_routes(
    desired: tuple[Route, ...],
    observed: tuple[Route, ...],
    skipped_links: set[str],
    proto: int,
    adopt: bool,
) -> tuple[list[Change], list[Change], list[Conflict]]:
    # The kernel keys a route by (table, dst, metric); IPv6 may hold several under one key.
    by_key: dict[object, list[Route]] = defaultdict(list)
    for route in observed:
        by_key[route.key].append(route)
    changes: list[Change] = []
    conflicts: list[Conflict] = []
    wanted = set()
    for route in desired:
        wanted.add(route.key)  # a skipped pod's route is still wanted: left alone, not deleted
        if route.ifname in skipped_links:
            continue
        present = by_key.get(route.key, [])
        if not present:
            changes.append(AddRoute(route))
            continue
        if any(
            _same_target(route, seen) and (seen.proto == proto or not adopt) for seen in present
        ):
            continue  # right already (a pod route made by ptp counts, whatever its protocol)
        old = next((seen for seen in present if seen.proto == proto), present[0])
        if old.proto == proto or adopt:
            changes.append(ReplaceRoute(route, old))
        else:
            conflicts.append(Conflict(route, old))
    deletions: list[Change] = [
        DelRoute(route) for route in observed if route.proto == proto and route.key not in wanted
    ]
    return changes, deletions, conflicts


def _foreign_peer_routes(
    desired: tuple[Route, ...], observed: tuple[Route, ...], proto: int
) -> list[str]:
    """Peer routes that are right but not kindplan's (a node that ran classic kindnetd): they
    work, but kindplan will not delete them when the peer leaves unless it adopts them."""
    seen = {route.key: route for route in observed}
    found = [
        f"{r.dst} (peer {r.peer}, proto {seen[r.key].proto})"
        for r in desired
        if r.gateway is not None
        and r.key in seen
        and seen[r.key].proto != proto
        and _same_target(r, seen[r.key])
    ]
    if not found:
        return []
    return [f"correct but not owned by kindplan, --adopt takes them over: {', '.join(found)}"]


def _same_target(desired: Route, observed: Route) -> bool:
    """Does the observed route send traffic where the desired one would?"""
    return (
        desired.gateway == observed.gateway
        and desired.ifname == observed.ifname
        and (desired.dst.version == 6 or desired.scope == observed.scope)
    )


def _diff_masq(desired: DesiredState, observed: ObservedState) -> list[Change]:
    seen = {m.version: m for m in observed.masq}
    changes: list[Change] = []
    for chain in desired.masq:
        rules = masq_rules(chain)
        now = seen.get(chain.version)
        old_rules, jumps = (now.rules, now.jumps) if now else (None, 0)
        if old_rules != rules or jumps != 1:
            changes.append(
                WriteChain(chain.version, rules if old_rules != rules else None, old_rules, jumps)
            )
    return changes
