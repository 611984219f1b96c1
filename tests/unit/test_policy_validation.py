"""What the API server refuses in a NetworkPolicy (k8s.io/kubernetes
pkg/apis/networking/validation/validation.go: ValidateNetworkPolicyPort, ValidateNetworkPolicyPeer,
ValidateIPBlock, ValidateNetworkPolicySpec, ValidateNetworkPolicyName) is never read by kindplan as
something broader: each is named in a warning and fails closed, which the compiled tables hold
(no rule of the policy admits anything; its pods are isolated). Names the API refuses are bad
input: they would name rules in nft's comments."""

from __future__ import annotations

from typing import Any

import pytest
from builders import load
from policycase import model, pod_end, policy

from kindplan.core.policy.compile import compile_policy
from kindplan.core.policy.parse import parse_policy
from kindplan.core.policy.path import path_verdicts
from kindplan.core.policyvalues import EGRESS, INGRESS
from kindplan.errors import InvalidInputError

PODS = tuple(f"{ns}/{p}" for ns in "xyz" for p in "abc")
PROBES = (("TCP", 80), ("TCP", 81), ("UDP", 80), ("SCTP", 81), ("TCP", 8080))

Spec = dict[str, Any]


def _ingress_port(port: Spec) -> Spec:
    return {"podSelector": {}, "ingress": [{"ports": [port]}]}


def _ingress_peer(peer: Any) -> Spec:
    return {"podSelector": {}, "ingress": [{"from": [peer]}]}


def _egress_peer(peer: Any) -> Spec:
    return {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [peer]}]}


