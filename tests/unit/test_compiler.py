"""compile_desired and the renderers on small hand-made snapshots (documentation ranges)."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

import pytest
from builders import cluster_doc, load
from hypothesis import given, settings
from hypothesis import strategies as st

from kindplan.core.addresses import format_ip, format_net
from kindplan.core.compiler import compile_desired
from kindplan.core.masq.iptables import fix_payload, jump_rule, restore_payload, rule_lines
from kindplan.core.model import HostFacts
from kindplan.core.render import render_conflist, render_files, render_route_batch
from kindplan.core.routes import Route, RouteSpecial, route_command
from kindplan.errors import InvalidInputError


def with_pod(doc: dict, node: str, ips: list[str], veth: str, name: str = "web") -> dict:
    doc.setdefault("pods", []).append(
        {"namespace": "default", "name": name, "node": node, "ips": ips, "hostInterface": veth}
    )
    return doc


def test_peer_routes_ipv4() -> None:
    desired = compile_desired(load(cluster_doc(3)), "node-0002", HostFacts(uplink="ens5"))
    assert desired.routes == (
        Route(ip_network("10.244.0.0/24"), "ens5", ip_address("198.18.0.10"), peer="node-0000"),
        Route(ip_network("10.244.1.0/24"), "ens5", ip_address("198.18.0.11"), peer="node-0001"),
    )
    assert desired.addresses == ()
    assert [s.name for s in desired.sysctls] == ["net.ipv4.ip_forward"]


def test_dual_stack_routes_use_the_gateway_of_their_family() -> None:
    desired = compile_desired(
        load(cluster_doc(2, v6=True)), "node-0000", HostFacts(), route_proto=99
    )
    assert [(str(r.dst), str(r.gateway), r.metric, r.proto) for r in desired.routes] == [
        ("10.244.1.0/24", "198.18.0.11", 0, 99),
        ("fd00:10:244:1::/64", "2001:db8:ffff::b", 1024, 99),
    ]
    assert [s.name for s in desired.sysctls] == [
        "net.ipv4.ip_forward",
        "net.ipv6.conf.all.forwarding",
    ]


def test_local_pods_get_gateway_address_and_host_routes_like_ptp() -> None:
    doc = with_pod(
        cluster_doc(2, v6=True), "node-0001", ["10.244.1.7", "fd00:10:244:1::7"], "veth1"
    )
    doc = with_pod(doc, "node-0000", ["10.244.0.9"], "veth9", name="elsewhere")
    desired = compile_desired(load(doc), "node-0001", HostFacts())
    assert [(a.ifname, str(a.address), a.prefixlen) for a in desired.addresses] == [
        ("veth1", "10.244.1.1", 32),
        ("veth1", "fd00:10:244:1::1", 128),
    ]
    pod_routes = [r for r in desired.routes if r.ifname == "veth1"]
    assert [(str(r.dst), r.gateway, r.scope, r.metric) for r in pod_routes] == [
        ("10.244.1.7/32", None, "host", 0),
        ("fd00:10:244:1::7/128", None, "universe", 1024),
    ]
    assert all(r.ifname != "veth9" for r in desired.routes), "another node's pod is not ours"


def test_unknown_node_is_invalid_input() -> None:
    with pytest.raises(
        InvalidInputError,
        match=r"--node: no node named 'ghost' in the snapshot \(node-0000, node-0001\)",
    ):
        compile_desired(load(cluster_doc(2)), "ghost", HostFacts())


def test_conflist_fields() -> None:
    doc = cluster_doc(2, v6=True, mtu=1400, cni={"networkName": "kn", "ipamDataDir": '/x/"q"'})
    snapshot = load(doc)
    conf = json.loads(render_conflist(compile_desired(snapshot, "node-0001", HostFacts(mtu=1450))))
    ptp, portmap = conf["plugins"]
    assert (conf["name"], conf["cniVersion"]) == ("kn", "0.3.1")
    assert (ptp["type"], ptp["ipMasq"], ptp["mtu"]) == ("ptp", False, 1450)
    assert ptp["ipam"] == {
        "type": "host-local",
        "dataDir": '/x/"q"',
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
        "ranges": [[{"subnet": "10.244.1.0/24"}], [{"subnet": "fd00:10:244:1::/64"}]],
    }
    assert portmap == {"type": "portmap", "capabilities": {"portMappings": True}}


def test_ipv4_cluster_has_no_ipv6_anything() -> None:
    files = render_files(compile_desired(load(cluster_doc(3)), "node-0000", HostFacts()))
    assert sorted(files) == ["10-kindnet.conflist", "iptables.rules", "routes.batch"]
    assert "::/0" not in files["10-kindnet.conflist"]


def test_masq_chain_order_and_payload() -> None:
    doc = cluster_doc(
        2, v6=True, nonMasqueradeCIDRs=["203.0.113.0/24", "2001:db8:5::/48", "10.244.0.0/16"]
    )
    desired = compile_desired(load(doc), "node-0000", HostFacts())
    v4, v6 = desired.masq
    assert [str(c) for c in v4.exempt] == [
        "10.244.0.0/16",
        "203.0.113.0/24",
    ]  # deduplicated
    assert [str(c) for c in v6.exempt] == ["fd00:10:244::/48", "2001:db8:5::/48"]
    rules = rule_lines(v4)
    assert rules[0].startswith("-A KIND-MASQ-AGENT -d 10.244.0.0/16 ") and rules[0].endswith(
        "-j RETURN"
    )
    assert rules[-1].endswith("-j MASQUERADE") and len(rules) == 3
    payload = fix_payload(v4, jumps=0, want_jumps=0)
    assert payload.splitlines() == ["*nat", ":KIND-MASQ-AGENT - [0:0]", *rules, "COMMIT"]
    assert jump_rule() in restore_payload(v4)
    assert "-m addrtype ! --dst-type LOCAL" in jump_rule()


def test_route_batch_lines() -> None:
    doc = with_pod(cluster_doc(2), "node-0001", ["10.244.1.7"], "veth1")
    batch = render_route_batch(compile_desired(load(doc), "node-0001", HostFacts())).splitlines()
    assert batch[1:] == [
        "address replace 10.244.1.1/32 dev veth1",
        "route replace 10.244.0.0/24 via 198.18.0.10 dev eth0 proto 75",
        "route replace 10.244.1.7/32 dev veth1 scope host proto 75",
    ]
    v6 = Route(ip_network("fd00::/64"), "eth0", ip_address("2001:db8::1"), metric=1024)
    assert (
        route_command(v6) == "route replace fd00::/64 via 2001:db8::1 dev eth0 proto 75 metric 1024"
    )


def test_five_thousand_node_dual_stack_snapshot_compiles_for_one_node() -> None:
    """The size of the largest Kubernetes clusters; timing lives in bench/, not here."""
    snapshot = load(cluster_doc(5000, v6=True))
    desired = compile_desired(snapshot, "node-2500", HostFacts())
    assert len(desired.routes) == 2 * 4999
    batch = render_route_batch(desired)
    assert batch.count(" via ") == 2 * 4999
    assert "route replace 10.19.135.0/24 via 198.18.19.145 dev eth0 proto 75" in batch  # node-4999
    assert "10.9.196.0/24" not in batch, "no route to the node's own PodCIDR"


@settings(max_examples=2000, deadline=None)
@given(st.integers(min_value=0, max_value=2**128 - 1), st.integers(min_value=0, max_value=128))
def test_fast_ip_formatting_is_ipaddress_formatting(number: int, prefixlen: int) -> None:
    """The renderers' inet_ntop/inet_ntoa shortcut must print exactly what ipaddress prints."""
    addr = IPv6Address(number)
    assert format_ip(addr) == str(addr)
    net = IPv6Network((number >> (128 - prefixlen) << (128 - prefixlen), prefixlen))
    assert format_net(net) == str(net)
    for special in ("::", "::1", "::ffff:1.2.3.4", "::1.2.3.4", "1::", "1:0:0:1::1", "0:0:1::"):
        assert format_ip(IPv6Address(special)) == str(IPv6Address(special))
    v4 = IPv4Address(number >> 96)
    assert format_ip(v4) == str(v4)
    length = min(prefixlen, 32)
    v4_net = IPv4Network((int(v4) >> (32 - length) << (32 - length), length))
    assert format_net(v4_net) == str(v4_net)


