"""Property tests of NetworkPolicy: over random namespaces, pods, labels and policies (read from
API objects, malformed ones included), the compiled tables of the nodes a connection crosses
decide exactly as the reference evaluator; and pods or labels that change change set elements
only, never the table's structure."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import ip_address, ip_network
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kindplan.core.model import Cluster, Node, Pod, Snapshot
from kindplan.core.nfttable import NftTable
from kindplan.core.policy.compile import compile_policy
from kindplan.core.policy.evaluate import Endpoint, evaluate
from kindplan.core.policy.parse import parse_policy
from kindplan.core.policy.path import path_verdicts
from kindplan.core.policy.tableeval import TableEvaluator
from kindplan.core.policytable import check_table
from kindplan.core.policyvalues import ContainerPort, Namespace

NODES = tuple(
    Node(
        f"n{i}",
        (ip_address(f"172.18.0.{10 + i}"), ip_address(f"fc00::{10 + i}")),
        (ip_network(f"10.244.{i}.0/24"), ip_network(f"fd00:10:244:{i}::/64")),
    )
    for i in range(3)
)
NAMESPACES = ("x", "y", "z")
CONTAINER_PORTS = (
    ContainerPort(80, "TCP", "serve-80-tcp"),
    ContainerPort(80, "UDP", "serve-80-udp"),
    ContainerPort(81, "SCTP", "serve-81-sctp"),
    ContainerPort(81, "TCP", "serve-81-tcp"),
    ContainerPort(53, "UDP", "dns"),
    ContainerPort(5353, "TCP", "dns"),  # the same name, another protocol: resolved per protocol
)
PROBES = (("TCP", 80), ("UDP", 80), ("SCTP", 81), ("TCP", 81), ("UDP", 53), ("TCP", 5353))
EXTERNAL = (ip_address("192.0.2.10"), ip_address("2001:db8::10"))

labels = st.dictionaries(
    st.sampled_from(["pod", "app", "tier"]), st.sampled_from(["a", "b", "c"]), max_size=2
)


@st.composite
def pods(draw: Any) -> tuple[Pod, ...]:
    out = []
    for i in range(draw(st.integers(2, 6))):
        node = draw(st.integers(0, 2))
        host = draw(st.integers(0, 9)) == 0
        if host:
            ips = NODES[node].internal_ips
        else:
            ips = (
                NODES[node].pod_cidrs[0].network_address + 10 + i,
                NODES[node].pod_cidrs[1].network_address + 10 + i,
            )
        declared = draw(st.lists(st.sampled_from(CONTAINER_PORTS), unique=True, max_size=4))
        out.append(
            Pod(
                draw(st.sampled_from(NAMESPACES)),
                f"p{i}",
                f"n{node}",
                ips,
                f"veth{i}",
                labels=tuple(sorted(draw(labels).items())),
                ports=tuple(declared),
                host_network=host,
            )
        )
    return tuple(out)


def selector() -> Any:
    expression = st.fixed_dictionaries(
        {
            "key": st.sampled_from(["pod", "app", "ns"]),
            "operator": st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist"]),
        }
    ).flatmap(
        lambda e: (
            st.just(e)
            if e["operator"] in ("Exists", "DoesNotExist")
            else st.lists(st.sampled_from(["a", "b", "x", "y"]), min_size=1, max_size=2).map(
                lambda v: {**e, "values": v}
            )
        )
    )
    full = st.fixed_dictionaries(
        {},
        optional={
            "matchLabels": st.dictionaries(
                st.sampled_from(["pod", "app", "ns"]),
                st.sampled_from(["a", "b", "x", "y"]),
                max_size=1,
            ),
            "matchExpressions": st.lists(expression, max_size=2),
        },
    )
    return st.one_of(st.just({}), full)  # an empty selector (everything) half of the time


ip_block = st.sampled_from(
    [
        {"cidr": "10.244.0.0/16", "except": ["10.244.1.0/24"]},
        {"cidr": "10.244.0.0/22", "except": ["10.244.2.0/25", "10.244.0.12/30"]},
        {"cidr": "0.0.0.0/0"},
        {"cidr": "172.18.0.0/16"},
        {"cidr": "fd00:10:244::/48", "except": ["fd00:10:244:1::/64"]},
        {"cidr": "::/0", "except": ["fd00:10:244:2::/64"]},
        {"cidr": "192.0.2.0/24"},
    ]
)
peer = st.one_of(
    st.fixed_dictionaries({"podSelector": selector()}),
    st.fixed_dictionaries({"namespaceSelector": selector()}),
    st.fixed_dictionaries({"podSelector": selector(), "namespaceSelector": selector()}),
    st.fixed_dictionaries({"ipBlock": ip_block}),
)
port = st.one_of(
    st.fixed_dictionaries({}, optional={"protocol": st.sampled_from(["TCP", "UDP", "SCTP"])}),
    st.fixed_dictionaries(
        {"port": st.sampled_from([53, 80, 81, 5353])},
        optional={"protocol": st.sampled_from(["TCP", "UDP", "SCTP"])},
    ),
    st.fixed_dictionaries(
        {"port": st.sampled_from([53, 79, 80]), "endPort": st.sampled_from([80, 81, 6000])},
        optional={"protocol": st.sampled_from(["TCP", "UDP", "SCTP"])},
    ),
    st.sampled_from(  # named ports, mostly with the protocol they are declared with
        [
            {"port": "serve-80-tcp"},
            {"port": "serve-80-udp", "protocol": "UDP"},
            {"port": "serve-81-sctp", "protocol": "SCTP"},
            {"port": "dns", "protocol": "UDP"},
            {"port": "dns"},
            {"port": "serve-80-udp"},
        ]
    ),
)


def rule(peers_field: str) -> Any:
    return st.fixed_dictionaries(
        {},
        optional={peers_field: st.lists(peer, max_size=2), "ports": st.lists(port, max_size=2)},
    )


@st.composite
def policy(draw: Any, index: int) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": draw(selector())}
    for field, peers_field in (("ingress", "from"), ("egress", "to")):
        if draw(st.booleans()):  # absent, or a list (empty: nothing admitted)
            spec[field] = draw(st.lists(rule(peers_field), max_size=2))
    types = draw(st.sampled_from([None, ["Ingress"], ["Egress"], ["Ingress", "Egress"]]))
    if types is not None:
        spec["policyTypes"] = types
    if draw(st.integers(0, 11)) == 0:  # not understood: fails closed
        spec["podSelector"] = {"matchExpressions": [{"key": "pod", "operator": "Near"}]}
    if draw(st.integers(0, 11)) == 0:
        spec["ingress"] = [{"ports": [{"port": 70000}]}]
    namespace = draw(st.sampled_from(NAMESPACES))
    return {"metadata": {"namespace": namespace, "name": f"np{index}"}, "spec": spec}


@st.composite
def snapshots(draw: Any) -> Snapshot:
    raw = [draw(policy(i)) for i in range(draw(st.integers(0, 4)))]
    policies = tuple(parse_policy(p, f"networkPolicies[{i}]")[0] for i, p in enumerate(raw))
    namespaces = tuple(
        Namespace(n, tuple(sorted({"ns": n, **draw(labels)}.items())))
        for n in NAMESPACES
        if draw(st.integers(0, 5)) != 0  # a namespace not listed: only its name
    )
    dual = draw(st.booleans())
    subnets = (ip_network("10.244.0.0/16"),) + ((ip_network("fd00:10:244::/48"),) if dual else ())
    pod_list = draw(pods())
    if not dual:
        pod_list = tuple(replace(p, ips=p.ips[:1]) for p in pod_list)
    return Snapshot(
        Cluster(subnets),
        NODES,
        tuple(sorted(pod_list, key=lambda p: p.key)),
        namespaces,
        tuple(sorted(policies, key=lambda p: p.key)),
    )


def endpoints(snapshot: Snapshot) -> list[Endpoint]:
    ends = [
        Endpoint(ip, pod, pod.node if pod.host_network else None)
        for pod in snapshot.pods
        for ip in pod.ips
    ]
    ends += [Endpoint(ip, None, n.name) for n in snapshot.nodes[:2] for ip in n.internal_ips]
    ends += [Endpoint(ip) for ip in EXTERNAL]
    return [e for e in ends if e.address.version in snapshot.families]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snapshots())
def test_every_compiled_table_is_one_the_node_side_writes(snapshot: Snapshot) -> None:
    """What compile emits passes the checks the node side makes of every text it sends to nft
    (and of a journal's: no text that could end its nft command): a dual-stack table's rule
    with an anonymous set once failed there, in every apply."""
    for node in snapshot.nodes:
        table = compile_policy(snapshot, node)
        assert table is None or check_table(table) == table


@given(snapshots())
def test_tables_decide_as_the_reference(snapshot: Snapshot) -> None:
    tables = {n.name: compile_policy(snapshot, n) for n in snapshot.nodes}
    evaluators: dict[str, TableEvaluator] = {}
    ends = endpoints(snapshot)
    for src in ends:
        for dst in ends:
            if src.address.version != dst.address.version or src.address == dst.address:
                continue  # a pod to itself is not judged (loopback)
            if src.pod is None and dst.pod is None:
                continue
            for protocol, number in PROBES:
                want = evaluate(snapshot, src, dst, protocol, number)
                hops = path_verdicts(tables, src, dst, protocol, number, evaluators=evaluators)
                got = all(h.accepted for h in hops)
                assert got == want.allowed, (src.label, dst.label, protocol, number, want, hops)


@settings(max_examples=150, deadline=None)
@given(snapshots(), st.data())
def test_pods_and_labels_change_elements_only(snapshot: Snapshot, data: Any) -> None:
    changed_pods = list(snapshot.pods)
    index = data.draw(st.integers(0, len(changed_pods) - 1))
    what = data.draw(st.sampled_from(["labels", "gone", "moved", "ports", "namespace"]))
    pod = changed_pods[index]
    if what == "gone":
        del changed_pods[index]
    elif what == "labels":
        changed_pods[index] = replace(pod, labels=tuple(sorted(data.draw(labels).items())))
    elif what == "ports":
        changed_pods[index] = replace(pod, ports=CONTAINER_PORTS[:2])
    elif what == "moved":
        changed_pods[index] = replace(pod, node=f"n{(int(pod.node[1]) + 1) % 3}")
    namespaces = snapshot.namespaces
    if what == "namespace":  # a namespace's labels change: x loses its own, gains others
        others = [n for n in namespaces if n.name != "x"]
        namespaces = (Namespace("x", tuple(sorted(data.draw(labels).items()))), *others)
    changed = replace(snapshot, pods=tuple(changed_pods), namespaces=namespaces)
    for node in snapshot.nodes:
        before, after = compile_policy(snapshot, node), compile_policy(changed, node)
        assert (before is None) == (after is None)
        if before is not None and after is not None:
            assert before.structure() == after.structure()


def _unneeded_sets(table: NftTable) -> list[str]:
    """The peer and named-port sets of `table` that hold elements although every rule using
    them matches only the packets of an empty set of selected local pods (`@pN-pods-F`)."""
    pods = {s.name: s.elements for s in table.sets if "-pods-" in s.name}
    rules = [r for c in table.chains for r in c.rules]
    found = []
    for s in table.sets:
        if s.name in pods or "isolated" in s.name or not s.elements:
            continue
        users = [r for r in rules if f"@{s.name} " in r]
        # a rule without an `@pN-pods-F` (an ingress named-port rule) is its own judge: its
        # named set's destinations are the selected local pods themselves
        owned = [[w[1:] for w in r.split() if w in _pod_sets(pods)] for r in users]
        if users and all(o and not any(pods[n] for n in o) for o in owned):
            found.append(s.name)
    return found


def _pod_sets(pods: dict[str, frozenset[str]]) -> set[str]:
    return {f"@{name}" for name in pods}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snapshots())
def test_sets_serve_local_pods_only(snapshot: Snapshot) -> None:
    """A peer or named-port set is filled only when a policy using it selects a local pod: the
    rest (most of a big cluster's) are declared empty, and a pod that arrives fills them."""
    for node in snapshot.nodes:
        table = compile_policy(snapshot, node)
        if table is not None:
            assert _unneeded_sets(table) == [], node.name


def test_an_unselecting_policy_keeps_its_sets_declared_and_empty() -> None:
    """One policy whose peers are every pod: on the node of the pod it selects its peer set
    holds them; on another node the same set is declared, empty, and fills once such a pod
    arrives there (elements only)."""
    raw = {
        "metadata": {"namespace": "x", "name": "np"},
        "spec": {
            "podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [{"from": [{"namespaceSelector": {}}]}],
            "egress": [{"ports": [{"port": "dns", "protocol": "UDP"}]}],
            "policyTypes": ["Ingress", "Egress"],
        },
    }
    policy = parse_policy(raw, "networkPolicies[0]")[0]
    a = Pod(
        "x",
        "a",
        "n0",
        (ip_address("10.244.0.10"),),
        None,
        labels=(("pod", "a"),),
        ports=(CONTAINER_PORTS[4],),
    )
    b = Pod("y", "b", "n1", (ip_address("10.244.1.11"),), None, ports=(CONTAINER_PORTS[4],))
    snapshot = Snapshot(Cluster((ip_network("10.244.0.0/16"),)), NODES, (a, b), (), (policy,))
    sets = {
        n.name: {s.name: s.elements for s in t.sets}
        for n in NODES[:2]
        if (t := compile_policy(snapshot, n)) is not None
    }
    assert sets["n0"]["p0-i0-v4"] == {"10.244.0.10", "10.244.1.11"}
    assert sets["n0"]["p0-e0-named-v4"] == {"10.244.0.10 . udp . 53", "10.244.1.11 . udp . 53"}
    assert sets["n1"]["p0-i0-v4"] == sets["n1"]["p0-e0-named-v4"] == frozenset()
    moved = replace(snapshot, pods=(replace(a, node="n1"), b))  # a arrives on n1
    before, after = compile_policy(snapshot, NODES[1]), compile_policy(moved, NODES[1])
    assert before is not None and after is not None
    assert before.structure() == after.structure()
    assert {s.name: s.elements for s in after.sets}["p0-i0-v4"] == {"10.244.0.10", "10.244.1.11"}
