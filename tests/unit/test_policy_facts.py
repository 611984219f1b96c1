"""The plan's NetworkPolicy lines: what a table means in pods and policies, and what a change of
table gains and loses, in text and JSON (schemas/plan.schema.json)."""

from __future__ import annotations

from dataclasses import replace

from jsonschema import Draft202012Validator
from policycase import model, policy

from kindplan.core.changes import Plan
from kindplan.core.model import Snapshot
from kindplan.core.planview import format_plan, plan_to_json
from kindplan.core.policy.compile import compile_policy
from kindplan.core.policy.facts import policy_lines
from kindplan.resources import load_schema

ALLOW_Y = policy(
    "x",
    "allow-y",
    podSelector={"matchLabels": {"pod": "a"}},
    ingress=[
        {
            "from": [
                {
                    "namespaceSelector": {"matchLabels": {"ns": "y"}},
                    "podSelector": {"matchLabels": {"pod": "b"}},
                },
                {"ipBlock": {"cidr": "192.0.2.0/24"}},
            ],
            "ports": [{"port": 80}],
        }
    ],
)
EGRESS = policy(
    "x",
    "dns",
    podSelector={"matchLabels": {"pod": "a"}},
    policyTypes=["Egress"],
    egress=[
        {
            "to": [{"podSelector": {"matchLabels": {"pod": "c"}}}],
            "ports": [{"port": "serve-81-udp", "protocol": "UDP"}],
        }
    ],
)
WORKER = "kind-worker"  # x/a's node


def lines(observed: Snapshot | None, desired: Snapshot) -> list[str]:
    node = desired.node(WORKER)
    assert node is not None
    before = compile_policy(observed, node) if observed is not None else None
    return [line.text() for line in policy_lines(before, compile_policy(desired, node), desired)]


def relabel(snapshot: Snapshot, key: tuple[str, str], label: str) -> Snapshot:
    pods = tuple(replace(p, labels=(("pod", label),)) if p.key == key else p for p in snapshot.pods)
    return replace(snapshot, pods=pods)


def test_a_new_table_gains_its_facts() -> None:
    assert lines(None, model([ALLOW_Y, EGRESS])) == [
        "x/a egress: + isolated",
        "x/a egress: + to x/c on UDP 81 by policy dns",
        "x/a ingress: + isolated",
        "x/a ingress: + from 192.0.2.0/24 on TCP 80 by policy allow-y",
        "x/a ingress: + from y/b on TCP 80 by policy allow-y",
    ]


def test_a_label_change_names_the_pods_that_gain_and_lose() -> None:
    before = model([ALLOW_Y, EGRESS])
    after = relabel(relabel(before, ("y", "b"), "q"), ("y", "c"), "b")
    assert lines(before, after) == [
        "x/a ingress: - from y/b on TCP 80 by policy allow-y",
        "x/a ingress: + from y/c on TCP 80 by policy allow-y",
    ]
    assert lines(before, before) == []


def test_a_policy_removed_loses_its_facts_and_the_isolation() -> None:
    before = model([ALLOW_Y, EGRESS])
    assert lines(before, model([ALLOW_Y])) == [
        "x/a egress: - isolated",
        "x/a egress: - to x/c on UDP 81 by policy dns",
    ]


def test_plan_text_and_json() -> None:
    before = model([ALLOW_Y])
    after = relabel(before, ("y", "c"), "b")
    node = after.node(WORKER)
    assert node is not None
    found = policy_lines(compile_policy(before, node), compile_policy(after, node), after)
    text = format_plan(Plan(WORKER, ()), policy=found)
    assert text.splitlines()[:3] == [
        f"node {WORKER}:",
        "  NetworkPolicy:",
        "    x/a ingress: + from y/c on TCP 80 by policy allow-y",
    ]
    document = plan_to_json(Plan(WORKER, ()), policy=found)
    Draft202012Validator(load_schema("plan.schema.json")).validate(document)
    assert document["policy"] == [
        {
            "pod": "x/a",
            "direction": "ingress",
            "change": "+",
            "peer": "y/c",
            "port": "TCP 80",
            "policy": "allow-y",
            "text": "x/a ingress: + from y/c on TCP 80 by policy allow-y",
        }
    ]
    assert "policy" not in plan_to_json(Plan(WORKER, ()))  # plans without policy: unchanged
