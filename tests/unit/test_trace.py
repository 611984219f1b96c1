"""trace: the walk on the desired state (pure), its text, JSON and SVG, and the trace command."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import ChainMap
from dataclasses import replace
from ipaddress import ip_address, ip_network
from pathlib import Path
from xml.etree import ElementTree

import builders
import jsonschema
import pytest
import yaml

from kindplan.core.compiler import compile_desired
from kindplan.core.model import HostFacts, HostPort, Link, ObservedState, Sysctl
from kindplan.core.routes import Route
from kindplan.core.trace import Trace, lookup, trace_packet
from kindplan.core.tracesvg import render_svg
from kindplan.core.traceview import format_trace, trace_to_json
from kindplan.core.traceworld import Namespace, TableRoute, Uplink, World, build_world, resolve
from kindplan.errors import InvalidInputError, UsageError
from kindplan.inputs.kinds import parse_snapshot
from kindplan.node.cnicache import parse_cache_entry

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "fixtures" / "seed-lab" / "snapshot.yaml"
DUAL = ROOT / "fixtures" / "dual-stack" / "snapshot.yaml"
SCHEMA = json.loads((ROOT / "schemas" / "trace.schema.json").read_text())
SEED_UPLINK = Uplink("eth0", (ip_network("172.18.0.0/16"),), (ip_address("172.18.0.1"),))


def load(path: Path):  # type: ignore[no-untyped-def]
    return parse_snapshot(path.read_bytes(), source=str(path)).snapshot


def walk(
    snapshot_path: Path = SEED,
    source: str = "web-1",
    target: str = "web-0",
    version: int = 4,
    uplink: Uplink = SEED_UPLINK,
    *,
    port: int | None = None,
    world: World | None = None,  # a prepared world instead of one built from the two above
) -> Trace:
    snap = load(snapshot_path)
    world = world or build_world(snap, uplink)
    return trace_packet(
        world,
        resolve(world.snapshot, source, "--from"),
        resolve(world.snapshot, target, "--to"),
        version,
        port=port,
    )


def hops(trace: Trace) -> list[tuple[str, str | None, str, str | None, str | None]]:
    """(namespace, iif, type, dev, gateway) of every hop."""
    return [
        (h.namespace.label, h.iif, h.type, h.dev, str(h.gateway) if h.gateway else None)
        for h in trace.hops
    ]


def test_the_guides_walk_pod_to_pod_across_nodes() -> None:
    trace = walk()
    assert hops(trace) == [
        ("pod default/web-1", None, "unicast", "eth0", "10.244.2.1"),
        ("node k8s-guide-worker2", "vetha1079faf", "unicast", "eth0", "172.18.0.11"),
        ("node k8s-guide-worker", "eth0", "unicast", "veth0d6e2a41", None),
        ("pod default/web-0", "eth0", "local", "lo", None),
    ]
    routes = [h.route and (str(h.route.route.dst), h.route.origin) for h in trace.hops]
    assert routes == [
        ("0.0.0.0/0", "ptp"),
        ("10.244.1.0/24", "kindplan"),
        ("10.244.1.2/32", "kindplan"),
        None,
    ]
    # Inside the cluster the chain's RETURN keeps the pod's source.
    assert [n.kind for n in trace.hops[1].nat] == ["return"]
    assert "-d 10.244.0.0/16" in trace.hops[1].nat[0].rule
    assert (trace.end.kind, str(trace.end.src)) == ("delivered", "10.244.2.8")


def test_pod_to_pod_on_one_node_uses_the_pods_subnet_route_then_the_host_route() -> None:
    trace = walk(target="web-2")
    assert hops(trace) == [
        ("pod default/web-1", None, "unicast", "eth0", "10.244.2.1"),
        ("node k8s-guide-worker2", "vetha1079faf", "unicast", "veth4b2c9d10", None),
        ("pod default/web-2", "eth0", "local", "lo", None),
    ]
    assert str(trace.hops[0].route.route.dst) == "10.244.2.0/24"  # type: ignore[union-attr]


def test_pod_to_outside_is_masqueraded_to_the_nodes_ip() -> None:
    trace = walk(target="203.0.113.10")
    node_hop = trace.hops[1]
    assert (node_hop.dev, str(node_hop.gateway), node_hop.route.origin) == (  # type: ignore[union-attr]
        "eth0",
        "172.18.0.1",
        "node",
    )
    assert [(n.kind, n.before, n.after) for n in node_hop.nat] == [
        ("snat", "10.244.2.8", "172.18.0.12")
    ]
    assert node_hop.nat[0].rule.endswith("-j MASQUERADE")
    assert str(node_hop.src) == "10.244.2.8"  # the lookup sees the packet before SNAT
    assert (trace.end.kind, str(trace.end.src)) == ("leaves", "172.18.0.12")


@pytest.mark.parametrize("target", ["127.0.0.1", "127.9.9.9"])
def test_loopback_from_a_pod_stays_in_the_pod(target: str) -> None:
    """#21: 127.0.0.0/8 is in every namespace's local table (a pod's too): nothing leaves."""
    trace = walk(target=target)
    assert len(trace.hops) == 1 and trace.hops[0].type == "local"
    assert (trace.end.kind, trace.end.at) == ("delivered", "pod default/web-1")


