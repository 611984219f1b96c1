"""The pure diff, plan rendering and iptables parsing: no kernel, no fakes, just values."""

from __future__ import annotations

import json
from dataclasses import replace
from ipaddress import ip_address, ip_network

from builders import cluster_doc, load
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from kindplan.core.changes import (
    AddAddress,
    AddRoute,
    Conflict,
    DelRoute,
    Plan,
    RemoveMasquerade,
    ReplaceRoute,
    SetSysctl,
    WriteConflist,
    WriteMasquerade,
)
from kindplan.core.compiler import compile_desired
from kindplan.core.diff import diff
from kindplan.core.masq.iptables import fix_payload, jump_rule, parse_nat, rule_lines
from kindplan.core.masq.value import MASQUERADE, MasqObserved, MasqRule, Masquerade
from kindplan.core.model import DesiredState, HostFacts, Link, ObservedState, Sysctl
from kindplan.core.planview import format_plan, plan_to_json
from kindplan.core.render import render_conflist
from kindplan.core.routes import ROUTE_ORDER, Route, RouteSpecial
from kindplan.resources import load_schema

PATH = "/etc/cni/net.d/10-kindnet.conflist"


def desired_state(nodes: int = 3, pods: bool = True) -> DesiredState:
    doc = cluster_doc(nodes)
    if pods:
        doc["pods"] = [
            {
                "namespace": "default",
                "name": "web",
                "node": "node-0000",
                "ips": ["10.244.0.5"],
                "hostInterface": "veth1",
            }
        ]
    return compile_desired(load(doc), "node-0000", HostFacts())


def converged(desired: DesiredState) -> ObservedState:
    """What a node looks like once kindplan applied `desired` (the pure simulation's target)."""
    return simulate(empty_node(desired), diff(desired, empty_node(desired), conflist_path=PATH))


def empty_node(desired: DesiredState) -> ObservedState:
    veths = sorted({a.ifname for a in desired.addresses})
    links = [Link("eth0", 2, 1500, True, ((ip_address("198.18.0.10"), 15),))]
    links += [Link(name, 10 + i, 1500, True, (), "veth") for i, name in enumerate(veths)]
    return ObservedState(
        links=tuple(links),
        routes=(),
        sysctls=(Sysctl("net.ipv4.ip_forward", "0"),),
        masq=(MasqObserved(4, None, 0),),
        conflist=None,
    )


def simulate(observed: ObservedState, plan: Plan) -> ObservedState:
    """Apply a plan to an observed state in memory, as the kernel would."""
    routes = {r.key: r for r in observed.routes}
    links = {link.name: link for link in observed.links}
    sysctls = {s.name: s.value for s in observed.sysctls}
    masq = {m.version: m for m in observed.masq}
    conflist = observed.conflist
    for change in plan.changes:
        match change:
            case SetSysctl(name, value, _):
                sysctls[name] = value
            case AddAddress(address):
                link = links[address.ifname]
                links[link.name] = replace(
                    link, addresses=(*link.addresses, (address.address, address.prefixlen))
                )
            case AddRoute(route) | ReplaceRoute(route, _):
                routes[route.key] = route
            case DelRoute(route):
                del routes[route.key]
            case WriteMasquerade(version=version, masq=want, old=old):
                masq[version] = MasqObserved(version, want if want is not None else old, 1)
            case WriteConflist(_, content, _):
                conflist = content
    return ObservedState(
        links=tuple(links.values()),
        routes=tuple(sorted(routes.values(), key=lambda r: r.key)),
        sysctls=tuple(Sysctl(k, v) for k, v in sysctls.items()),
        masq=tuple(masq.values()),
        conflist=conflist,
    )


def test_empty_node_gets_everything_in_make_before_break_order() -> None:
    desired = desired_state()
    plan = diff(desired, empty_node(desired), conflist_path=PATH)
    kinds = [type(c).__name__ for c in plan.changes]
    assert kinds == [
        "SetSysctl",
        "AddAddress",
        "AddRoute",
        "AddRoute",
        "AddRoute",
        "WriteMasquerade",
        "WriteConflist",
    ]
    assert plan.changes[-1] == WriteConflist(PATH, render_conflist(desired), None)


