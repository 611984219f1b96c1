"""Property tests of the whole pipeline: snapshot document -> Snapshot -> DesiredState -> files.

Strategies come first: valid ClusterSnapshot documents (IPv4, IPv6 and dual-stack, node addresses
on documentation ranges, non-overlapping PodCIDRs inside the pod subnet, a few pods), Kubernetes
node lists made from them, and random mutations of both. Then the tests, by property.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import ipaddress
import json
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from kindplan.core.compiler import compile_desired
from kindplan.core.model import DesiredState, HostFacts, Snapshot
from kindplan.core.render import render_files
from kindplan.core.schemacheck import compile_schema
from kindplan.core.snapshot import SCHEMA_FILE, Loaded
from kindplan.errors import InvalidInputError
from kindplan.inputs.kinds import parse_snapshot
from kindplan.resources import load_schema

# When a property fails, hypothesis's pytest plugin imports its patch writer, which imports libcst,
# which warns (DeprecationWarning from mypy_extensions); with filterwarnings=error that warning
# aborts the whole session with an INTERNALERROR. Importing it here, warnings ignored, avoids that.
with warnings.catch_warnings(), contextlib.suppress(ImportError):
    warnings.simplefilter("ignore")
    importlib.import_module("hypothesis.extra._patching")

PROPERTY = settings(
    max_examples=60,
    deadline=None,
    # No explain phase: it reruns a failing test many times, and minimal examples are enough.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FUZZ = settings(PROPERTY, max_examples=100)

SCHEMA = load_schema(SCHEMA_FILE)
FAST_CHECK = compile_schema(SCHEMA)
REFERENCE = Draft202012Validator(SCHEMA)

# ------------------------------------------------------------------------------------------------
# Strategies: valid documents
# ------------------------------------------------------------------------------------------------

# Node addresses on documentation/benchmarking ranges (RFC 2544, RFC 3849); never in a pod subnet.
NODE_ADDRESSES = {
    4: ipaddress.ip_network("198.18.0.0/15"),
    6: ipaddress.ip_network("2001:db8::/32"),
}
POD_SUBNETS = {
    4: ("10.244.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"),
    6: ("fd00:10:244::/48", "fd12:3456:789a::/48", "fd00::/8"),
}
# The largest node PodCIDR prefix: a /28 (/124) still has room for the 12 pods a document may have.
LONGEST_NODE_PREFIX = {4: 28, 6: 124}
MAX_PODS = 12
EXTRA_NON_MASQUERADE = ("192.0.2.0/24", "203.0.113.0/24", "2001:db8:1::/48", "2001:db8:2::/64")
NAMESPACES = ("default", "kube-system", "app-1", "x")

# DNS names from parts (st.from_regex is several times slower): "kind-worker7", "90.lab", "w-12"
NODE_NAMES = st.builds(
    "{}{}{}".format,
    st.sampled_from(["kind-worker", "control-plane-", "w-", "n", "9", "a.b-"]),
    st.integers(0, 999),
    st.sampled_from(["", "", ".lab", ".k8s.example"]),
)
POD_NAMES = st.builds(
    "{}{}".format, st.sampled_from(["coredns-", "web-", "p", "0", "x.y-"]), st.integers(0, 99)
)
CNI_SETTINGS = st.fixed_dictionaries(
    {},
    optional={
        "confDir": st.sampled_from(["/etc/cni/net.d", "/opt/cni/conf"]),
        "confFile": st.sampled_from(["10-kindnet.conflist", "99-Net_1.conflist"]),
        "networkName": st.sampled_from(["kindnet", "pod.net-1"]),
        "cniVersion": st.sampled_from(["0.3.0", "0.3.1", "0.4.0", "1.0.0"]),
        "ipamDataDir": st.sampled_from(["/run/cni-ipam-state", "/var/lib/cni/ipam"]),
    },
)
HOST_FACTS = st.builds(
    HostFacts,
    uplink=st.sampled_from(["eth0", "ens5", "enp0s31f6"]),
    mtu=st.integers(1280, 9000),
)


def _text_of(draw: st.DrawFn, value: Any) -> str:
    """An address or network as text; IPv6 sometimes exploded or in upper case (all valid)."""
    if value.version == 4:
        return str(value)
    return draw(st.sampled_from([str(value), str(value), value.exploded, str(value).upper()]))


def _pod_cidr_layout(draw: st.DrawFn, version: int) -> tuple[Any, int]:
    """A pod subnet of the family and the prefix length of the slots it is cut in for nodes.

    Each node takes a distinct slot (there are at least 128), and a PodCIDR of that slot's size or
    up to 4 times smaller at its start: PodCIDRs never overlap but need not be equal in size or
    consecutive.
    """
    subnet = ipaddress.ip_network(draw(st.sampled_from(POD_SUBNETS[version])))
    return subnet, draw(st.integers(subnet.prefixlen + 7, LONGEST_NODE_PREFIX[version] - 2))


def _node_seeds(families: tuple[int, ...], layout: dict[int, Any], max_nodes: int) -> Any:
    """Nodes as a list of independent draws, so that shrinking can simply drop nodes."""
    seed = st.fixed_dictionaries(
        {
            "name": NODE_NAMES,
            "slot": st.fixed_dictionaries(
                {
                    v: st.integers(0, 2 ** (layout[v][1] - layout[v][0].prefixlen) - 1)
                    for v in families
                }
            ),
            "smaller": st.fixed_dictionaries({v: st.integers(0, 2) for v in families}),
            "ip": st.fixed_dictionaries(
                {v: st.integers(1, NODE_ADDRESSES[v].num_addresses - 2) for v in (4, 6)}
            ),
            # In a dual-stack cluster some nodes are single-stack.
            "cidr_families": st.sampled_from(
                [(4, 6), (4, 6), (4, 6), (4,), (6,)] if len(families) == 2 else [families]
            ),
            # Sometimes an InternalIP of a family without PodCIDR, which routes must ignore.
            "other_ip": st.booleans(),
        }
    )
    unique = [lambda n: n["name"]]
    unique += [lambda n, v=v: n["slot"][v] for v in families]
    unique += [lambda n, v=v: n["ip"][v] for v in (4, 6)]
    # Plain lists are mostly short; a second branch makes long ones common. (Drawing the length
    # first, or flatmap, would make a failing example shrink far worse.)
    return st.lists(seed, min_size=1, max_size=max_nodes, unique_by=tuple(unique)) | st.lists(
        seed, min_size=max_nodes // 2, max_size=max_nodes, unique_by=tuple(unique)
    )


def _pod_seeds() -> Any:
    seed = st.fixed_dictionaries(
        {
            "key": st.tuples(st.sampled_from(NAMESPACES), POD_NAMES),
            "node": st.integers(0, 10**6),
            "families": st.sampled_from([(4, 6), (4,), (6,)]),
            "offset": st.fixed_dictionaries({v: st.integers(0, 2**32) for v in (4, 6)}),
            "prefix": st.sampled_from(["veth", "kp", "cali"]),
        }
    )
    return st.lists(seed, max_size=MAX_PODS, unique_by=lambda p: p["key"]) | st.lists(
        seed, min_size=MAX_PODS // 2, max_size=MAX_PODS, unique_by=lambda p: p["key"]
    )


def _pods(draw: st.DrawFn, names: list[str], cidrs_of: list[dict[int, Any]]) -> list[Any]:
    """Up to 12 pods on any nodes: one IP of some of the node's PodCIDR families each, never the
    network, gateway or broadcast address and never another pod's; host interfaces distinct per
    node."""
    used: set[Any] = set()
    on_node: Counter[int] = Counter()
    pods = []
    for seed in draw(_pod_seeds()):
        where = seed["node"] % len(names)
        families = [v for v in seed["families"] if v in cidrs_of[where]] or sorted(cidrs_of[where])
        ips = []
        for v in families:
            cidr = cidrs_of[where][v]
            room = min(cidr.num_addresses - (3 if v == 4 else 2), 2**32)  # > MAX_PODS
            offset = seed["offset"][v] % room
            while (ip := cidr.network_address + 2 + offset) in used:
                offset = (offset + 1) % room
            used.add(ip)
            ips.append(ip)
        on_node[where] += 1
        pods.append(
            {
                "namespace": seed["key"][0],
                "name": seed["key"][1],
                "node": names[where],
                "ips": [_text_of(draw, ip) for ip in ips],
                "hostInterface": f"{seed['prefix']}{on_node[where]:x}",
            }
        )
    return pods


def _cluster(draw: st.DrawFn, subnets: list[Any]) -> dict[str, Any]:
    """The cluster section, with or without each optional setting."""
    cluster: dict[str, Any] = {"podSubnets": [str(subnet) for subnet in subnets]}
    optional = {
        "nonMasqueradeCIDRs": st.lists(st.sampled_from(EXTRA_NON_MASQUERADE), unique=True),
        # JSON Schema's integers include integral floats: 1500.0 is a valid MTU.
        "mtu": st.integers(1280, 9000) | st.integers(1280, 9000).map(float),
        "cni": CNI_SETTINGS,
    }
    for key, strategy in optional.items():
        value = draw(st.none() | strategy)
        if value is not None:
            cluster[key] = value
    return cluster


@st.composite
def snapshot_docs(draw: st.DrawFn, max_nodes: int = 40) -> dict[str, Any]:
    """A valid ClusterSnapshot document: 1..max_nodes nodes, up to 12 pods."""
    families = draw(st.sampled_from([(4,), (6,), (4, 6)]))
    layout = {v: _pod_cidr_layout(draw, v) for v in families}
    nodes, cidrs_of = [], []
    for seed in draw(_node_seeds(families, layout, max_nodes)):
        cidrs = {}
        for v in seed["cidr_families"]:
            subnet, slot_prefix = layout[v]
            start = int(subnet.network_address) + (
                seed["slot"][v] << (subnet.max_prefixlen - slot_prefix)
            )
            cidrs[v] = ipaddress.ip_network((start, slot_prefix + seed["smaller"][v]))
        ip_families = set(cidrs) | ({10 - min(cidrs)} if seed["other_ip"] else set())  # 4 <-> 6
        ips = {v: NODE_ADDRESSES[v].network_address + seed["ip"][v] for v in sorted(ip_families)}
        nodes.append(
            {
                "name": seed["name"],
                "internalIPs": [_text_of(draw, ip) for ip in ips.values()],
                "podCIDRs": [_text_of(draw, cidr) for cidr in cidrs.values()],
            }
        )
        cidrs_of.append(cidrs)

    doc: dict[str, Any] = {
        "apiVersion": "kindplan/v1",
        "kind": "ClusterSnapshot",
        "cluster": _cluster(draw, [layout[v][0] for v in families]),
        "nodes": nodes,
    }
    pods = _pods(draw, [n["name"] for n in nodes], cidrs_of)
    if pods or draw(st.booleans()):
        doc["pods"] = pods
    return doc


def node_list_of(doc: dict[str, Any], kind: str) -> dict[str, Any]:
    """The node list `kubectl get nodes -o json` would print for a snapshot document."""
    items = []
    for raw in doc["nodes"]:
        addresses = [{"type": "InternalIP", "address": ip} for ip in raw["internalIPs"]]
        addresses.append({"type": "Hostname", "address": raw["name"]})
        items.append(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": raw["name"], "labels": {"kubernetes.io/os": "linux"}},
                "spec": {"podCIDR": raw["podCIDRs"][0], "podCIDRs": raw["podCIDRs"]},
                "status": {"addresses": addresses},
            }
        )
    return {"apiVersion": "v1", "kind": kind, "items": items, "metadata": {}}


# ------------------------------------------------------------------------------------------------
# Strategies: mutations
# ------------------------------------------------------------------------------------------------

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(10**6), 10**6).map(float),  # integral floats such as 1500.0
    st.floats(),  # including nan and infinities
    st.text(max_size=20),
)
SPECIAL_STRINGS = st.sampled_from(
    [
        "",
        "\n",
        "x\n",
        "kindplan/v1\n",
        "ClusterSnapshot",
        "NodeList",
        "List",
        "1500",
        "1500.0",
        "0.3.1",
        "/etc/cni/net.d",
        "10.244.0.0/16\n",
        "10.244.0.1/16",
        "10.244.0.0",
        "::",
        "0.0.0.0/0",
        "fd00:10:244::%eth0/64",
        "fd00:10:244::1%\n/64",
        "198.18.0.1",
        "a" * 5000,
        "ñødé-ü",
        "节点",
        "eth0 ",
        " eth0",
        "-",
        "a..b",
    ]
)
JSON_VALUES = st.one_of(  # scalars as often as containers
    SCALARS,
    SPECIAL_STRINGS,
    st.recursive(
        SCALARS | SPECIAL_STRINGS,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
        ),
        max_leaves=6,
    ),
)
# A replacement value: each JSON type equally likely, then values that sit on the schema's edges.
REPLACEMENTS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers() | st.sampled_from([0, -1, 575, 576, 1279, 1280, 65535, 65536]),
    st.integers(-(10**6), 10**6).map(float),
    st.floats(),
    st.text(max_size=20) | SPECIAL_STRINGS,
    st.lists(SCALARS | SPECIAL_STRINGS, max_size=3),
    st.dictionaries(st.text(max_size=6), SCALARS, max_size=3),
)
UNKNOWN_KEYS = st.sampled_from(["extra", "Name", "podCIDR", "mtu", "pods", "", "ключ"]) | st.text(
    max_size=8
)
STRING_EDITS: tuple[Callable[[str], str], ...] = (
    lambda s: s + "\n",
    lambda s: " " + s,
    lambda s: s.upper(),
    lambda s: s[:-1],
    lambda s: s * 300,  # very long
    lambda s: s + "é",
    lambda s: s.replace("/", "%eth0/", 1) if "/" in s else s + "%eth0",  # a zone index
    lambda s: s.replace("/", "%\n/", 1) if "/" in s else s + "%\n",
)


def _paths(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a document, the document itself first."""
    paths = [at]
    if isinstance(value, dict):
        for key, child in value.items():
            paths += _paths(child, (*at, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            paths += _paths(child, (*at, index))
    return paths


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def _put(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    _get(doc, path[:-1])[path[-1]] = value
    return doc


def _mutate_once(draw: st.DrawFn, doc: Any) -> Any:
    """Pick a random place in `doc` and break it in one of the ways that fit what is there."""
    paths = _paths(doc)
    leaves = [p for p in paths if not isinstance(_get(doc, p), dict | list)]
    path = draw(
        st.sampled_from(leaves) | st.sampled_from(paths) if leaves else st.sampled_from(paths)
    )
    target = _get(doc, path)
    return _mutate_at(draw, doc, path, target, draw(st.sampled_from(_ops(path, target))))


def _ops(path: tuple[Any, ...], target: Any) -> list[str]:
    """The ways to break what is at `path`: replace it, and those that fit its type."""
    ops = ["replace"]
    if isinstance(target, dict):
        ops += ["add"] + (["drop"] if target else [])
    elif isinstance(target, list):
        ops += ["empty"] + (["duplicate"] if target else [])
    elif isinstance(target, str):
        ops += ["edit", "edit"]
    if path and isinstance(path[-1], str):
        ops += ["edit every"]
    return ops


def _mutate_at(draw: st.DrawFn, doc: Any, path: tuple[Any, ...], target: Any, op: str) -> Any:
    """`doc` with what is at `path` (`target`) broken by `op`."""
    if op == "drop":
        del target[draw(st.sampled_from(sorted(target)))]
    elif op == "add":
        target[draw(UNKNOWN_KEYS)] = draw(JSON_VALUES)
    elif op == "empty":
        doc = _put(doc, path, [])
    elif op == "duplicate":
        item = copy.deepcopy(target[draw(st.integers(0, len(target) - 1))])
        target.insert(draw(st.integers(0, len(target))), item)
    elif op == "edit":
        doc = _put(doc, path, draw(st.sampled_from(STRING_EDITS))(target))
    elif op == "edit every":  # the same edit of every string under this key, e.g. every "name"
        edit = draw(st.sampled_from(STRING_EDITS))
        for place in _paths(doc):
            if place and place[-1] == path[-1] and isinstance(_get(doc, place), str):
                doc = _put(doc, place, edit(_get(doc, place)))
    else:
        doc = _put(doc, path, draw(REPLACEMENTS))
    return doc


@st.composite
def mutated(draw: st.DrawFn, documents: st.SearchStrategy[Any]) -> Any:
    """A document from `documents` with 1 to 3 random mutations (mostly one)."""
    doc = copy.deepcopy(draw(documents))
    for _ in range(draw(st.sampled_from([1, 1, 2, 3]))):
        doc = _mutate_once(draw, doc)
    return doc


SMALL_DOCS = snapshot_docs(max_nodes=4)
SMALLER_DOCS = snapshot_docs(max_nodes=2)


@st.composite
def bad_inputs(draw: st.DrawFn) -> tuple[Any, tuple[str, ...]]:
    """A mutated ClusterSnapshot or node list, with the --pod-subnet values to load it with."""
    if draw(st.booleans()):
        doc = draw(SMALLER_DOCS)
        subnets = tuple(doc["cluster"]["podSubnets"])
        source = node_list_of(doc, draw(st.sampled_from(["NodeList", "List"])))
        pod_subnets = draw(st.sampled_from([subnets, subnets, ()]))
    else:
        source = draw(SMALL_DOCS)
        subnets = tuple(source["cluster"]["podSubnets"])
        pod_subnets = draw(st.sampled_from([(), (), (), subnets]))
    return draw(mutated(st.just(source))), pod_subnets


# Raw YAML scalars and tags that yaml.safe_dump never writes but a person (or a tool) may.
YAML_TOKENS = st.sampled_from(
    [
        "2024-01-01",
        "2001-13-01",
        "2001-02-30",
        "2001-01-01T99:00:00",
        "0x5DC",
        "0o17",
        "1_500",
        "1:20:30",
        ".nan",
        ".inf",
        "-.inf",
        "~",
        "null",
        "yes",
        "off",
        "1500.0",
        "1e3",
        "'1500'",
        "!!binary aGk=",
        "!!binary ZZZ",
        "!!int abc",
        "!!float abc",
        "!!bool maybe",
        "!!str 1500",
        "!!set [1]",
        "!!set {a, b}",
        "!!omap [a: 1]",
        "!!pairs [a: 1]",
        "!!map [1]",
        "!!null x",
        "!custom x",
        "&a [1]",
        "*a",
        "[1, 2]",
        "{a: 1}",
        "{? [1]: 2}",
        '"\\x01"',
        '"\\u0085"',
        "|\n  literal\n",
        ">-\n  folded\n",
        "- a\n- b",
        "@",
        "`",
        "%",
    ]
)


@st.composite
def yaml_texts(draw: st.DrawFn) -> tuple[str, tuple[str, ...]]:
    """A bad input dumped as YAML, sometimes with one value replaced by a raw YAML token."""
    doc, pod_subnets = draw(bad_inputs())
    text = yaml.safe_dump(doc, allow_unicode=draw(st.booleans()))
    lines = text.splitlines()
    if lines and draw(st.booleans()):
        i = draw(st.integers(0, len(lines) - 1))
        head, sep, _ = lines[i].partition(": ")
        if not sep:
            head, sep, _ = lines[i].partition("- ")
        lines[i] = head + (sep or ": ") + draw(YAML_TOKENS)
        text = "\n".join(lines) + "\n"
    return text, pod_subnets


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------


def snapshot_with(*changes: tuple[tuple[Any, ...], Any]) -> dict[str, Any]:
    """A small valid dual-stack snapshot document with each (path, value) change applied."""
    doc = {
        "apiVersion": "kindplan/v1",
        "kind": "ClusterSnapshot",
        "cluster": {
            "podSubnets": ["10.244.0.0/16", "fd00:10:244::/48"],
            "mtu": 1500,
            "cni": {"cniVersion": "0.3.1"},
        },
        "nodes": [
            {
                "name": "n1",
                "internalIPs": ["198.18.0.1", "2001:db8::1"],
                "podCIDRs": ["10.244.1.0/24", "fd00:10:244:1::/64"],
            }
        ],
        "pods": [
            {
                "namespace": "default",
                "name": "p",
                "node": "n1",
                "ips": ["10.244.1.2"],
                "hostInterface": "veth1",
            }
        ],
    }
    for path, value in changes:
        doc = _put(doc, path, value)
    return doc


def load(doc: dict[str, Any]) -> Snapshot:
    return parse_snapshot(json.dumps(doc).encode()).snapshot


def file_bytes(desired: DesiredState) -> list[tuple[str, bytes]]:
    """The rendered files in their order, as the bytes written to disk."""
    return [(name, text.encode()) for name, text in render_files(desired).items()]


def shuffled(doc: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    """The same document with every order-free list in another order."""
    out = copy.deepcopy(doc)
    out["cluster"]["podSubnets"] = data.draw(st.permutations(out["cluster"]["podSubnets"]))
    out["nodes"] = data.draw(st.permutations(out["nodes"]))
    for node in out["nodes"]:
        node["internalIPs"] = data.draw(st.permutations(node["internalIPs"]))
    if "pods" in out:
        out["pods"] = data.draw(st.permutations(out["pods"]))
        for pod in out["pods"]:
            pod["ips"] = data.draw(st.permutations(pod["ips"]))
    return out


def parse_or_invalid(data: bytes, pod_subnets: tuple[str, ...] = ()) -> None:
    """parse_snapshot returns a Loaded or raises a well-formed InvalidInputError; nothing else."""
    try:
        loaded: Loaded | InvalidInputError = parse_snapshot(data, pod_subnets=pod_subnets)
    except InvalidInputError as e:
        loaded = e
    if isinstance(loaded, Loaded):
        return
    assert loaded.problems, "an InvalidInputError without problems"
    for problem in loaded.problems:
        assert isinstance(problem.what, str), problem
        assert problem.what.strip(), f"a problem without a description: {problem!r}"
    assert "\n" not in str(loaded), f"newline in the error message: {str(loaded)!r}"


# ------------------------------------------------------------------------------------------------
# 1. Permutation invariance
# ------------------------------------------------------------------------------------------------


@PROPERTY
@given(doc=snapshot_docs(), facts=HOST_FACTS, data=st.data())
def test_order_of_input_lists_does_not_matter(
    doc: dict[str, Any], facts: HostFacts, data: st.DataObject
) -> None:
    """Reordering nodes, pods, a node's InternalIPs or a pod's IPs gives the same Snapshot, the
    same DesiredState and byte-identical files for every node. (A node's PodCIDRs are ordered:
    its first family is its pods' first IP.)"""
    original, reordered = load(doc), load(shuffled(doc, data))
    assert original == reordered
    for node in original.nodes:
        first = compile_desired(original, node.name, facts)
        second = compile_desired(reordered, node.name, facts)
        assert first == second
        assert file_bytes(first) == file_bytes(second)


# ------------------------------------------------------------------------------------------------
# 2. Routes and veth addresses, against an independent reading of the document
# ------------------------------------------------------------------------------------------------


@PROPERTY
@given(doc=snapshot_docs(), facts=HOST_FACTS)
def test_routes_and_addresses_follow_the_snapshot(doc: dict[str, Any], facts: HostFacts) -> None:
    """Every peer PodCIDR has exactly one route, via the peer's InternalIP of its family, on the
    uplink; the node's own PodCIDRs have none; every local pod IP has a host route to the pod's
    veth and nothing else has one; each local veth holds exactly the gateway of each family of its
    pod's IPs."""
    ips = {
        n["name"]: {a.version: a for a in map(ipaddress.ip_address, n["internalIPs"])}
        for n in doc["nodes"]
    }
    cidrs = {
        n["name"]: {c.version: c for c in map(ipaddress.ip_network, n["podCIDRs"])}
        for n in doc["nodes"]
    }
    snapshot = load(doc)
    for name, own in cidrs.items():
        desired = compile_desired(snapshot, name, facts)
        peer_routes = [r for r in desired.routes if r.gateway is not None]
        host_routes = [r for r in desired.routes if r.gateway is None]

        expected_peers = sorted(
            (str(cidr), str(ips[peer][cidr.version]))
            for peer in cidrs
            if peer != name
            for cidr in cidrs[peer].values()
        )
        assert sorted((str(r.dst), str(r.gateway)) for r in peer_routes) == expected_peers
        assert all(r.ifname == facts.uplink for r in peer_routes)
        assert not {r.dst for r in desired.routes} & set(own.values())

        local = [p for p in doc.get("pods", []) if p["node"] == name]
        expected_hosts = Counter(
            (ipaddress.ip_network(ip), p["hostInterface"]) for p in local for ip in p["ips"]
        )
        assert Counter((r.dst, r.ifname) for r in host_routes) == expected_hosts

        expected_addresses = {
            p["hostInterface"]: {
                own[ipaddress.ip_address(ip).version].network_address + 1 for ip in p["ips"]
            }
            for p in local
        }
        held: dict[str, list[Any]] = defaultdict(list)
        for address in desired.addresses:
            assert address.prefixlen == address.address.max_prefixlen
            held[address.ifname].append(address.address)
        assert {k: set(v) for k, v in held.items()} == expected_addresses
        assert all(len(v) == len(set(v)) for v in held.values())


# ------------------------------------------------------------------------------------------------
# 3. Reproducibility and the conflist
# ------------------------------------------------------------------------------------------------


@example(  # found by the strategies: cluster.mtu 1500.0 (valid) is rendered as "mtu": 1500.0
    doc=snapshot_with((("cluster", "mtu"), 1500.0)), facts=HostFacts(), cluster_mtu=True
)
@PROPERTY
@given(doc=snapshot_docs(), facts=HOST_FACTS, cluster_mtu=st.booleans())
def test_rendering_is_reproducible_and_conflist_is_sound(
    doc: dict[str, Any], facts: HostFacts, cluster_mtu: bool
) -> None:
    """Loading, compiling and rendering twice gives equal values and identical bytes; the conflist
    is JSON with one range set and one default route per PodCIDR family of the node, ipMasq false,
    mtu the integer HostFacts.mtu, and portmap second with the portMappings capability.

    HostFacts.mtu is either given or, as `kindplan render` does without --mtu, cluster.mtu."""
    snapshot = load(doc)
    assert load(doc) == snapshot
    if cluster_mtu and snapshot.cluster.mtu is not None:
        facts = HostFacts(uplink=facts.uplink, mtu=snapshot.cluster.mtu)
    for node in snapshot.nodes:
        desired = compile_desired(snapshot, node.name, facts)
        again = compile_desired(snapshot, node.name, facts)
        assert desired == again
        assert file_bytes(desired) == file_bytes(again)

        settings_ = desired.cni.settings
        conflist = json.loads(render_files(desired)[settings_.conf_file])
        assert conflist["cniVersion"] == settings_.cni_version
        assert conflist["name"] == settings_.network_name
        ptp, portmap = conflist["plugins"]
        assert ptp["type"] == "ptp"
        assert ptp["ipMasq"] is False
        assert type(ptp["mtu"]) is int and ptp["mtu"] == facts.mtu
        ipam = ptp["ipam"]
        assert ipam["ranges"] == [[{"subnet": str(cidr)}] for cidr in node.pod_cidrs]
        defaults = {4: "0.0.0.0/0", 6: "::/0"}
        assert ipam["routes"] == [{"dst": defaults[cidr.version]} for cidr in node.pod_cidrs]
        if node.pod_cidr(6) is None:
            assert "::/0" not in json.dumps(ipam)
        assert portmap == {"type": "portmap", "capabilities": {"portMappings": True}}


# ------------------------------------------------------------------------------------------------
# 4. The fast schema check agrees with jsonschema
# ------------------------------------------------------------------------------------------------


@PROPERTY
@given(doc=snapshot_docs(max_nodes=3), data=st.data())
def test_fast_schema_check_agrees_with_jsonschema(doc: dict[str, Any], data: st.DataObject) -> None:
    """compile_schema(schema)(doc) == Draft202012Validator(schema).is_valid(doc) for a valid
    document, for ten mutations of it, for its node list and for an arbitrary JSON value."""
    assert FAST_CHECK(doc) is True
    assert REFERENCE.is_valid(doc)
    probes = [data.draw(mutated(st.just(doc)), label="mutated") for _ in range(10)]
    probes.append(data.draw(mutated(st.just(node_list_of(doc, "NodeList"))), label="node list"))
    probes.append(data.draw(JSON_VALUES, label="value"))
    for probe in probes:
        assert FAST_CHECK(probe) == REFERENCE.is_valid(probe), probe


MTU = ("cluster", "mtu")
CNI_VERSION = ("cluster", "cni", "cniVersion")
EDGE_CASES: list[tuple[tuple[Any, ...], Any]] = [
    ((), snapshot_with()),  # the unchanged document, valid
    *((MTU, v) for v in (1500.0, 576.0, 575.5, 65535.0, 65536.0, 1500.5, 1e300, 2**80)),
    *((MTU, v) for v in (float("nan"), float("inf"), True, False, "1500", None)),
    *((("apiVersion",), v) for v in (1, True, None, ["kindplan/v1"], "kindplan/v1\n")),
    (("kind",), 0),
    (("kind",), {"ClusterSnapshot": True}),
    *((CNI_VERSION, v) for v in (1.0, 0.4, 1, True, None, "1.0.0\n")),
    (("cluster", "podSubnets", 0), True),
    (("cluster", "podSubnets", 0), 10),
    (("nodes", 0, "internalIPs"), []),
    (("nodes", 0, "name"), "n1\n"),
    (("nodes", 0, "name"), "N1"),
    (("pods", 0, "hostInterface"), "veth1\n"),
    (("pods", 0, "hostInterface"), "v" * 16),
    (("pods", 0, "ips"), ["10.244.1.2"] * 3),
]
HAND_PICKED = [
    pytest.param(
        snapshot_with((path, value)),
        id=f"{'.'.join(map(str, path))}={value!r}"[:60] if path else "unchanged",
    )
    for path, value in EDGE_CASES
]


@pytest.mark.parametrize("doc", HAND_PICKED)
def test_fast_schema_check_hand_picked(doc: dict[str, Any]) -> None:
    """Edge cases of JSON Schema's numbers, booleans and const/enum: both checks agree."""
    assert FAST_CHECK(doc) == REFERENCE.is_valid(doc)


NON_STRING_CONSTS = [
    {"const": 1},
    {"const": None},
    {"const": 1.0},
    {"enum": [1, True, None]},
    {"enum": ["a", 0]},
    {"const": ["a"]},
    {"const": {"a": 1}},
    {"const": "a"},
]


@pytest.mark.parametrize("schema", NON_STRING_CONSTS, ids=json.dumps)
def test_fast_schema_check_const_enum(schema: dict[str, Any]) -> None:
    """A const/enum of non-strings either refuses to compile or agrees with jsonschema."""
    try:
        check = compile_schema(schema)
    except NotImplementedError:
        return
    reference = Draft202012Validator(schema)
    for instance in [1, 1.0, True, False, 0, 0.0, None, "a", "1", ["a"], {"a": 1}, [], {}]:
        assert check(instance) == reference.is_valid(instance), instance


# ------------------------------------------------------------------------------------------------
# 5. Bad input only ever raises InvalidInputError
# ------------------------------------------------------------------------------------------------


# Failing cases found by the strategies above, kept so that they run first and every time.
@example(  # TypeError: len() of a non-list spec.podCIDRs in nodelist._convert_node
    case=(
        {"kind": "NodeList", "items": [{"metadata": {"name": "a"}, "spec": {"podCIDRs": 5}}]},
        ("10.244.0.0/16",),
    )
)
@example(  # the node name, newline and all, in a node list problem's place
    case=(
        {
            "kind": "NodeList",
            "items": [
                {
                    "metadata": {"name": "a\n"},
                    "spec": {"podCIDRs": ["10.244.0.0/24"]},
                    "status": {"addresses": [{"type": "InternalIP", "address": "x"}]},
                }
            ],
        },
        ("10.244.0.0/16",),
    )
)
@example(  # the node name, newline and all, in "node ... has an IPv4 PodCIDR but no IPv4 ..."
    case=(
        snapshot_with(
            (("nodes", 0, "name"), "n1\n"),
            (("nodes", 0, "internalIPs"), ["2001:db8::1"]),
            (("pods",), []),
        ),
        (),
    )
)
@example(  # a zone index with a newline, in "... has host bits set"
    case=(snapshot_with((("nodes", 0, "podCIDRs", 1), "fd00:10:244:1::1%\n/64")), ())
)
@FUZZ
@given(case=bad_inputs())
def test_bad_documents_raise_invalid_input_only(case: tuple[Any, tuple[str, ...]]) -> None:
    """A mutated snapshot or node list, as JSON bytes and as YAML text, loads or raises an
    InvalidInputError whose problems all say what is wrong and whose message is one line."""
    doc, pod_subnets = case
    parse_or_invalid(json.dumps(doc).encode(), pod_subnets)
    parse_or_invalid(yaml.safe_dump(doc).encode(), pod_subnets)


@example(case=("mtu: 2001-13-01\n", ()))  # ValueError from the YAML timestamp constructor
@example(case=("mtu: !!int abc\n", ()))  # ValueError
@example(case=("mtu: !!bool maybe\n", ()))  # KeyError
@example(case=("mtu: !!set [1]\n", ()))  # TypeError in yamldoc._StrictLoader.construct_mapping
@FUZZ
@given(case=yaml_texts())
def test_bad_yaml_raises_invalid_input_only(case: tuple[str, tuple[str, ...]]) -> None:
    """A mutated document as YAML with raw YAML scalars and tags spliced in loads or raises a
    well-formed InvalidInputError."""
    text, pod_subnets = case
    parse_or_invalid(text.encode(), pod_subnets)


@example(data=b"\x1b")  # yaml's ReaderError: "...not allowed\n  in "<unicode string>", position 0"
@FUZZ
@given(data=st.binary() | st.text().map(lambda s: s.encode()))
def test_arbitrary_bytes_raise_invalid_input_only(data: bytes) -> None:
    """Arbitrary bytes and text load or raise a well-formed InvalidInputError."""
    parse_or_invalid(data)