def test_an_unrouted_pod_subnet_address_leaves_unmasqueraded() -> None:
    """10.244.9.9 has no node: the default route takes it, and the chain's RETURN matches."""
    trace = walk(target="10.244.9.9")
    assert [n.kind for n in trace.hops[1].nat] == ["return"]
    assert (trace.end.kind, str(trace.end.src)) == ("leaves", "10.244.2.8")


def test_a_non_masquerade_cidr_returns_ipv6_too() -> None:
    trace = walk(DUAL, "web-1", "2001:db8:100::7", 6, Uplink())
    rule = trace.hops[1].nat[0]
    assert rule.kind == "return" and "-d 2001:db8:100::/48" in rule.rule
    assert trace.hops[1].route.origin == "assumed"  # type: ignore[union-attr]
    assert trace.hops[1].gateway is None  # no gateway is made up
    assert "default dev eth0 metric 1024  (assumed: not in the snapshot)" in format_trace(trace)


def test_dual_stack_pod_to_node_and_node_to_pod() -> None:
    to_node = walk(DUAL, "web-1", "dual-worker2", 6, Uplink())
    assert hops(to_node) == [
        ("pod default/web-1", None, "unicast", "eth0", "fd00:10:244:1::1"),
        ("node dual-worker", "veth8e1d2c33", "unicast", "eth0", None),
        ("node dual-worker2", "eth0", "local", "lo", None),
    ]
    # A node's address is outside the pod subnets: masqueraded on the way (kindnet does so).
    assert str(to_node.end.src) == "fc00:f853:ccd:e793::3"
    to_pod = walk(DUAL, "dual-control-plane", "web-2", 4, Uplink())
    assert hops(to_pod)[0][2:] == ("unicast", "eth0", "172.18.0.3")
    assert (to_pod.end.kind, str(to_pod.end.src)) == ("delivered", "172.18.0.2")


def with_host_port(path: Path = SEED) -> World:
    snap = load(path)
    pods = tuple(
        replace(p, host_ports=(HostPort(8080, 80),)) if p.name == "web-1" else p for p in snap.pods
    )
    return build_world(replace(snap, pods=pods), SEED_UPLINK)


def test_host_port_dnat_from_outside_keeps_the_source() -> None:
    trace = walk(
        source="203.0.113.10", target="k8s-guide-worker2", port=8080, world=with_host_port()
    )
    first = trace.hops[0]
    assert (first.namespace.label, first.iif) == ("node k8s-guide-worker2", "eth0")
    assert next((n.kind, n.before, n.after) for n in first.nat) == (
        "dnat",
        "172.18.0.12:8080",
        "10.244.2.8:80",
    )
    assert (first.dev, str(first.dst), first.port) == ("vetha1079faf", "10.244.2.8", 80)
    assert (trace.end.kind, trace.end.at, str(trace.end.src)) == (
        "delivered",
        "pod default/web-1",
        "203.0.113.10",
    )
    assert trace.port == 8080 and trace.end.port == 80


