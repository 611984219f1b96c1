"""trace and NetworkPolicy: a verdict on every hop where a node's policy table is crossed,
naming the rule that allowed or the isolation that dropped; the end of every walk agrees with the
reference evaluator; text and JSON (schemas/trace.schema.json)."""

from __future__ import annotations

import json
from ipaddress import ip_address, ip_network
from pathlib import Path

import jsonschema
import pytest
from policycase import VARIETY, model, pod_end, policy

from kindplan.core.model import Snapshot
from kindplan.core.policy.evaluate import Endpoint, evaluate
from kindplan.core.trace import Trace, trace_packet
from kindplan.core.traceview import format_trace, trace_to_json
from kindplan.core.traceworld import Uplink, build_world, resolve

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "schemas" / "trace.schema.json").read_text())
UPLINK = Uplink("eth0", (ip_network("172.18.0.0/16"),), (ip_address("172.18.0.1"),))
ALLOW_Y = policy(
    "x",
    "allow-y",
    podSelector={"matchLabels": {"pod": "a"}},
    ingress=[
        {
            "from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
            "ports": [{"port": "serve-80-tcp"}],
        }
    ],
)
EGRESS_NONE = policy("z", "no-egress", podSelector={}, policyTypes=["Egress"])


def walk(snapshot: Snapshot, source: str, target: str, port: int, proto: str = "tcp") -> Trace:
    world = build_world(snapshot, UPLINK)
    return trace_packet(
        world,
        resolve(snapshot, source, "--from"),
        resolve(snapshot, target, "--to"),
        4,
        port=port,
        proto=proto,
    )


def verdicts(trace: Trace) -> list[tuple[str, str]]:
    return [(h.namespace.name, h.policy.text) for h in trace.hops if h.policy is not None]


def test_allowed_names_the_rule_on_the_destination_node() -> None:
    trace = walk(model([ALLOW_Y]), "y/b", "x/a", 80)
    assert verdicts(trace) == [
        ("kind-worker1", "allowed: no pod of this node is isolated for it"),
        ("kind-worker", "allowed by x/allow-y ingress rule 0"),
    ]
    assert trace.end.kind == "delivered"
    assert "      policy forward: allowed by x/allow-y ingress rule 0" in format_trace(trace)


def test_dropped_names_the_isolation_and_what_no_rule_admits() -> None:
    trace = walk(model([ALLOW_Y]), "y/b", "x/a", 81)
    why = "x/a is isolated for ingress (policies: x/allow-y) and no rule admits TCP 81 from y/b"
    assert verdicts(trace)[-1] == ("kind-worker", f"dropped: {why}")
    assert (trace.end.kind, trace.end.at, trace.end.why) == ("dropped", "node kind-worker", why)
    document = trace_to_json([trace])
    jsonschema.validate(document, SCHEMA)
    last = document["traces"][0]["hops"][-1]["policy"]
    assert last["allowed"] is False
    assert last["chains"][-1] == {
        "chain": "forward-ingress",
        "accepted": False,
        "rule": "ingress isolation",
    }


def test_egress_to_the_own_node_meets_the_input_hook() -> None:
    trace = walk(model([EGRESS_NONE]), "z/a", "kind-worker", 10250)
    assert [(h.namespace.name, h.policy.hook) for h in trace.hops if h.policy] == [
        ("kind-worker", "input")
    ]
    assert trace.end.kind == "dropped"
    assert trace.end.why.startswith("z/a is isolated for egress (policies: z/no-egress)")


def test_the_node_reaches_its_pods_and_no_policy_means_no_verdict() -> None:
    trace = walk(model([policy("x", "deny", podSelector={}, ingress=[])]), "kind-worker", "x/a", 80)
    assert trace.end.kind == "delivered"
    assert verdicts(trace) == []
    plain = walk(model([]), "y/b", "x/a", 80)
    assert verdicts(plain) == []
    assert all("policy" not in hop for hop in trace_to_json([plain])["traces"][0]["hops"])


@pytest.mark.parametrize(("proto", "port"), [("tcp", 80), ("udp", 81), ("tcp", 81)])
def test_every_walk_ends_as_the_reference_decides(proto: str, port: int) -> None:
    snapshot = model(VARIETY)
    labels = [f"{p.namespace}/{p.name}" for p in snapshot.pods]
    for source in labels:
        for target in labels:
            if source == target:
                continue
            src: Endpoint = pod_end(snapshot, source)
            dst: Endpoint = pod_end(snapshot, target)
            want = evaluate(snapshot, src, dst, proto.upper(), port).allowed
            trace = walk(snapshot, source, target, port, proto)
            assert (trace.end.kind == "delivered") == want, (source, target, verdicts(trace))