# (spec, where below the policy, what): what the API refuses, and what kindplan says of it
REFUSED: list[tuple[Spec, str, str]] = [
    (
        _ingress_port({"endPort": 90}),
        "spec.ingress[0].ports[0].endPort",
        "an endPort needs a port",
    ),
    (
        _ingress_port({"port": 90, "endPort": 80}),
        "spec.ingress[0].ports[0].endPort",
        "80 is below the port 90",
    ),
    (
        _ingress_port({"port": "serve-80-tcp", "endPort": 90}),
        "spec.ingress[0].ports[0].endPort",
        "an endPort needs a numeric port",
    ),
    (
        _ingress_port({"port": 80, "endPort": 70000}),
        "spec.ingress[0].ports[0].endPort",
        "70000 is not a port (1 to 65535)",
    ),
    (_ingress_port({"port": 0}), "spec.ingress[0].ports[0].port", "0 is not a port (1 to 65535)"),
    (_ingress_port({"port": "80"}), "spec.ingress[0].ports[0].port", "'80' is not a port name"),
    (
        _ingress_port({"port": "serve--80"}),
        "spec.ingress[0].ports[0].port",
        "'serve--80' is not a port name",
    ),
    (
        _ingress_port({"port": "a-very-long-port-name"}),
        "spec.ingress[0].ports[0].port",
        "'a-very-long-port-name' is not a port name",
    ),
    (
        _ingress_port({"port": 80, "protocol": "ICMP"}),
        "spec.ingress[0].ports[0].protocol",
        "'ICMP' is not TCP, UDP or SCTP",
    ),
    (
        _ingress_port({"port": 80, "protocol": "tcp"}),
        "spec.ingress[0].ports[0].protocol",
        "'tcp' is not TCP, UDP or SCTP",
    ),
    (
        _ingress_peer({"ipBlock": {"cidr": "10.0.0.0/33"}}),
        "spec.ingress[0].from[0].ipBlock.cidr",
        "'10.0.0.0/33' is not a CIDR",
    ),
    (
        _ingress_peer({"ipBlock": {"cidr": "10.244.0.5"}}),
        "spec.ingress[0].from[0].ipBlock.cidr",
        "'10.244.0.5' is not a CIDR",
    ),
    (
        _ingress_peer({"ipBlock": {"cidr": "010.0.0.0/8"}}),
        "spec.ingress[0].from[0].ipBlock.cidr",
        "'010.0.0.0/8' is not a CIDR",
    ),
    (
        _ingress_peer({"ipBlock": {"cidr": "::ffff:10.244.0.0/112"}}),
        "spec.ingress[0].from[0].ipBlock.cidr",
        "'::ffff:10.244.0.0/112' is an IPv4-mapped IPv6 CIDR",
    ),
    (
        _ingress_peer({"ipBlock": {"cidr": ""}}),
        "spec.ingress[0].from[0].ipBlock.cidr",
        "'' is not a CIDR",
    ),
    (
        _ingress_peer({"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.0.0/8"]}}),
        "spec.ingress[0].from[0].ipBlock.except[0]",
        "10.0.0.0/8 does not lie strictly inside 10.0.0.0/8",
    ),
    (
        _ingress_peer({"ipBlock": {"cidr": "10.244.0.0/16", "except": ["10.0.0.0/8"]}}),
        "spec.ingress[0].from[0].ipBlock.except[0]",
        "10.0.0.0/8 does not lie strictly inside 10.244.0.0/16",
    ),
    (
        _ingress_peer({"ipBlock": {"cidr": "0.0.0.0/0", "except": ["fd00::/8"]}}),
        "spec.ingress[0].from[0].ipBlock.except[0]",
        "fd00::/8 does not lie strictly inside 0.0.0.0/0",
    ),
    (
        _ingress_peer({"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/40"]}}),
        "spec.ingress[0].from[0].ipBlock.except[0]",
        "'10.0.0.0/40' is not a CIDR",
    ),
    (
        _ingress_peer({"ipBlock": {"cidr": "0.0.0.0/0", "exception": ["10.0.0.0/8"]}}),
        "spec.ingress[0].from[0].ipBlock.exception",
        "is not a field of an ipBlock",
    ),
    (
        _ingress_peer({"ipBlock": {"cidr": "0.0.0.0/0"}, "podSelector": {}}),
        "spec.ingress[0].from[0]",
        "an ipBlock peer takes no selector",
    ),
    (
        _egress_peer({"ipBlock": {"cidr": "0.0.0.0/0"}, "namespaceSelector": {}}),
        "spec.egress[0].to[0]",
        "an ipBlock peer takes no selector",
    ),
    (
        _ingress_peer({}),
        "spec.ingress[0].from[0]",
        "a peer names a podSelector, a namespaceSelector or an ipBlock",
    ),
    (
        {"podSelector": {}, "ingress": [{"fromm": [{"podSelector": {}}]}]},
        "spec.ingress[0].fromm",
        "is not a field of an ingress rule",
    ),
    (
        {"podSelector": {}, "ingress": [{"to": [{"podSelector": {}}]}]},
        "spec.ingress[0].to",
        "is not a field of an ingress rule",
    ),
    (
        _ingress_port({"port": 80, "protocl": "UDP"}),
        "spec.ingress[0].ports[0].protocl",
        "is not a field of a port",
    ),
    (
        {"podSelector": {}, "ingres": [{}]},
        "spec.ingres",
        "is not a field of a spec",
    ),
    (
        {"podSelector": {}, "policyTypes": ["Ingress", "Egress", "Ingress"]},
        "spec.policyTypes",
        "names more than two policy types",
    ),
    (
        {"podSelector": {}, "policyTypes": ["Ingress", "Sideways"]},
        "spec.policyTypes[1]",
        "'Sideways' is not Ingress or Egress",
    ),
    (
        _ingress_peer({"podSelector": {"matchExpressions": [{"key": "pod", "operator": "In"}]}}),
        "spec.ingress[0].from[0].podSelector.matchExpressions[0].values",
        "In needs at least one value",
    ),
    (  # found by tests/fuzz/test_fuzz_policy.py: a TypeError (unhashable) before
        _ingress_peer(
            {
                "podSelector": {
                    "matchExpressions": [{"key": "pod", "operator": ["In"], "values": ["a"]}]
                }
            }
        ),
        "spec.ingress[0].from[0].podSelector.matchExpressions[0].operator",
        "['In'] is not In, NotIn, Exists, DoesNotExist",
    ),
    (
        _ingress_peer({"namespaceSelector": {"matchLabels": {"ns": "x y"}}}),
        "spec.ingress[0].from[0].namespaceSelector.matchLabels.ns",
        "'x y' is not a label value",
    ),
]