def test_host_port_from_a_pod_of_the_same_node_is_masqueraded_by_portmap() -> None:
    trace = walk(source="web-2", target="k8s-guide-worker2", port=8080, world=with_host_port())
    kinds = [(n.kind, n.chain.split()[0]) for n in trace.hops[1].nat]
    assert kinds == [("dnat", "PREROUTING"), ("snat", "POSTROUTING")]
    assert str(trace.end.src) == "10.244.2.1"  # the address of the out veth: the gateway


def test_host_port_needs_the_right_port_and_protocol() -> None:
    world = with_host_port()
    assert walk(source="web-0", target="k8s-guide-worker2", port=8081, world=world).end.at == (
        "node k8s-guide-worker2"
    )
    snap = world.snapshot
    udp = trace_packet(
        world,
        resolve(snap, "web-0", "f"),
        resolve(snap, "k8s-guide-worker2", "t"),
        4,
        port=8080,
        proto="udp",
    )
    assert not any(n.kind == "dnat" for h in udp.hops for n in h.nat)


def test_an_off_link_peer_is_dropped_with_why() -> None:
    """A node network that leaves worker out: the kernel refuses its peer route."""
    uplink = Uplink("eth0", (ip_network("172.18.0.12/31"),))
    trace = walk(target="web-0", uplink=Uplink("eth0", uplink.networks))
    assert trace.end.kind == "leaves"  # the default route takes it instead
    assert trace.end.why.endswith(
        "(off-link peer: 10.244.1.0/24 via 172.18.0.11 dev eth0 proto 75 cannot exist: gateway "
        "172.18.0.11 is not on-link from eth0 (the kernel refuses the route; kindnet needs every "
        "node on one link))"
    )
    assert any("not on-link" in note for note in trace.hops[1].notes)
    no_default = build_world(load(SEED), uplink)
    node = no_default.namespaces["node", "k8s-guide-worker2"]
    routes = tuple(r for r in node.routes if r.route.dst.prefixlen > 0)
    spaces = ChainMap(
        {("node", "k8s-guide-worker2"): replace(node, routes=routes)}, no_default.namespaces
    )
    trace = walk(world=replace(no_default, namespaces=spaces))
    assert trace.end.kind == "dropped"
    assert "no route to 10.244.1.2" in trace.end.why and "not on-link" in trace.end.why


def test_lookup_is_longest_prefix_then_lowest_metric() -> None:
    def r(dst: str, gw: str, metric: int) -> TableRoute:
        return TableRoute(Route(ip_network(dst), "eth0", ip_address(gw), metric=metric), "observed")

    link = TableRoute(Route(ip_network("192.0.2.0/24"), "eth0", None, "link"), "observed")
    ns = Namespace(
        "node",
        "n",
        "n",
        ((ip_address("192.0.2.2"), "eth0"),),
        (
            link,
            r("0.0.0.0/0", "192.0.2.1", 0),
            r("10.0.0.0/8", "192.0.2.5", 20),
            r("10.0.0.0/8", "192.0.2.6", 10),
            r("10.1.0.0/16", "192.0.2.7", 30),
        ),
    )
    assert lookup(ns, ip_address("10.1.2.3"))[1].route.gateway == ip_address("192.0.2.7")  # type: ignore[union-attr]
    assert lookup(ns, ip_address("10.2.2.3"))[1].route.gateway == ip_address("192.0.2.6")  # type: ignore[union-attr]
    assert lookup(ns, ip_address("8.8.8.8"))[1].route.gateway == ip_address("192.0.2.1")  # type: ignore[union-attr]
    assert lookup(ns, ip_address("192.0.2.2"))[0] == "local"
    assert lookup(ns, ip_address("2001:db8::1"))[0] == "unreachable"