def test_off_link_peers_are_those_on_none_of_the_uplinks_prefixes_of_their_family() -> None:
    from kindplan.core.model import Link
    from kindplan.node.observe import off_link_peers

    snapshot = load(cluster_doc(4, v6=True))
    node = snapshot.nodes[0]
    both = ((ip_address("198.18.0.10"), 30), (ip_address("2001:db8:ffff::a"), 64))
    uplink = Link("eth0", 2, 1500, True, both)  # 198.18.0.8/30 holds node-0001 (.11) only
    assert off_link_peers(snapshot, node, uplink) == [
        "node-0002 (198.18.0.12)",
        "node-0003 (198.18.0.13)",
    ]
    v4_only = Link("eth0", 2, 1500, True, ((ip_address("198.18.0.10"), 15),))
    assert off_link_peers(snapshot, node, v4_only) == [
        f"node-000{i} (2001:db8:ffff::{c})" for i, c in ((1, "b"), (2, "c"), (3, "d"))
    ]


def test_a_routes_key_is_derived_from_its_fields_also_in_a_copy() -> None:
    route = Route(ip_network("10.244.1.0/24"), "eth0", ip_address("192.0.2.1"), peer="a")
    assert route.key == (254, 4, int(ip_address("10.244.1.0")), 24, 0)
    moved = route._replace(dst=ip_network("fd00::/64"), metric=1024)
    assert moved.key == (254, 6, int(ip_address("fd00::")), 64, 1024)
    tos = route._replace(special=RouteSpecial(tos=0x10))
    assert tos.key == (254, 4, int(ip_address("10.244.1.0")), 24, 0x10 << 32) and tos.metric == 0
    assert route._replace(special=RouteSpecial()).special is None
    assert moved.gateway == route.gateway and moved.peer == "a"
    assert route == route._replace() and route != route._replace(peer="b")
    with pytest.raises(AttributeError):
        route.metric = 5  # type: ignore[misc]
