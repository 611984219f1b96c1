"""Reading NetworkPolicy objects: the API's defaults and validation, fail-closed readings of what
is not understood (a warning naming where and what), and the snapshot's networkPolicies: bad
input only when there is no list of objects or a policy has no metadata.name/namespace."""

from __future__ import annotations

import json
import subprocess
import sys
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import pytest
from builders import cluster_doc, load
from policycase import policy

from kindplan.core.policy.parse import parse_policy
from kindplan.core.policyvalues import (
    EGRESS,
    INGRESS,
    IPBlock,
    LabelSelector,
    PolicyPeer,
    PolicyPort,
    PolicyRule,
    Requirement,
)
from kindplan.errors import InvalidInputError


def parsed(**spec: Any) -> Any:
    result, problem = parse_policy(policy("x", "p", **spec), "networkPolicies[0]")
    return result, problem


@pytest.mark.parametrize(
    ("spec", "types"),
    [
        ({}, (INGRESS,)),
        ({"egress": []}, (INGRESS,)),  # no egress rules: Ingress only, as the API defaults
        ({"egress": [{}]}, (INGRESS, EGRESS)),
        ({"policyTypes": ["Egress"]}, (EGRESS,)),
        ({"policyTypes": ["Egress", "Ingress"]}, (INGRESS, EGRESS)),
    ],
)
def test_policy_types_default_as_the_api(spec: dict[str, Any], types: tuple[str, ...]) -> None:
    result, problem = parsed(podSelector={}, **spec)
    assert problem is None
    assert result.policy_types == types


def test_empty_and_absent_lists() -> None:
    """ingress: [] admits nothing; an absent or empty from/ports is everyone/every port."""
    absent, _ = parsed(podSelector={})
    empty, _ = parsed(podSelector={}, ingress=[])
    everyone, _ = parsed(podSelector={}, ingress=[{"from": [], "ports": []}])
    also, _ = parsed(podSelector={}, ingress=[{}])
    assert absent.ingress == empty.ingress == ()
    assert everyone.ingress == also.ingress == (PolicyRule(),)