def observed_worker2(drop_peer: bool) -> ObservedState:
    """k8s-guide-worker2 as a kernel would show it after kindplan, optionally less one route."""
    snap = load(SEED)
    world = build_world(snap, SEED_UPLINK)
    desired = world.namespaces["node", "k8s-guide-worker2"]
    routes = tuple(
        r.route for r in desired.routes if not (drop_peer and str(r.route.dst) == "10.244.1.0/24")
    )
    veths = sorted({dev for _, dev in desired.local if dev != "eth0"})
    links = (
        Link("eth0", 2, 1500, True, ((ip_address("172.18.0.12"), 16),)),
        *tuple(
            Link(v, 3 + i, 1500, True, ((ip_address("10.244.2.1"), 32),))
            for i, v in enumerate(veths)
        ),
    )
    chain = desired.masq[0]
    return ObservedState(
        links,
        routes,
        (Sysctl("net.ipv4.ip_forward", "1"),),
        (replace(chain, variant="nft"),),  # the namespace's own: the value, hooked once
        None,
    )


def test_observed_node_without_its_peer_route_shows_where_the_walk_breaks() -> None:
    snap = load(SEED)
    good = build_world(snap, SEED_UPLINK, {"k8s-guide-worker2": observed_worker2(False)})
    assert walk(world=good).end.kind == "delivered"
    assert all(h.drift is None for h in walk(world=good).hops)
    broken = build_world(snap, SEED_UPLINK, {"k8s-guide-worker2": observed_worker2(True)})
    trace = walk(world=broken)
    node_hop = trace.hops[1]
    assert node_hop.namespace.observed
    assert node_hop.drift == (
        "desired: 10.244.1.0/24 via 172.18.0.11 dev eth0 proto 75; "
        "observed: default via 172.18.0.1 dev eth0"
    )
    assert trace.end.kind == "leaves"
    assert "DRIFT  desired: 10.244.1.0/24" in format_trace(trace)


def test_observed_node_that_does_not_forward_drops() -> None:
    state = replace(observed_worker2(False), sysctls=(Sysctl("net.ipv4.ip_forward", "0"),))
    world = build_world(load(SEED), SEED_UPLINK, {"k8s-guide-worker2": state})
    trace = walk(world=world)
    assert (trace.end.kind, trace.end.why) == (
        "dropped",
        "node k8s-guide-worker2 does not forward IPv4",
    )


def test_observed_node_without_masquerade_jump_keeps_the_source() -> None:
    state = observed_worker2(False)
    state = replace(state, masq=(replace(state.masq[0], hooks=0),))
    world = build_world(load(SEED), SEED_UPLINK, {"k8s-guide-worker2": state})
    trace = walk(target="203.0.113.10", world=world)
    assert str(trace.end.src) == "10.244.2.8"
    assert any("no POSTROUTING jump" in n for n in trace.hops[1].notes)


def test_outside_to_a_pod_is_dropped_outside() -> None:
    trace = walk(source="203.0.113.10", target="web-1")
    assert (trace.end.kind, trace.hops) == ("dropped", ())


