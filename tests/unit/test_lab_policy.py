"""The policy lab's pure parts: the kubectl List and policy files it reads, its matrix text and
JSON, the CNI cache keeping a listed pod's labels, and the NetworkPolicy cases as data (every
case's expected matrix agrees with a small evaluator of the v1 semantics written here)."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import builders
import netpolcases
import pytest
import yaml
from netpolcases import PODS

from kindplan.core.addresses import parse_ip
from kindplan.core.model import Pod
from kindplan.errors import InvalidInputError
from kindplan.lab.cluster import NAME_LABEL, PodPort, load_cluster, load_policies
from kindplan.lab.matrix import ProbePod, Result, as_json, format_text
from kindplan.node.cnicache import with_local_pods


def test_the_model_list() -> None:
    model = load_cluster(netpolcases.MODEL)
    assert model.nodes == ("kind-control-plane", "kind-worker", "kind-worker2")
    assert model.namespaces == tuple(
        (ns, tuple(sorted({NAME_LABEL: ns, "ns": ns}.items()))) for ns in "xyz"
    )
    assert [p.label for p in model.pods] == list(PODS)
    x_b = model.pods[1]
    assert (x_b.node, x_b.labels) == ("kind-worker", (("pod", "b"),))
    assert x_b.ports == (
        PodPort(80, "TCP", "serve-80-tcp"),
        PodPort(80, "UDP", "serve-80-udp"),
        PodPort(81, "TCP", "serve-81-tcp"),
        PodPort(81, "UDP", "serve-81-udp"),
    )
    # every node holds one a, one b and one c
    for node in model.nodes:
        assert sorted(p.name for p in model.pods if p.node == node) == ["a", "b", "c"]


def _list(tmp_path: Path, *items: dict[str, Any]) -> Path:
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": list(items)}))
    return path


def test_bad_lists_name_every_problem(tmp_path: Path) -> None:
    node = {"kind": "Node", "metadata": {"name": "n1"}}
    pod = {
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "x"},
        "spec": {"nodeName": "n9", "containers": [{"ports": [{"containerPort": 0}]}]},
    }
    path = _list(tmp_path, node, pod, {"kind": "Service", "metadata": {"name": "s"}})
    with pytest.raises(InvalidInputError) as caught:
        load_cluster(path)
    assert [str(p) for p in caught.value.problems] == [
        f"{path}: items[1].spec.containers[0].ports[0].containerPort: 0 is not a port number",
        f"{path}: items[2].kind: 'Service' is not Node, Namespace or Pod",
        f"{path}: pod x/p: its node n9 is not in the List",
    ]
    host = {**pod, "spec": {"nodeName": "n1", "hostNetwork": True}}
    with pytest.raises(InvalidInputError, match="hostNetwork pods are not built by the lab"):
        load_cluster(_list(tmp_path, node, host))
    with pytest.raises(InvalidInputError, match="no Node: the lab needs at least one"):
        load_cluster(_list(tmp_path))


def _policy(name: str, namespace: str | None = "x") -> dict[str, Any]:
    meta = {"name": name} | ({"namespace": namespace} if namespace else {})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta,
        "spec": {"podSelector": {}},
    }


def test_policy_files(tmp_path: Path) -> None:
    one, many, empty = tmp_path / "one.yaml", tmp_path / "many.json", tmp_path / "none.yaml"
    one.write_text(yaml.safe_dump(_policy("a", None)))
    many.write_text(json.dumps({"kind": "NetworkPolicyList", "items": [_policy("b")]}))
    empty.write_text("apiVersion: v1\nkind: List\nitems: []\n")
    found = load_policies([one, many, empty])
    assert [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in found] == [
        ("default", "a"),
        ("x", "b"),
    ]
    assert load_policies([empty]) == []
    again = tmp_path / "again.json"
    again.write_text(json.dumps({"kind": "List", "items": [_policy("b"), {"kind": "Pod"}]}))
    with pytest.raises(InvalidInputError) as caught:
        load_policies([many, again])
    assert [str(p) for p in caught.value.problems] == [
        f"{again}: items[0]: policy x/b is also in {many}: items[0]",
        f"{again}: items[1]: 'Pod' is not a NetworkPolicy",
    ]


def test_the_cni_cache_keeps_what_only_the_api_knows() -> None:
    """A pod in the snapshot (labels, ports from the API) and in the node's CNI cache (its veth
    and addresses): the cache's view wins, the labels and ports stay."""
    snapshot = builders.load(builders.cluster_doc(1))
    node = snapshot.nodes[0].name
    listed = Pod(
        "x",
        "a",
        node,
        (parse_ip("10.244.0.5"),),
        "veth00000001",
        labels=(("pod", "a"),),
    )
    cached = replace(listed, host_interface="veth12345678", labels=())
    merged, warnings = with_local_pods(replace(snapshot, pods=(listed,)), node, [cached])
    assert warnings == []
    assert merged.pods == (replace(cached, labels=(("pod", "a"),)),)