def test_converged_node_has_an_empty_plan() -> None:
    desired = desired_state()
    plan = diff(desired, converged(desired), conflist_path=PATH)
    assert plan.empty
    assert format_plan(plan) == "No changes.\n"


def test_ptp_made_pod_route_is_accepted_whatever_its_protocol() -> None:
    desired = desired_state()
    node = converged(desired)
    ptp_route = next(r for r in node.routes if r.ifname == "veth1")._replace(proto=3)
    node = replace(
        node, routes=tuple(ptp_route if r.key == ptp_route.key else r for r in node.routes)
    )
    assert diff(desired, node, conflist_path=PATH).empty
    adopted = diff(desired, node, conflist_path=PATH, adopt=True)
    assert adopted.changes == (
        ReplaceRoute(next(r for r in desired.routes if r.ifname == "veth1"), ptp_route),
    )


def test_stale_owned_route_is_deleted_foreign_one_never() -> None:
    desired = desired_state()
    stale = Route(ip_network("10.244.99.0/24"), "eth0", ip_address("198.18.0.99"), proto=75)
    foreign = Route(ip_network("10.250.0.0/24"), "eth0", ip_address("198.18.0.98"), proto=4)
    node = converged(desired)
    node = replace(node, routes=(*node.routes, stale, foreign))
    assert diff(desired, node, conflist_path=PATH).changes == (DelRoute(stale),)
    # Under another protocol number, routes marked 75 are someone else's: never deleted.
    other = diff(desired, node, conflist_path=PATH, route_proto=76)
    assert not any(isinstance(c, DelRoute) for c in other.changes)


def test_stale_foreign_routes_are_named_and_removed_only_with_adopt() -> None:
    """kindnetd's leftovers (a departed node's route, an old PodCIDR's) look like this: inside
    the pod subnets, through a gateway, not ours, matching no node."""
    desired = desired_state()
    gateway = ip_address("198.18.0.99")
    departed = Route(ip_network("10.244.99.0/24"), "eth0", gateway, proto=3)
    old_size = Route(ip_network("10.244.1.0/25"), "eth0", gateway, proto=3)
    never = (
        # the kernel's own route, a pod's host route made by ptp, a route outside the pod
        # subnets, a route to the whole pod subnet
        Route(ip_network("10.244.98.0/24"), "eth0", gateway, proto=2),
        Route(ip_network("10.244.0.9/32"), "veth1", None, "host", proto=3),
        Route(ip_network("10.250.0.0/24"), "eth0", gateway, proto=3),
        Route(ip_network("10.244.0.0/16"), "eth0", gateway, proto=3),
    )
    node = converged(desired)
    node = replace(node, routes=(*node.routes, departed, old_size, *never))
    plan = diff(desired, node, conflist_path=PATH)
    assert plan.empty
    assert plan.warnings == (
        "stale foreign routes in the pod subnets, of no node (--adopt removes them): "
        "10.244.1.0/25 via 198.18.0.99 proto 3, 10.244.99.0/24 via 198.18.0.99 proto 3",
    )
    assert "stale foreign routes" in format_plan(plan)
    adopted = diff(desired, node, conflist_path=PATH, adopt=True)
    assert adopted.changes == (DelRoute(old_size), DelRoute(departed))
    assert simulate(node, adopted).routes == tuple(
        sorted((*converged(desired).routes, *never), key=lambda r: r.key)
    )


def test_wrong_next_hop_owned_is_replaced_foreign_is_a_conflict() -> None:
    desired = desired_state()
    peer = desired.routes[0]
    for proto, expect_conflict in ((75, False), (3, True)):
        wrong = peer._replace(gateway=ip_address("198.18.0.77"), proto=proto)
        node = converged(desired)
        node = replace(node, routes=tuple(wrong if r.key == peer.key else r for r in node.routes))
        plan = diff(desired, node, conflist_path=PATH)
        if expect_conflict:
            assert plan.changes == () and len(plan.conflicts) == 1
            assert "--adopt replaces it" in format_plan(plan)
            assert diff(desired, node, conflist_path=PATH, adopt=True).changes == (
                ReplaceRoute(peer, wrong),
            )
        else:
            assert plan.changes == (ReplaceRoute(peer, wrong),) and not plan.conflicts