@pytest.mark.parametrize(("spec", "where", "what"), REFUSED, ids=lambda v: str(v)[:40])
def test_what_the_api_refuses_is_named_and_fails_closed(spec: Spec, where: str, what: str) -> None:
    raw = policy("x", "p", **spec)
    parsed, problem = parse_policy(raw, "networkPolicies[0]")
    assert problem is not None
    assert (problem.where, problem.what) == (
        f"networkPolicies[0].{where}",
        f"{what}; policy x/p fails closed",
    )
    assert parsed.ingress == parsed.egress == ()
    assert_isolates(raw)


def assert_isolates(raw: dict[str, Any]) -> None:
    """Compiled into every node's table and evaluated there: no connection to (ingress) or from
    (egress) a pod the policy isolates gets through, and nothing is admitted by its rules."""
    snapshot = model([raw])
    (parsed,) = snapshot.policies
    tables = {node.name: compile_policy(snapshot, node) for node in snapshot.nodes}
    for table in tables.values():
        assert table is not None
        comment = f'comment "{parsed.namespace}/{parsed.name} '
        assert not any(comment in rule for c in table.chains for rule in c.rules)
    selected = {f"{p.namespace}/{p.name}" for p in snapshot.pods if p.namespace == parsed.namespace}
    for src in PODS:
        for dst in PODS:
            if src == dst:
                continue
            isolated = (INGRESS in parsed.policy_types and dst in selected) or (
                EGRESS in parsed.policy_types and src in selected
            )
            for protocol, port in PROBES:
                hops = path_verdicts(
                    tables, pod_end(snapshot, src), pod_end(snapshot, dst), protocol, port
                )
                allowed = all(h.accepted for h in hops)
                assert allowed == (not isolated), (src, dst, protocol, port)


def test_the_isolation_check_sees_a_policy_that_admits() -> None:
    """assert_isolates fails for a policy that is understood and admits something."""
    with pytest.raises(AssertionError):
        assert_isolates(policy("x", "p", podSelector={}, ingress=[{"ports": [{"port": 80}]}]))


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        (
            {"namespace": "x", "name": 'evil" drop; flush ruleset; #'},
            "networkPolicies[0].metadata.name: 'evil\" drop; flush ruleset; #' is not a "
            "NetworkPolicy name (a DNS subdomain)",
        ),
        (
            {"namespace": "x", "name": "Upper"},
            "networkPolicies[0].metadata.name: 'Upper' is not a NetworkPolicy name (a DNS "
            "subdomain)",
        ),
        (
            {"namespace": "x.y", "name": "p"},
            "networkPolicies[0].metadata.namespace: 'x.y' is not a namespace name (a DNS label)",
        ),
        (
            {"namespace": "x", "name": "a" * 254},
            f"networkPolicies[0].metadata.name: {'a' * 80!r} is not a NetworkPolicy name (a "
            "DNS subdomain)",
        ),
    ],
)
def test_names_the_api_refuses_are_bad_input(metadata: dict[str, str], message: str) -> None:
    """A policy's namespace/name goes into its rules' nft comments: a quote in it reached the
    `nft -f` transaction before."""
    from builders import cluster_doc

    doc = cluster_doc(2)
    doc["networkPolicies"] = [{"metadata": metadata, "spec": {"podSelector": {}}}]
    with pytest.raises(InvalidInputError) as caught:
        load(doc)
    assert [str(p) for p in caught.value.problems] == [message]


def test_the_longest_names_the_api_allows_are_read() -> None:
    raw = policy("n" * 63, "a." + "b" * 250, podSelector={})
    parsed, problem = parse_policy(raw, "networkPolicies[0]")
    assert problem is None and parsed.key == ("n" * 63, "a." + "b" * 250)