def _result() -> Result:
    pods = tuple(
        ProbePod(label, f"n{i % 3}", f"ns{i}", (f"10.244.{i % 3}.{i}",), frozenset({80}))
        for i, label in enumerate(PODS)
    )
    matrix = {(s, d): not (d == "x/a" and s != d) for s in PODS for d in PODS}
    return Result(80, "TCP", pods, {4: matrix}, 1.96)


def test_the_matrix_as_upstream_prints_it() -> None:
    lines = format_text(_result()).splitlines()
    assert lines[0] == (
        "TCP/80 IPv4: 73 of 81 pairs reachable (rows from, columns to; . reachable, X not)"
    )
    assert lines[1] == "-\tx/a\tx/b\tx/c\ty/a\ty/b\ty/c\tz/a\tz/b\tz/c"
    assert lines[2] == "x/a\t.\t.\t.\t.\t.\t.\t.\t.\t."
    assert lines[3] == "x/b\tX\t.\t.\t.\t.\t.\t.\t.\t."
    assert lines[-1] == "81 probes in 2.0 s"


def test_the_json_and_dual_stack() -> None:
    result = _result()
    doc = as_json(result)
    assert doc["pods"]["y/a"] == {"node": "n0", "ips": ["10.244.0.3"]}
    assert doc["reachable"]["y/a"]["x/a"] is False
    assert doc["reachable"]["x/a"]["x/a"] is True
    # dual-stack: a pair is reachable when it is in every family
    v6 = dict.fromkeys(result.reachable[4], True) | {("x/b", "y/c"): False}
    both = replace(result, reachable={4: result.reachable[4], 6: v6})
    assert as_json(both)["reachable"]["x/b"]["y/c"] is False
    assert format_text(both).count("\n-\t") == 2  # a matrix per family: two headers
    assert format_text(both).splitlines()[11].startswith("TCP/80 IPv6: 80 of 81")


# -- the cases ------------------------------------------------------------------------------------

CASES = netpolcases.all_cases()


def test_the_cases_are_there() -> None:
    upstream = [c.upstream for c in CASES if c.upstream]
    assert len(upstream) == 45 and len(set(upstream)) == 45
    assert len(CASES) == 54
    protocols = {p.protocol for c in CASES for s in c.steps for p in s.probes}
    assert protocols == {"TCP", "UDP"}


def test_expected_matrices_as_upstream_builds_them() -> None:
    m = netpolcases.expected_matrix(".", ["* -> x/* X", "x/b -> x/a ."])
    assert [d for d in PODS if not m["y/c", d]] == ["x/a", "x/b", "x/c"]
    assert m["x/b", "x/a"] and not m["x/c", "x/a"]
    denied = netpolcases.expected_matrix("X", ["*/a -> y/* ."])
    assert sum(denied.values()) == 9 and denied["z/a", "y/b"]
    with pytest.raises(ValueError, match="is not `FROM -> TO MARK`"):
        netpolcases.expected_matrix(".", ["x/a => x/b X"])


# A reference evaluator of the v1 semantics, small and slow, to check the cases' data against:
# a transcription error in an expectation (or a policy) shows as a cell where the two differ.
MODEL = load_cluster(netpolcases.MODEL)
IPS = {p.label: f"10.244.{MODEL.nodes.index(p.node)}.{10 + i}" for i, p in enumerate(MODEL.pods)}


def _selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return True
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for req in selector.get("matchExpressions") or []:
        key, op, values = req["key"], req["operator"], req.get("values", [])
        held = {"In": labels.get(key) in values, "NotIn": labels.get(key) not in values}
        held |= {"Exists": key in labels, "DoesNotExist": key not in labels}
        if not held[op]:
            return False
    return True