def test_missing_veth_is_a_warning_not_a_change() -> None:
    desired = desired_state()
    node = converged(desired)
    node = replace(node, links=tuple(link for link in node.links if link.name != "veth1"))
    plan = diff(desired, node, conflist_path=PATH)
    assert plan.empty
    assert plan.warnings == ("veth veth1 of pod default/web does not exist; skipped",)


def test_chains_nothing_wants_are_removed_from_any_backend_and_family() -> None:
    """A node that switched backends, a cluster that lost IPv6: what kindplan left goes."""
    desired = desired_state()
    masq = desired.masq[0]
    node = converged(desired)
    alone = Masquerade(6, (MasqRule(MASQUERADE),))
    left = (
        MasqObserved(4, masq, 1, variant="legacy"),  # the backend the node used before
        MasqObserved(6, None, 1, variant="legacy"),  # a jump alone
        MasqObserved(6, alone, 1, variant="nft"),  # a lost family
        MasqObserved(6, None, 0, variant="nft"),
    )
    plan = diff(desired, replace(node, masq=(*node.masq, *left[:3])), conflist_path=PATH)
    assert plan.changes == (
        RemoveMasquerade(4, masq, 1, variant="legacy"),
        RemoveMasquerade(6, Masquerade(6, ()), 1, variant="legacy"),
        RemoveMasquerade(6, alone, 1, variant="nft"),
    )
    assert "- iptables-legacy nat: chain KIND-MASQ-AGENT and 1 jump(s)" in format_plan(plan)
    assert diff(desired, replace(node, masq=(*node.masq, left[3])), conflist_path=PATH).empty


def test_chain_and_jump_fixes() -> None:
    desired = desired_state()
    masq = desired.masq[0]
    rules = rule_lines(masq)
    node = converged(desired)
    turned = Masquerade(4, masq.rules[::-1])
    for observed, expected in [
        (MasqObserved(4, masq, 2), WriteMasquerade(4, None, masq, 2, variant="nft")),
        (MasqObserved(4, turned, 1), WriteMasquerade(4, masq, turned, 1, variant="nft")),
        (MasqObserved(4, None, 0), WriteMasquerade(4, masq, None, 0, variant="nft")),
    ]:
        assert diff(desired, replace(node, masq=(observed,)), conflist_path=PATH).changes == (
            expected,
        )
    payload = fix_payload(None, 3)
    assert payload.count("-D POSTROUTING") == 2 and ":KIND-MASQ-AGENT" not in payload
    assert fix_payload(masq, 0).splitlines() == [
        "*nat",
        ":KIND-MASQ-AGENT - [0:0]",
        *rules,
        jump_rule(),
        "COMMIT",
    ]


def test_parse_nat_reads_only_the_nat_table() -> None:
    masq = desired_state().masq[0]
    rules = rule_lines(masq)
    saved = "\n".join(
        [
            "*filter",
            ":KIND-MASQ-AGENT - [0:0]",
            "-A KIND-MASQ-AGENT -j DROP",
            "COMMIT",
            "*nat",
            ":POSTROUTING ACCEPT [0:0]",
            ":KIND-MASQ-AGENT - [0:0]",
            jump_rule(),
            "-A POSTROUTING -s 172.17.0.0/16 -j MASQUERADE",
            *rules,
            "COMMIT",
        ]
    )
    assert parse_nat(4, saved) == MasqObserved(4, masq, 1, (1,))
    assert parse_nat(4, "*nat\nCOMMIT\n") == MasqObserved(4, None, 0)


def test_duplicate_jumps_keep_the_first_and_rollback_puts_them_back_where_they_were() -> None:
    desired = desired_state()
    observed = replace(converged(desired), masq=(MasqObserved(4, desired.masq[0], 3, (2, 4, 5)),))
    (write,) = diff(desired, observed, conflist_path=PATH).changes
    assert isinstance(write, WriteMasquerade)
    assert (write.hooks, write.want_hooks, write.want_at) == (3, 1, (2,))
    spec = jump_rule().removeprefix("-A POSTROUTING ")
    delete_all = [f"-D POSTROUTING {spec}"] * 3
    assert fix_payload(None, 3, 1, (2,)).splitlines()[1:-1] == [
        *delete_all,
        f"-I POSTROUTING 2 {spec}",
    ]
    undo = write.undo()
    assert isinstance(undo, WriteMasquerade) and (undo.hooks, undo.want_hooks) == (1, 3)
    payload = fix_payload(undo.masq, undo.hooks, undo.want_hooks, undo.want_at)
    assert payload.splitlines()[1:-1] == [
        f"-D POSTROUTING {spec}",
        *(f"-I POSTROUTING {at} {spec}" for at in (2, 4, 5)),
    ]


