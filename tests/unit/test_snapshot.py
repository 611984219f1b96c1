"""Loading and checking snapshots: every meaning check names the place and the problem."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from kindplan.errors import InvalidInputError
from kindplan.inputs.kinds import parse_snapshot

Doc = dict[str, Any]


def base() -> Doc:
    return {
        "apiVersion": "kindplan/v1",
        "kind": "ClusterSnapshot",
        "cluster": {"podSubnets": ["10.244.0.0/16", "fd00:10:244::/56"]},
        "nodes": [
            {
                "name": "a",
                "internalIPs": ["192.0.2.10", "2001:db8::10"],
                "podCIDRs": ["10.244.0.0/24", "fd00:10:244::/64"],
            },
            {
                "name": "b",
                "internalIPs": ["192.0.2.11", "2001:db8::11"],
                "podCIDRs": ["10.244.1.0/24", "fd00:10:244:1::/64"],
            },
        ],
        "pods": [
            {
                "namespace": "default",
                "name": "web",
                "node": "b",
                "ips": ["10.244.1.5", "fd00:10:244:1::5"],
                "hostInterface": "veth01",
            },
        ],
    }


def problems_of(doc: Doc) -> list[str]:
    with pytest.raises(InvalidInputError) as info:
        parse_snapshot(json.dumps(doc).encode(), source="snap.json")
    return [str(p) for p in info.value.problems]


def mutate(fn: Callable[[Doc], None]) -> Doc:
    doc = copy.deepcopy(base())
    fn(doc)
    return doc


def test_base_is_valid() -> None:
    snapshot = parse_snapshot(json.dumps(base()).encode()).snapshot
    assert [n.name for n in snapshot.nodes] == ["a", "b"]
    assert snapshot.families == (4, 6)
    assert [str(ip) for ip in snapshot.pods[0].ips] == ["10.244.1.5", "fd00:10:244:1::5"]


def _set(path: str, value: Any) -> Callable[[Doc], None]:
    """A mutation that sets doc[path] (dotted, with [i]) to value."""

    def apply(doc: Doc) -> None:
        keys = [
            int(k) if k.isdigit() else k for k in path.replace("[", ".").replace("]", "").split(".")
        ]
        target = doc
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return apply


MEANING_CASES = [
    (
        "malformed CIDR",
        _set("nodes[0].podCIDRs[0]", "10.244.0/24"),
        "nodes[0].podCIDRs[0]: '10.244.0/24' is not a CIDR",
    ),
    (
        "CIDR without prefix",
        _set("cluster.podSubnets[0]", "10.244.0.0"),
        "cluster.podSubnets[0]: '10.244.0.0' is not a CIDR (address/prefix-length)",
    ),
    (
        "netmask form",
        _set("cluster.podSubnets[0]", "10.244.0.0/255.255.0.0"),
        "cluster.podSubnets[0]: '10.244.0.0/255.255.0.0' is not a CIDR",
    ),
    (
        "host bits",
        _set("nodes[1].podCIDRs[0]", "10.244.1.7/24"),
        "nodes[1].podCIDRs[0]: 10.244.1.7/24 has host bits set (the network is 10.244.1.0/24)",
    ),
    (
        "malformed IP",
        _set("nodes[0].internalIPs[0]", "192.0.2.300"),
        "nodes[0].internalIPs[0]: '192.0.2.300' is not an IP address",
    ),
    (
        "IPv6 zone",
        _set("nodes[0].internalIPs[1]", "fe80::1%eth0"),
        "nodes[0].internalIPs[1]: 'fe80::1%eth0' has a zone index",
    ),
    (
        "duplicate node name",
        _set("nodes[1].name", "a"),
        "nodes[1].name: duplicate node name 'a' (also nodes[0])",
    ),
    (
        "duplicate InternalIP",
        _set("nodes[1].internalIPs[0]", "192.0.2.10"),
        "nodes[1].internalIPs[0]: 192.0.2.10 is also the InternalIP of node a",
    ),
    (
        "overlapping PodCIDRs",
        _set("nodes[1].podCIDRs[0]", "10.244.0.0/25"),
        "nodes[1].podCIDRs[0]: 10.244.0.0/25 overlaps 10.244.0.0/24 of node a",
    ),
    (
        "PodCIDR outside podSubnets",
        _set("nodes[1].podCIDRs[0]", "10.245.1.0/24"),
        "nodes[1].podCIDRs[0]: 10.245.1.0/24 is outside the cluster's pod subnet 10.244.0.0/16",
    ),
    (
        "family without pod subnet",
        _set("cluster.podSubnets", ["10.244.0.0/16"]),
        "nodes[0].podCIDRs[1]: fd00:10:244::/64 is IPv6 but the cluster has no IPv6 pod subnet",
    ),
    (
        "PodCIDR family without InternalIP",
        _set("nodes[0].internalIPs", ["192.0.2.10"]),
        "nodes[0]: node a has an IPv6 PodCIDR but no IPv6 InternalIP",
    ),
    (
        "two podSubnets of one family",
        _set("cluster.podSubnets", ["10.244.0.0/16", "10.96.0.0/16"]),
        "cluster.podSubnets[1]: 10.96.0.0/16 is a second IPv4 pod subnet besides 10.244.0.0/16",
    ),
    (
        "two PodCIDRs of one family",
        _set("nodes[0].podCIDRs", ["10.244.0.0/24", "10.244.9.0/24"]),
        "nodes[0].podCIDRs[1]: more than one IPv4 PodCIDR",
    ),
    (
        "PodCIDR too small",
        _set("nodes[0].podCIDRs[0]", "10.244.0.0/31"),
        "nodes[0].podCIDRs[0]: 10.244.0.0/31 is too small for pods",
    ),
    (
        "InternalIP inside pod subnet",
        _set("nodes[0].internalIPs[0]", "10.244.200.1"),
        "nodes[0].internalIPs[0]: 10.244.200.1 lies inside the cluster's pod subnet",
    ),
    (
        "pod IP outside its node's PodCIDR",
        _set("pods[0].ips[0]", "10.244.0.5"),
        "pods[0].ips[0]: 10.244.0.5 is outside the PodCIDR of node b (10.244.1.0/24)",
    ),
    (
        "pod IP is the gateway",
        _set("pods[0].ips[0]", "10.244.1.1"),
        "pods[0].ips[0]: 10.244.1.1 is reserved in 10.244.1.0/24",
    ),
    ("pod on unknown node", _set("pods[0].node", "zz"), "pods[0].node: no node named 'zz'"),
    (
        "two pod IPs of one family",
        _set("pods[0].ips", ["10.244.1.5", "10.244.1.6"]),
        "pods[0].ips[1]: pod default/web has more than one IPv4 IP",
    ),
    (
        "IPv6 MTU too small",
        _set("cluster.mtu", 1200),
        "cluster.mtu: 1200 is below IPv6's minimum MTU 1280",
    ),
    (
        "control character",
        _set("pods[0].hostInterface", "veth01\n"),
        "pods[0].hostInterface: 'veth01\\n' contains a control character",
    ),
    (
        "pod on the loopback device",
        _set("pods[0].hostInterface", "lo"),
        "pods[0].hostInterface: lo is the loopback device, not a pod's veth",
    ),
    *(
        (
            f"InternalIP {ip}",
            _set(f"nodes[0].internalIPs[{index}]", ip),
            f"nodes[0].internalIPs[{index}]: {ip} is {why}: no route can go through it",
        )
        for index, ip, why in [
            (0, "0.0.0.0", "unspecified"),
            (0, "127.0.0.1", "a loopback address"),
            (0, "224.0.0.5", "a multicast address"),
            (0, "255.255.255.255", "the broadcast address"),
            (0, "169.254.10.1", "link-local"),
            (1, "::", "unspecified"),
            (1, "::1", "a loopback address"),
            (1, "ff02::1", "a multicast address"),
            (1, "fe80::10", "link-local"),
        ]
    ),
]


@pytest.mark.parametrize(
    ("case", "mutation", "message"), MEANING_CASES, ids=[c[0] for c in MEANING_CASES]
)
def test_meaning_check(case: str, mutation: Callable[[Doc], None], message: str) -> None:
    problems = problems_of(mutate(mutation))
    assert any(p.startswith(message) for p in problems), problems


def test_duplicate_pods_ips_and_veths() -> None:
    def two_pods(doc: Doc) -> None:
        pod = doc["pods"][0]
        doc["pods"] += [
            dict(pod),
            dict(pod, name="other", ips=["10.244.1.5"], hostInterface="veth02"),
            dict(pod, name="third", ips=["10.244.1.9"]),
        ]

    problems = problems_of(mutate(two_pods))
    assert "pods[1]: duplicate pod default/web (also pods[0])" in problems
    assert "pods[2].ips[0]: 10.244.1.5 is also the IP of pod default/web" in problems
    assert "pods[3].hostInterface: veth01 is also the veth of pod default/web" in problems


def test_all_problems_are_reported_at_once() -> None:
    def many(doc: Doc) -> None:
        doc["nodes"][0]["podCIDRs"][0] = "10.244.0.1/24"
        doc["nodes"][1]["internalIPs"][0] = "nope"
        doc["pods"][0]["node"] = "zz"

    assert len(problems_of(mutate(many))) == 3


SCHEMA_CASES = [
    (
        "missing key",
        lambda d: d["nodes"][0].pop("podCIDRs"),
        "nodes[0]: 'podCIDRs' is a required property",
    ),
    (
        "unknown key",
        _set("cluster.podSubnet", ["10.0.0.0/8"]),
        "cluster: Additional properties are not allowed",
    ),
    ("wrong type", _set("cluster.mtu", "1500"), "cluster.mtu: '1500' is not of type 'integer'"),
    (
        "huge number",
        _set("cluster.mtu", 10**30),
        "cluster.mtu: 1000000000000000000000000000000 is greater than",
    ),
    ("bad name", _set("nodes[0].name", "Node_A"), "nodes[0].name: 'Node_A' is not"),
    ("wrong apiVersion", _set("apiVersion", "v1"), "apiVersion: 'kindplan/v1' was expected"),
    ("empty nodes", _set("nodes", []), "nodes: [] should be non-empty"),
    (
        "ifname too long",
        _set("pods[0].hostInterface", "veth0123456789abc"),
        "pods[0].hostInterface:",
    ),
]


@pytest.mark.parametrize(
    ("case", "mutation", "message"), SCHEMA_CASES, ids=[c[0] for c in SCHEMA_CASES]
)
def test_schema_problem(case: str, mutation: Callable[[Doc], None], message: str) -> None:
    problems = problems_of(mutate(mutation))
    assert any(p.startswith(message) for p in problems), problems
    assert all("\n" not in p for p in problems)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "snap: empty input"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "snap: binary input (NUL byte at offset 8)"),
        (b"apiVersion: \xff\xfe", "snap: not UTF-8 text (invalid byte at offset 12)"),
        (b'{"kind": "ClusterSnapshot", "kind": "x"}', "snap: duplicate key 'kind'"),
        (b"kind: a\nkind: b\n", "snap:2:1: invalid YAML: duplicate key 'kind'"),
        (b'{"kind": ', "snap:1:10: invalid JSON: Expecting value"),
        (b"a: [1, 2\n", "snap:2:1: invalid YAML"),
        (b"[" * 100_000, "snap: input is nested too deeply"),
        (b"a: 1\n---\nb: 2\n", "snap: expected one YAML document, found 2"),
        (b"- 1\n", "snap: expected an object"),
        (b"1: x\n", "(top): mapping key 1 is not a string"),
        (b'{"kind": "Service"}', "kind: 'Service' is not one of ClusterSnapshot, List, NodeList"),
        (b'{"a": NaN}', "snap: invalid JSON: NaN is not a JSON number"),
    ],
)
def test_unreadable_input(data: bytes, message: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        parse_snapshot(data, source="snap")
    assert str(info.value.problems[0]).startswith(message), info.value.problems


def test_yaml_and_json_give_the_same_snapshot() -> None:
    doc = base()
    from_json = parse_snapshot(json.dumps(doc).encode()).snapshot
    from_yaml = parse_snapshot(yaml.safe_dump(doc).encode()).snapshot
    assert from_json == from_yaml


def node_item(
    name: str, cidrs: list[str] | None, ips: list[str], podcidr: str | None = None
) -> Doc:
    spec: Doc = {}
    if cidrs is not None:
        spec["podCIDRs"] = cidrs
    if podcidr:
        spec["podCIDR"] = podcidr
    return {
        "kind": "Node",
        "metadata": {"name": name},
        "spec": spec,
        "status": {
            "addresses": [{"type": "Hostname", "address": name}]
            + [{"type": "InternalIP", "address": ip} for ip in ips]
        },
    }


def test_node_list_reads_like_kindnet() -> None:
    doc = {
        "kind": "NodeList",
        "items": [
            node_item("a", ["10.244.0.0/24"], ["192.0.2.10", "192.0.2.99", "2001:db8::10"]),
            node_item("b", None, ["192.0.2.11"], podcidr="10.244.1.0/24"),
            node_item("joining", None, ["192.0.2.12"]),
            node_item("no-ip", ["10.244.3.0/24"], []),
        ],
    }
    loaded = parse_snapshot(json.dumps(doc).encode(), pod_subnets=["10.244.0.0/16"])
    nodes = {n.name: n for n in loaded.snapshot.nodes}
    # a node that is still joining stays a node, with what it has
    assert sorted(nodes) == ["a", "b", "joining", "no-ip"]
    assert nodes["joining"].pod_cidrs == () and nodes["no-ip"].internal_ips == ()
    # the first InternalIP of a family wins; the second one is reported
    assert [str(ip) for ip in nodes["a"].internal_ips] == ["192.0.2.10", "2001:db8::10"]
    assert [str(c) for c in nodes["b"].pod_cidrs] == ["10.244.1.0/24"]
    warnings = [str(w) for w in loaded.warnings]
    assert (
        "items[2] (node joining): no PodCIDR yet; no route to its pods until it has one" in warnings
    )
    assert "items[3] (node no-ip): no InternalIP yet; no route to its pods until it has one" in (
        warnings
    )
    assert any(
        w.startswith("items[0].status.addresses[2].address (node a): second IPv4") for w in warnings
    )
    # strict (validate --strict) skips them, as before
    strict = parse_snapshot(json.dumps(doc).encode(), pod_subnets=["10.244.0.0/16"], strict=True)
    assert sorted(n.name for n in strict.snapshot.nodes) == ["a", "b"]
    assert "items[2] (node joining): no PodCIDR yet; skipped" in map(str, strict.warnings)


def test_a_node_usable_in_part_is_used_so_in_a_node_list_only() -> None:
    """One odd node never blocks the others in a node list; validate --strict refuses it."""
    doc = {
        "kind": "NodeList",
        "items": [
            node_item("a", ["10.244.0.0/24"], ["192.0.2.10"]),
            # dual-stack PodCIDRs, an IPv4 InternalIP only
            node_item("half", ["10.244.1.0/24", "fd00:10:244:1::/64"], ["192.0.2.11"]),
        ],
    }
    data = json.dumps(doc).encode()
    dual = ["10.244.0.0/16", "fd00:10:244::/56"]
    loaded = parse_snapshot(data, pod_subnets=dual)
    half = loaded.snapshot.node("half")
    assert half is not None
    assert [str(c) for c in half.pod_cidrs] == ["10.244.1.0/24", "fd00:10:244:1::/64"]
    warning = "node half has an IPv6 PodCIDR but no IPv6 InternalIP; no IPv6 route to its pods"
    assert f"items[1]: {warning}" in map(str, loaded.warnings)
    with pytest.raises(InvalidInputError, match="items\\[1\\]: node half has an IPv6 PodCIDR"):
        parse_snapshot(data, pod_subnets=dual, strict=True)
    # an IPv4 cluster: the extra IPv6 PodCIDR is left unused
    loaded = parse_snapshot(data, pod_subnets=["10.244.0.0/16"])
    half = loaded.snapshot.node("half")
    assert half is not None and [str(c) for c in half.pod_cidrs] == ["10.244.1.0/24"]
    assert (
        "items[1].spec.podCIDRs[1]: fd00:10:244:1::/64 is IPv6 but the cluster has no IPv6 pod "
        "subnet; unused"
    ) in map(str, loaded.warnings)
    with pytest.raises(InvalidInputError, match="has no IPv6 pod subnet"):
        parse_snapshot(data, pod_subnets=["10.244.0.0/16"], strict=True)


def test_a_snapshot_node_needs_a_podcidr_and_an_internal_ip() -> None:
    doc = base()
    doc["nodes"][0]["podCIDRs"] = []
    doc["nodes"][1]["internalIPs"] = []
    with pytest.raises(InvalidInputError) as info:
        parse_snapshot(json.dumps(doc).encode())
    problems = [str(p) for p in info.value.problems]
    assert problems == [
        "nodes[0].podCIDRs: node a has no PodCIDR",
        "nodes[1].internalIPs: node b has no InternalIP",
    ]


def test_the_podcidrs_keep_the_nodes_order() -> None:
    doc = base()
    doc["nodes"][0]["podCIDRs"] = ["fd00:10:244::/64", "10.244.0.0/24"]
    doc["nodes"][0]["internalIPs"] = ["2001:db8::10", "192.0.2.10"]
    snapshot = parse_snapshot(json.dumps(doc).encode()).snapshot
    node = snapshot.node("a")
    assert node is not None and [c.version for c in node.pod_cidrs] == [6, 4]
    assert [ip.version for ip in node.internal_ips] == [4, 6]  # these are looked up by family


def test_node_list_problems_point_into_the_node_list() -> None:
    doc = {
        "kind": "List",
        "items": [
            node_item("a", ["10.244.0.0/24"], ["192.0.2.10"]),
            node_item("b", ["10.244.0.0/25"], ["192.0.2.11"]),
            node_item("c", None, ["192.0.2.12"], podcidr="10.244.2.1/24"),
        ],
    }
    with pytest.raises(InvalidInputError) as info:
        parse_snapshot(json.dumps(doc).encode(), pod_subnets=["10.244.0.0/16"])
    problems = [str(p) for p in info.value.problems]
    assert "items[1].spec.podCIDRs[0]: 10.244.0.0/25 overlaps 10.244.0.0/24 of node a" in problems
    assert any(
        p.startswith("items[2].spec.podCIDR: 10.244.2.1/24 has host bits set") for p in problems
    )


def test_node_list_needs_pod_subnet_and_snapshot_refuses_it() -> None:
    doc = {"kind": "List", "items": [node_item("a", ["10.244.0.0/24"], ["192.0.2.10"])]}
    with pytest.raises(InvalidInputError, match="--pod-subnet: a node list carries no cluster"):
        parse_snapshot(json.dumps(doc).encode())
    with pytest.raises(InvalidInputError, match="--pod-subnet: applies to node lists only"):
        parse_snapshot(json.dumps(base()).encode(), pod_subnets=["10.244.0.0/16"])


def test_malformed_node_list_items() -> None:
    doc = {
        "kind": "List",
        "items": [
            42,
            {"kind": "Node", "metadata": {}},
            node_item("a", ["10.244.0.0/24"], ["not-an-ip"]),
        ],
    }
    with pytest.raises(InvalidInputError) as info:
        parse_snapshot(json.dumps(doc).encode(), pod_subnets=["10.244.0.0/16"])
    problems = [str(p) for p in info.value.problems]
    assert "items[0]: not an object" in problems
    assert "items[1].metadata.name: a node needs a name" in problems
    assert (
        "items[2].status.addresses[1].address (node a): not an IP address: 'not-an-ip'" in problems
    )


# -- the common case, checked without naming places (core/plainnode.py) -------------------------

ODD_NODES = [
    {"name": "zone", "internalIPs": ["fe80::1%eth0"], "podCIDRs": ["10.244.5.0/24"]},
    {"name": "zonecidr", "internalIPs": ["192.0.2.20"], "podCIDRs": ["fd00:10:244:5::%1/64"]},
    {"name": "bad-ip", "internalIPs": ["192.0.2.300"], "podCIDRs": ["10.244.6.0/24"]},
    {"name": "host-bits", "internalIPs": ["192.0.2.21"], "podCIDRs": ["10.244.7.1/24"]},
    {"name": "no-prefix", "internalIPs": ["192.0.2.22"], "podCIDRs": ["10.244.8.0/ 24"]},
    {"name": "loopback", "internalIPs": ["127.0.0.2"], "podCIDRs": ["10.244.9.0/24"]},
    {"name": "again", "internalIPs": ["192.0.2.10"], "podCIDRs": ["10.244.10.0/24"]},
    {"name": "twice", "internalIPs": ["192.0.2.23", "192.0.2.23"], "podCIDRs": ["10.244.11.0/24"]},
    {"name": "second", "internalIPs": ["192.0.2.24", "192.0.2.25"], "podCIDRs": ["10.244.12.0/24"]},
    {"name": "in-pods", "internalIPs": ["10.244.200.1"], "podCIDRs": ["10.244.13.0/24"]},
    {"name": "outside", "internalIPs": ["192.0.2.26"], "podCIDRs": ["10.9.0.0/24"]},
    {"name": "tiny", "internalIPs": ["192.0.2.27"], "podCIDRs": ["10.244.14.0/31"]},
    {"name": "overlap", "internalIPs": ["192.0.2.28"], "podCIDRs": ["10.244.1.0/25"]},
    {
        "name": "two-v4",
        "internalIPs": ["192.0.2.29"],
        "podCIDRs": ["10.244.15.0/24", "10.244.16.0/24"],
    },
    {"name": "no-v6-ip", "internalIPs": ["192.0.2.30"], "podCIDRs": ["fd00:10:244:6::/64"]},
    {"name": "nothing", "internalIPs": [], "podCIDRs": []},
    # The families as the short way reads them off the text (colons: IPv6).
    {"name": "v6-ip-only", "internalIPs": ["2001:db8::5"], "podCIDRs": ["10.244.18.0/24"]},
    {"name": "two-v6", "internalIPs": ["2001:db8::6", "2001:db8::7"], "podCIDRs": []},
    {"name": "mapped", "internalIPs": ["::ffff:192.0.2.40"], "podCIDRs": ["10.244.19.0/24"]},
    {"name": "no-ip", "internalIPs": [], "podCIDRs": ["10.244.20.0/24"]},
    {"name": "clean", "internalIPs": ["192.0.2.31"], "podCIDRs": ["10.244.17.0/24"]},
]


def _outcome(doc: Doc) -> tuple[str, ...] | tuple[Any, ...]:
    try:
        loaded = parse_snapshot(json.dumps(doc).encode())
    except InvalidInputError as e:
        return ("problems", *map(str, e.problems))
    return ("loaded", loaded.snapshot, *map(str, loaded.warnings))


@pytest.mark.parametrize("odd", ODD_NODES, ids=[n["name"] for n in ODD_NODES])
def test_a_node_checked_the_short_way_says_what_the_long_way_says(
    odd: Doc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every odd node between good ones: the same problems, warnings and places (or the same
    snapshot) as with every node checked the long way, naming each value's place."""
    from kindplan.core import snapshot

    doc = base()
    doc["nodes"].insert(1, odd)
    short = _outcome(doc)
    monkeypatch.setattr(snapshot, "plain_node", lambda *args, **kwargs: None)
    assert _outcome(doc) == short


def test_good_nodes_are_checked_the_short_way(monkeypatch: pytest.MonkeyPatch) -> None:
    from kindplan.core import snapshot

    plain = snapshot.plain_node
    answers: list[bool] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        answers.append(plain(*args, **kwargs) is not None)
        return answers[-1] and plain(*args, **kwargs)

    monkeypatch.setattr(snapshot, "plain_node", counted)
    parse_snapshot(json.dumps(base()).encode())
    assert answers == [True, True]