def _peer(peer: dict[str, Any], policy_ns: str, pod: str, labels: dict[str, Any]) -> bool:
    if "ipBlock" in peer:
        address = ipaddress.ip_address(IPS[pod])
        block = peer["ipBlock"]
        inside = address in ipaddress.ip_network(block["cidr"])
        return inside and not any(
            address in ipaddress.ip_network(e) for e in block.get("except", [])
        )
    ns = pod.split("/", maxsplit=1)[0]
    if "namespaceSelector" in peer:
        ns_ok = _selects(peer["namespaceSelector"], labels[ns])
    else:
        ns_ok = ns == policy_ns
    return ns_ok and _selects(peer.get("podSelector"), labels[pod])


def _port(rule_port: dict[str, Any], dst: str, port: int, protocol: str) -> bool:
    if rule_port.get("protocol", "TCP") != protocol:
        return False
    wanted = rule_port.get("port")
    if wanted is None:
        return True
    if isinstance(wanted, str):
        pod = next(p for p in MODEL.pods if p.label == dst)
        return any(
            p.name == wanted and p.protocol == protocol and p.port == port for p in pod.ports
        )
    return bool(wanted <= port <= rule_port.get("endPort", wanted))


def _allowed(policies: list[dict[str, Any]], labels: dict[str, Any], flow: tuple[str, ...]) -> bool:
    src, dst, port, protocol = flow[0], flow[1], int(flow[2]), flow[3]
    for direction, subject, peer_pod, key, peers_key in (
        ("Ingress", dst, src, "ingress", "from"),
        ("Egress", src, dst, "egress", "to"),
    ):
        mine = [
            p
            for p in policies
            if p["metadata"]["namespace"] == subject.split("/")[0]
            and direction in p["spec"]["policyTypes"]
            and _selects(p["spec"]["podSelector"], labels[subject])
        ]
        if mine and not any(
            (
                not rule.get(peers_key)
                or any(
                    _peer(peer, p["metadata"]["namespace"], peer_pod, labels)
                    for peer in rule[peers_key]
                )
            )
            and (
                not rule.get("ports") or any(_port(rp, dst, port, protocol) for rp in rule["ports"])
            )
            for p in mine
            for rule in p["spec"].get(key) or []
        ):
            return False
    return True


def _labels(changes: list[tuple[str, tuple[str, ...]]]) -> dict[str, dict[str, str]]:
    labels: dict[str, dict[str, str]] = {ns: dict(lab) for ns, lab in MODEL.namespaces}
    labels |= {p.label: dict(p.labels) for p in MODEL.pods}
    for target, sets in changes:
        for change in sets:
            key, _, value = change.partition("=")
            labels[target][key] = value
    return labels


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_every_expected_matrix_agrees_with_the_v1_semantics(case: netpolcases.Case) -> None:
    policies: list[dict[str, Any]] = []
    changes: list[tuple[str, tuple[str, ...]]] = []
    for i, step in enumerate(case.steps):
        if step.policies is not None:
            policies = netpolcases.with_ips(step.policies, IPS)
            assert load_policies_from(policies) == len(policies)
        changes += list(step.labels)
        labels = _labels(changes)
        for probe in step.probes:
            seen = {
                (s, d): _allowed(policies, labels, (s, d, str(probe.port), probe.protocol))
                for s in PODS
                for d in PODS
            }
            wrong = netpolcases.wrong_cells(probe.expected, seen)
            assert not wrong, f"step {i + 1}\n" + netpolcases.summary(probe.expected, seen)


def load_policies_from(policies: list[dict[str, Any]]) -> int:
    """The policies pass the lab's checks, as `lab policy` gets them."""
    return len(load_policies_list(policies))


def load_policies_list(policies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "policies.json"
        path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": policies}))
        return load_policies([path])


def test_the_evaluator_catches_a_wrong_expectation() -> None:
    case = next(c for c in CASES if c.name == "egress-denied-on-client")
    policies = netpolcases.with_ips(case.steps[0].policies or [], IPS)
    seen = {
        (s, d): _allowed(policies, _labels([]), (s, d, "80", "TCP")) for s in PODS for d in PODS
    }
    # upstream's own warning in that test: x/a -> y/b is denied by x/a's egress, though y/b's
    # ingress admits it; an expectation that forgot the egress side is caught
    forgot = netpolcases.expected_matrix(
        ".", ["* -> y/a X", "x/a -> y/a .", "* -> y/b X", "x/a -> y/b ."]
    )
    assert netpolcases.wrong_cells(forgot, seen)[0] == ("x/a", "x/b")
    assert ("x/a", "y/b") in netpolcases.wrong_cells(forgot, seen)