def test_conflist_change_is_shown_field_by_field() -> None:
    desired = desired_state()
    node = replace(
        converged(desired), conflist=render_conflist(desired).replace('"mtu": 1500', '"mtu": 1450')
    )
    plan = diff(desired, node, conflist_path=PATH)
    assert "      plugins[0].mtu: 1450 -> 1500" in format_plan(plan).splitlines()
    broken = diff(desired, replace(node, conflist="{not json"), conflist_path=PATH)
    assert "not valid JSON; replaced whole" in format_plan(broken)


def test_plan_json_is_valid_under_its_schema() -> None:
    desired = desired_state()
    node = empty_node(desired)
    node = replace(
        node, routes=(desired.routes[0]._replace(gateway=ip_address("198.18.0.77"), proto=3),)
    )
    document = plan_to_json(diff(desired, node, conflist_path=PATH), fingerprint="0" * 64)
    Draft202012Validator(load_schema("plan.schema.json")).validate(document)
    assert document["summary"] == {"add": 5, "change": 1, "delete": 0}
    assert len(document["conflicts"]) == 1


def test_a_lower_metric_foreign_route_shadows_and_adopt_deletes_it() -> None:
    desired = compile_desired(load(cluster_doc(3, v6=True)), "node-0000", HostFacts())
    node = converged(desired)
    mine = desired.routes[0]
    cases = [  # (foreign route, a conflict?)
        (mine._replace(metric=mine.metric + 5, proto=3, gateway=ip_address("198.18.0.77")), False),
        (mine._replace(proto=3, special=RouteSpecial(tos=0x10)), False),  # another key
        (mine._replace(proto=3, special=RouteSpecial(tos=0x10), metric=0), False),
    ]
    v6 = next(r for r in desired.routes if r.dst.version == 6)
    lower = v6._replace(metric=256, proto=3, gateway=ip_address("2001:db8::77"), peer="")
    cases += [(lower, True), (lower._replace(gateway=v6.gateway), False)]  # the same target
    for foreign, shadows in cases:
        observed = replace(node, routes=tuple(sorted((*node.routes, foreign), key=ROUTE_ORDER)))
        plan = diff(desired, observed, conflist_path=PATH)
        assert plan.empty
        assert plan.conflicts == ((Conflict(v6, foreign, shadows=True),) if shadows else ())
        if shadows:
            assert "shadows kindplan's" in format_plan(plan)
            document = plan_to_json(plan, fingerprint="0" * 64)
            Draft202012Validator(load_schema("plan.schema.json")).validate(document)
            assert document["conflicts"][0]["shadows"] is True
            adopted = diff(desired, observed, conflist_path=PATH, adopt=True)
            assert adopted.changes == (DelRoute(foreign),) and not adopted.conflicts


@settings(max_examples=60, deadline=None)
@given(
    nodes=st.integers(min_value=1, max_value=30),
    drop=st.sets(st.integers(min_value=0, max_value=40)),
    stale=st.integers(min_value=0, max_value=3),
)
def test_applying_the_plan_reaches_the_desired_state(
    nodes: int, drop: set[int], stale: int
) -> None:
    """From any partly converged node, simulating the plan leaves nothing to do."""
    desired = desired_state(nodes)
    node = converged(desired)
    routes = [r for i, r in enumerate(node.routes) if i not in drop]
    routes += [
        Route(ip_network(f"10.250.{i}.0/24"), "eth0", ip_address("198.18.0.9"))
        for i in range(stale)
    ]
    node = replace(node, routes=tuple(routes))
    after = simulate(node, diff(desired, node, conflist_path=PATH))
    assert diff(desired, after, conflist_path=PATH).empty
    assert diff(desired, converged(desired), conflist_path=PATH).empty


