"""show's lines for a node's policy table (core/policy/shown.py), from a compiled table as a
node would hold it: the policies by their pods sets' comments and rules, their local pods."""

from __future__ import annotations

from dataclasses import replace

from policycase import NODES, model, policy

from kindplan.core.policy.compile import compile_policy
from kindplan.core.policy.shown import policy_table_lines
from kindplan.core.policytable import ABSENT, PolicyRead

POLICIES = [
    policy("x", "deny-all", podSelector={}, policyTypes=["Ingress", "Egress"]),
    policy(
        "x",
        "allow-b",
        podSelector={"matchLabels": {"pod": "a"}},
        ingress=[
            {"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]},
            {"ports": [{"port": "serve-80-tcp"}]},
        ],
    ),
    policy("y", "elsewhere", podSelector={"matchLabels": {"pod": "c"}}, egress=[{}]),
]


def test_a_table_named_in_policies_and_pods() -> None:
    snapshot = model(POLICIES)
    table = compile_policy(snapshot, NODES[0])  # x/a, y/a, z/a run here
    assert table is not None
    assert policy_table_lines(PolicyRead(table), snapshot) == [
        "NetworkPolicy: table inet kindplan-policy (7 sets, 6 elements, 10 rules)",
        "  policy x/allow-b: selects x/a; ingress rules 0, 1",
        "  policy x/deny-all: selects x/a; no rule admits",
        "  policy y/elsewhere: selects no local pod; egress rule 0",
        "  isolated for ingress: x/a",
        "  isolated for egress: x/a",
    ]
    # without a snapshot, the addresses
    assert (
        policy_table_lines(PolicyRead(table))[1]
        == "  policy x/allow-b: selects 10.244.0.10; ingress rules 0, 1"
    )


def test_absent_foreign_and_unread() -> None:
    assert policy_table_lines(ABSENT) == ["NetworkPolicy: no table inet kindplan-policy"]
    assert policy_table_lines(PolicyRead(None, foreign=True)) == [
        "NetworkPolicy: table inet kindplan-policy: not kindplan's (no marker); left alone"
    ]
    table = compile_policy(model(POLICIES[:1]), NODES[1])
    assert table is not None
    bare = replace(table, sets=tuple(replace(s, comment="") for s in table.sets))
    lines = policy_table_lines(PolicyRead(bare, ("map m { }",)))
    # a pods set without its comment (a table another writer left) names no policy
    assert lines[1:] == [
        "  isolated for ingress: 10.244.1.11",
        "  isolated for egress: 10.244.1.11",
        "  not understood: map m { }",
    ]
