"""What kindplan says about what it did: each applied line carries its action (added, changed,
removed, adopted), a foreign leftover removed by --adopt is no "stale" route of kindplan's, the
plan names what --adopt takes over (the pods' host routes too), history speaks in words."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import ip_address, ip_network
from pathlib import Path

from test_diff import PATH, converged, desired_state

from kindplan.core.changes import (
    AddAddress,
    AddRoute,
    DelRoute,
    RemoveMasquerade,
    ReplaceRoute,
    SetSysctl,
)
from kindplan.core.diff import diff
from kindplan.core.masq.value import Masquerade
from kindplan.core.planview import action_word, applied_text, undo_summary
from kindplan.core.routes import Route


def test_applied_lines_say_what_was_done() -> None:
    desired = desired_state()
    peer = next(r for r in desired.routes if r.gateway is not None)
    moved = peer._replace(gateway=ip_address("198.18.0.77"))
    kindnetds = peer._replace(proto=3)
    assert applied_text(AddRoute(peer)).startswith(f"added route {peer.dst} via ")
    assert applied_text(ReplaceRoute(peer, moved)).startswith(f"changed route {peer.dst} ")
    assert applied_text(ReplaceRoute(peer, kindnetds)) == (
        f"adopted route {peer.dst} via {peer.gateway} dev eth0 proto 75 "
        f"(peer {peer.peer}; was via {peer.gateway} dev eth0 proto 3)"
    )
    gone = Route(ip_network("10.244.9.0/24"), "eth0", ip_address("198.18.0.99"), proto=75)
    assert applied_text(DelRoute(gone)) == (
        "removed route 10.244.9.0/24 via 198.18.0.99 dev eth0 proto 75 "
        "(stale: no longer in the snapshot)"
    )
    assert action_word(SetSysctl("net.ipv4.ip_forward", "1", "0")) == "changed"
    assert action_word(RemoveMasquerade(4, Masquerade(4, ()), 1)) == "removed"


def test_adopt_says_a_foreign_leftover_was_never_in_the_snapshot() -> None:
    desired = desired_state()
    leftover = Route(ip_network("10.244.99.0/24"), "eth0", ip_address("198.18.0.99"), proto=3)
    node = converged(desired)
    node = replace(node, routes=(*node.routes, leftover))
    (removal,) = diff(desired, node, conflist_path=PATH, adopt=True).changes
    assert applied_text(removal) == (
        "removed route 10.244.99.0/24 via 198.18.0.99 dev eth0 proto 3 (foreign, stale: of no node)"
    )
    assert removal == DelRoute(leftover)  # the words are no part of its identity (the guard's sets)


def test_the_plan_names_the_pod_routes_adopt_takes_over() -> None:
    """A node kindnetd ran: its peer routes and the pods' host routes ptp made (proto 3) are
    right, but not kindplan's; the warning names both, with the protocol they move to."""
    desired = desired_state()
    node = converged(desired)
    node = replace(node, routes=tuple(r._replace(proto=3) for r in node.routes))
    (warning,) = diff(desired, node, conflist_path=PATH).warnings
    assert warning.startswith("correct but not owned by kindplan, --adopt takes them over: ")
    assert "10.244.1.0/24 (peer node-0001, proto 3 -> 75)" in warning
    assert warning.endswith(", 10.244.0.5/32 (pod default/web, proto 3 -> 75)")
    adopted = diff(desired, node, conflist_path=PATH, adopt=True).changes
    assert {action_word(c) for c in adopted} == {"adopted"}
    assert any(c.route.gateway is None for c in adopted if isinstance(c, ReplaceRoute))
    # ptp's pod routes alone (a node kindplan runs, its pods made since): accepted, no warning
    only_pods = converged(desired)
    only_pods = replace(
        only_pods,
        routes=tuple(r._replace(proto=3) if r.gateway is None else r for r in only_pods.routes),
    )
    assert diff(desired, only_pods, conflist_path=PATH).warnings == ()


def test_history_says_what_a_rollback_would_do_in_words() -> None:
    desired = desired_state()
    peer, pod = desired.routes[0], next(r for r in desired.routes if r.gateway is None)
    address = desired.addresses[0]
    undo = [
        DelRoute(peer),
        DelRoute(pod),
        ReplaceRoute(peer, peer),
        RemoveMasquerade(4, Masquerade(4, ()), 1),
        AddAddress(address).undo(),
        SetSysctl("net.ipv4.ip_forward", "0", "1"),
    ]
    assert undo_summary(undo) == ("remove 1 address, 1 chain, 2 routes; restore 1 route, 1 sysctl")


def test_the_lab_writes_its_ipv6_pod_cidrs_canonically(tmp_path: Path) -> None:
    """lab up's summary and snapshot: fd00:10:244::/64, not fd00:10:244:0::/64."""
    from kindplan.lab.topology import design

    lab = design("kp", tmp_path, 3, 1, dual_stack=True)
    cidrs = [c for node in lab.nodes for c in node.pod_cidrs]
    assert cidrs == [str(ip_network(c)) for c in cidrs]
    assert "fd00:10:244::/64" in cidrs