def test_json_is_valid_under_the_schema_and_svg_is_well_formed() -> None:
    traces = [
        walk(),
        walk(target="203.0.113.10"),
        walk(source="203.0.113.10", target="k8s-guide-worker2", port=8080, world=with_host_port()),
        walk(DUAL, "web-1", "dual-control-plane", 6, Uplink()),
    ]
    jsonschema.validate(trace_to_json(traces), SCHEMA)
    svg = render_svg(load(SEED), traces[:1])
    root = ElementTree.fromstring(svg.encode())
    ns = "{http://www.w3.org/2000/svg}"
    texts = [t.text for t in root.iter(f"{ns}text")]
    # The path: one numbered dot per hop, an arrow between each, the end named.
    assert [t for t in texts if t in {"1", "2", "3", "4"}] == ["1", "2", "3", "4"]
    assert len([p for p in root.iter(f"{ns}path") if p.get("marker-end")]) == 3
    assert any(t and t.startswith("DELIVERED at pod default/web-0") for t in texts)
    assert "2. node k8s-guide-worker2: 10.244.1.0/24 via 172.18.0.11 dev eth0 proto 75" in texts


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kindplan.cli", "trace", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_cli_prints_the_walk_and_json_and_svg(tmp_path: Path) -> None:
    text = run(str(SEED), "--from", "web-1", "--to", "web-0", "--node-network", "172.18.0.0/16")
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("IPv4: pod default/web-1 (10.244.2.8) -> pod default/web-0")
    assert "route  10.244.1.0/24 via 172.18.0.11 dev eth0 proto 75" in text.stdout
    svg = tmp_path / "walk.svg"
    out = run(str(DUAL), "--from", "web-1", "--to", "dual-worker2", "--json", "--svg", str(svg))
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    jsonschema.validate(doc, SCHEMA)
    assert [t["family"] for t in doc["traces"]] == ["IPv4", "IPv6"]
    ElementTree.fromstring(svg.read_bytes())


@pytest.mark.parametrize(
    ("ends", "status"),
    [
        (["--from", "web-1", "--to", "web-0"], 0),  # delivered
        (["--from", "web-1", "--to", "203.0.113.10"], 0),  # leaves the cluster: as it should
        (["--from", "203.0.113.10", "--to", "web-1"], 2),  # dropped outside
    ],
)
def test_detailed_exitcode_says_how_the_walk_ended(ends: list[str], status: int) -> None:
    plain = run(str(SEED), *ends)
    detailed = run(str(SEED), *ends, "--detailed-exitcode")
    assert plain.returncode == 0, plain.stderr  # without the flag: 0 whatever the end
    assert (detailed.returncode, detailed.stdout) == (status, plain.stdout)


def test_drift_outranks_a_drop_in_the_detailed_exitcode() -> None:
    """3 (drift) before 2 (dropped): the drift may be why it dropped. The kernel test
    (test_trace_seed) runs it on a real node's observed state."""
    from kindplan.cli.trace import outcome

    delivered, dropped = walk(), walk(source="203.0.113.10", target="web-1")
    drifted_hop = replace(delivered.hops[1], drift="desired: ...; observed: ...")
    drifted = replace(delivered, hops=(delivered.hops[0], drifted_hop, *delivered.hops[2:]))
    assert [outcome(t) for t in ([delivered], [dropped], [drifted], [dropped, drifted])] == [
        0,
        2,
        3,
        3,
    ]


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["--from", "nope", "--to", "web-0"], 64, "error: --from: 'nope' is no pod, node or IP"),
        (["--from", "web-1", "--to", "2001:db8::1"], 64, "share no IP family"),
        (["--from", "web-1", "--to", "web-0", "--proto", "icmp"], 64, "--proto"),
        (["--from", "web-1", "--to", "web-0", "--node", "k8s-guide-worker"], 64, "--netns"),
        (
            ["--from", "web-1", "--to", "web-0", "--node-network", "10.0.0.1/8"],
            64,
            "--node-network",
        ),
    ],
)
def test_cli_bad_input_is_one_line(args: list[str], status: int, message: str) -> None:
    out = run(str(SEED), *args)
    assert out.returncode == status
    assert message in out.stderr and out.stderr.count("\n") == 1, out.stderr
    assert "Traceback" not in out.stderr


def seed_doc(host_ports: list[dict[str, object]]) -> bytes:
    doc = yaml.safe_load(SEED.read_text())
    doc["pods"][0]["hostPorts"] = host_ports
    return json.dumps(doc).encode()