def test_correct_foreign_peer_route_is_left_but_named() -> None:
    """A node that ran classic kindnetd: its routes work; the plan says they are not ours."""
    desired = desired_state()
    peer = next(r for r in desired.routes if r.gateway is not None)
    node = converged(desired)
    kindnetd = peer._replace(proto=3)
    node = replace(node, routes=tuple(kindnetd if r.key == peer.key else r for r in node.routes))
    plan = diff(desired, node, conflist_path=PATH)
    assert plan.empty
    assert plan.warnings == (
        "correct but not owned by kindplan, --adopt takes them over: "
        f"{peer.dst} (peer node-0001, proto 3 -> 75)",
    )
    assert diff(desired, node, conflist_path=PATH, adopt=True).changes == (
        ReplaceRoute(peer, kindnetd),
    )


def test_a_joining_node_routes_its_peers_and_waits_with_its_conflist() -> None:
    from kindplan.core.render import render_files
    from kindplan.inputs.kinds import parse_snapshot

    def item(name: str, cidrs: list[str], ip: str) -> dict[str, object]:
        addresses = [{"type": "InternalIP", "address": ip}]
        return {
            "metadata": {"name": name},
            "spec": {"podCIDRs": cidrs},
            "status": {"addresses": addresses},
        }

    doc = {
        "kind": "NodeList",
        "items": [
            item("a", ["10.244.0.0/24"], "198.18.0.10"),
            item("b", ["10.244.1.0/24"], "198.18.0.11"),
            item("joining", [], "198.18.0.12"),
        ],
    }
    snapshot = parse_snapshot(json.dumps(doc).encode(), pod_subnets=["10.244.0.0/16"]).snapshot
    desired = compile_desired(snapshot, "joining", HostFacts())
    assert [(str(r.dst), str(r.gateway)) for r in desired.routes] == [
        ("10.244.0.0/24", "198.18.0.10"),
        ("10.244.1.0/24", "198.18.0.11"),
    ]
    plan = diff(desired, empty_node(desired), conflist_path=PATH)
    assert [type(c) for c in plan.changes] == [SetSysctl, AddRoute, AddRoute, WriteMasquerade]
    assert plan.warnings == (
        f"node joining has no PodCIDR yet: {PATH} waits for one (its peers are routed meanwhile)",
    )
    assert "10-kindnet.conflist" not in render_files(desired)


@given(st.lists(st.sampled_from([75, 2, 4, 186]), max_size=12))
def test_owned_and_foreign_routes_split_routes_by_owned_by_in_order(protos: list[int]) -> None:
    from kindplan.core.routes import Route, foreign_routes, owned_routes

    routes = [Route(ip_network(f"10.9.{i}.0/24"), "eth0", proto=p) for i, p in enumerate(protos)]
    assert owned_routes(routes, 75) == [r for r in routes if r.owned_by(75)]
    assert foreign_routes(routes, 75) == [r for r in routes if not r.owned_by(75)]
    assert all(r.owned_by(75) == (r.proto == 75) for r in routes)


def test_adopt_never_removes_a_foreign_route_to_a_listed_nodes_podcidr() -> None:
    """#21: the node's own PodCIDR, and a peer kindplan does not route (off-link, or without an
    InternalIP yet): a foreign route there may be the only way to it, not a leftover."""
    desired = desired_state()
    own, unrouted = ip_network("10.244.0.0/24"), ip_network("10.244.2.0/24")
    desired = replace(desired, routes=tuple(r for r in desired.routes if r.dst != unrouted))
    gateway = ip_address("198.18.0.99")
    kept = (
        Route(own, "eth0", gateway, proto=3),
        Route(unrouted, "eth0", gateway, proto=3),
    )
    departed = Route(ip_network("10.244.99.0/24"), "eth0", gateway, proto=3)
    node = converged(desired)
    node = replace(node, routes=(*node.routes, *kept, departed))
    adopted = diff(desired, node, conflist_path=PATH, adopt=True)
    assert [c for c in adopted.changes if isinstance(c, DelRoute)] == [DelRoute(departed)]
    assert all(str(r.dst) not in " ".join(adopted.warnings) for r in kept)