def test_the_whole_v1_api() -> None:
    result, problem = parsed(
        podSelector={
            "matchExpressions": [{"key": "pod", "operator": "NotIn", "values": ["b", "a"]}]
        },
        ingress=[
            {
                "from": [
                    {"namespaceSelector": {"matchLabels": {"ns": "y"}}, "podSelector": {}},
                    {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
                ],
                "ports": [
                    {"port": 80, "endPort": 90},
                    {"port": "serve-81-udp", "protocol": "UDP"},
                    {"protocol": "SCTP"},
                ],
            }
        ],
    )
    assert problem is None
    assert result.pod_selector == LabelSelector((), (Requirement("pod", "NotIn", ("a", "b")),))
    (rule,) = result.ingress
    assert rule.peers == (
        PolicyPeer(LabelSelector(), LabelSelector((("ns", "y"),))),
        PolicyPeer(ip_block=IPBlock(ip_network("10.0.0.0/8"), (ip_network("10.1.0.0/16"),))),
    )
    assert rule.ports == (
        PolicyPort("TCP", 80, 90),
        PolicyPort("UDP", "serve-81-udp"),
        PolicyPort("SCTP"),
    )


@pytest.mark.parametrize(
    ("spec", "where", "what"),
    [
        (
            {"podSelector": {}, "ingress": [{"ports": [{"port": 0}]}]},
            "spec.ingress[0].ports[0].port",
            "0 is not a port (1 to 65535)",
        ),
        (
            {"podSelector": {}, "ingress": [{"ports": [{"port": "http", "endPort": 90}]}]},
            "spec.ingress[0].ports[0].endPort",
            "an endPort needs a numeric port",
        ),
        (
            {
                "podSelector": {},
                "egress": [
                    {"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}}]}
                ],
            },
            "spec.egress[0].to[0].ipBlock.except[0]",
            "11.0.0.0/16 does not lie strictly inside 10.0.0.0/8",
        ),
        (
            {
                "podSelector": {},
                "ingress": [
                    {
                        "from": [
                            {
                                "podSelector": {
                                    "matchExpressions": [
                                        {"key": "a", "operator": "Exists", "values": ["x"]}
                                    ]
                                }
                            }
                        ]
                    }
                ],
            },
            "spec.ingress[0].from[0].podSelector.matchExpressions[0].values",
            "Exists takes no values",
        ),
        (
            {"podSelector": {}, "ingress": [{"ports": [{"port": 80, "protocol": "ICMP"}]}]},
            "spec.ingress[0].ports[0].protocol",
            "'ICMP' is not TCP, UDP or SCTP",
        ),
        (
            {"podSelector": {}, "ingress": [{"from": [{}]}]},
            "spec.ingress[0].from[0]",
            "a peer names a podSelector, a namespaceSelector or an ipBlock",
        ),
    ],
)
def test_not_understood_fails_closed(spec: dict[str, Any], where: str, what: str) -> None:
    result, problem = parse_policy(policy("x", "p", **spec), "networkPolicies[3]")
    assert problem is not None
    assert problem.where == f"networkPolicies[3].{where}"
    assert problem.what == f"{what}; policy x/p fails closed"
    assert result.problem == problem.what
    assert result.ingress == result.egress == ()  # isolated, nothing admitted
    assert INGRESS in result.policy_types


def test_an_unreadable_pod_selector_selects_the_whole_namespace_both_ways() -> None:
    result, problem = parsed(podSelector={"matchLabels": {"pod": ["a"]}}, policyTypes=["Ingress"])
    assert problem is not None
    assert result.pod_selector == LabelSelector()
    assert result.policy_types == (INGRESS, EGRESS)


def test_unreadable_policy_types_isolate_both_ways() -> None:
    result, problem = parsed(podSelector={"matchLabels": {"pod": "a"}}, policyTypes=["Sideways"])
    assert problem is not None and problem.where.endswith("spec.policyTypes[0]")
    assert result.pod_selector == LabelSelector((("pod", "a"),))
    assert result.policy_types == (INGRESS, EGRESS)


def snapshot_doc(policies: list[Any]) -> dict[str, Any]:
    doc = cluster_doc(2)
    doc["networkPolicies"] = policies
    return doc


def test_the_snapshot_holds_its_policies_sorted_and_warns() -> None:
    doc = snapshot_doc(
        [
            policy("y", "b", podSelector={}),
            policy("x", "z", podSelector={"matchLabels": {"bad key!": "a"}}),
            policy("x", "a", podSelector={}),
        ]
    )
    from kindplan.inputs.kinds import parse_snapshot

    loaded = parse_snapshot(json.dumps(doc).encode())
    assert [p.key for p in loaded.snapshot.policies] == [("x", "a"), ("x", "z"), ("y", "b")]
    assert [str(w) for w in loaded.warnings] == [
        "networkPolicies[1].spec.podSelector.matchLabels: 'bad key!' is not a label key; "
        "policy x/z fails closed"
    ]
    assert load(cluster_doc(2)).policies == ()


@pytest.mark.parametrize(
    ("policies", "message"),
    [
        (
            [policy("x", "a"), {"metadata": {"namespace": "x"}}],
            "networkPolicies[1].metadata.name: a NetworkPolicy needs metadata.name",
        ),
        (
            [policy("x", "a"), policy("x", "a")],
            "networkPolicies[1]: duplicate NetworkPolicy x/a (also networkPolicies[0])",
        ),
        ([1], "networkPolicies[0]: 1 is not of type 'object'"),
        ({"a": 1}, "networkPolicies: {'a': 1} is not of type 'array'"),
    ],
)
def test_bad_input(policies: Any, message: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        load(snapshot_doc(policies))
    assert [str(p) for p in caught.value.problems] == [message]


def test_bad_input_exits_65_with_one_line(tmp_path: Path) -> None:
    doc = snapshot_doc(
        [policy("x", "a"), policy("x", "b"), policy("x", "c"), {"metadata": {"namespace": "x"}}]
    )
    path = tmp_path / "snapshot.json"
    path.write_text(json.dumps(doc))
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from kindplan.cli import main; sys.exit(main())",
            "validate",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 65
    assert result.stderr == (
        "error: networkPolicies[3].metadata.name: a NetworkPolicy needs metadata.name\n"
    )