def test_snapshot_pods_may_carry_host_ports() -> None:
    ports = [
        {"hostPort": 8080, "containerPort": 80},
        {"hostPort": 53, "containerPort": 5353, "protocol": "UDP", "hostIP": "172.18.0.12"},
    ]
    snap = parse_snapshot(seed_doc(ports)).snapshot
    pod = next(p for p in snap.pods if p.name == "web-1")
    assert pod.host_ports == (
        HostPort(8080, 80, "tcp", None),
        HostPort(53, 5353, "udp", ip_address("172.18.0.12")),
    )
    # Only trace reads them: the node's desired state is the same with or without.
    plain = load(SEED)
    assert compile_desired(snap, "k8s-guide-worker2", HostFacts()) == compile_desired(
        plain, "k8s-guide-worker2", HostFacts()
    )


@pytest.mark.parametrize(
    ("ports", "message"),
    [
        ([{"hostPort": 8080, "containerPort": 80, "hostIP": "nope"}], "hostPorts[0].hostIP"),
        ([{"hostPort": 0, "containerPort": 80}], "hostPorts"),
        ([{"hostPort": 80, "containerPort": 80, "protocol": "sctp"}], "hostPorts"),
    ],
)
def test_bad_host_ports_are_invalid_input(ports: list[dict[str, object]], message: str) -> None:
    with pytest.raises(InvalidInputError) as e:
        parse_snapshot(seed_doc(ports))
    assert message in str(e.value.problems[0])


def test_cni_cache_entries_give_host_ports() -> None:
    entry = {
        "kind": "cniCacheV1",
        "networkName": "kindnet",
        "containerId": "c1",
        "cniArgs": [["K8S_POD_NAMESPACE", "default"], ["K8S_POD_NAME", "web-1"]],
        "capabilityArgs": {
            "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
        },
        "result": {
            "interfaces": [{"name": "veth1"}, {"name": "eth0", "sandbox": "/run/netns/x"}],
            "ips": [{"address": "10.244.2.8/24"}],
        },
    }
    pod = parse_cache_entry(json.dumps(entry).encode(), "k8s-guide-worker2", "kindnet")
    assert pod is not None and pod.host_ports == (HostPort(8080, 80, "tcp", None),)
    del entry["capabilityArgs"]
    pod = parse_cache_entry(json.dumps(entry).encode(), "k8s-guide-worker2", "kindnet")
    assert pod is not None and pod.host_ports == ()


def test_a_walk_compiles_only_the_nodes_it_visits() -> None:
    """Compiling a node is a pass over every peer: all 1,000 nodes took seconds, the path ms."""
    snap = builders.load(builders.cluster_doc(1000))
    world = build_world(snap, Uplink())
    trace = trace_packet(world, resolve(snap, "node-0001", "f"), resolve(snap, "node-0500", "t"), 4)
    assert trace.end.kind == "delivered"
    made = world.desired_nodes._made  # type: ignore[attr-defined]
    assert sorted(made) == ["node-0001", "node-0500"]


def test_a_default_gateway_without_a_node_network_is_on_the_assumed_one() -> None:
    trace = walk(target="203.0.113.10", uplink=Uplink("eth0", (), (ip_address("172.18.0.1"),)))
    assert (trace.end.kind, str(trace.hops[1].gateway)) == ("leaves", "172.18.0.1")
    connected = [r.route for r in trace.hops[1].namespace.routes if r.route.scope == "link"]
    assert [str(r.dst) for r in connected] == ["172.18.0.0/28"]


def test_an_unlisted_pod_address_is_no_source() -> None:
    """An address in a node's PodCIDR that no listed pod has cannot start a walk (it would read
    as a host outside the cluster); as a destination it is walked as the nodes would route it."""
    snap = load(SEED)
    with pytest.raises(UsageError) as e:  # a name on the command line: exit 64
        resolve(snap, "10.244.1.5", "--from")
    assert str(e.value) == (
        "--from: 10.244.1.5 is in node k8s-guide-worker's PodCIDR 10.244.1.0/24 but no pod of "
        "the snapshot has it: name a pod, or list the node's pods (pods:, or --cni-cache-dir)"
    )
    assert resolve(snap, "10.244.1.5", "--to").kind == "outside"
