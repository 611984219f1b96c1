"""The compiled table's layout: names, hooks, rules as nft prints them, comments; None without
policies; rules naming the same peers share one set; the comment fits nft's 128 bytes."""

from __future__ import annotations

from policycase import model, policy

from kindplan.core.policy.compile import compile_policy
from kindplan.core.policy.evaluate import rule_comment
from kindplan.core.policyvalues import INGRESS, LabelSelector, NetworkPolicy

FROM_Y = [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]


def test_no_policy_no_table() -> None:
    snapshot = model([])
    assert compile_policy(snapshot, snapshot.nodes[0]) is None


def test_the_layout() -> None:
    snapshot = model(
        [
            policy(
                "x",
                "web",
                podSelector={"matchLabels": {"pod": "a"}},
                ingress=[
                    {"from": FROM_Y, "ports": [{"port": 80, "endPort": 81, "protocol": "UDP"}]}
                ],
            )
        ]
    )
    table = compile_policy(snapshot, snapshot.nodes[0])  # x/a's node
    assert table is not None
    assert (table.family, table.name) == ("inet", "kindplan-policy")
    assert [s.name for s in table.sets] == [
        "egress-isolated-v4",
        "ingress-isolated-v4",
        "p0-i0-v4",
        "p0-pods-v4",
    ]
    peers = next(s for s in table.sets if s.name == "p0-i0-v4")
    assert peers.flags == ("interval",)
    assert peers.elements == {"10.244.0.13", "10.244.1.14", "10.244.2.15"}  # y/a, y/b, y/c
    chains = {c.name: c for c in table.chains}
    assert chains["forward-ingress"].base == (
        "type filter hook forward priority filter - 1; policy accept;"
    )
    assert chains["forward-ingress"].rules == (
        "ct state established,related accept",
        "ip daddr @p0-pods-v4 ip saddr @p0-i0-v4 udp dport 80-81 accept "
        'comment "x/web ingress rule 0"',
        'ip daddr @ingress-isolated-v4 drop comment "ingress isolation"',
    )
    assert chains["input-egress"].rules == ("ct state established,related accept", "jump egress")


def test_rules_naming_the_same_peers_share_a_set() -> None:
    snapshot = model(
        [
            policy("x", "one", podSelector={}, ingress=[{"from": FROM_Y}]),
            policy("z", "two", podSelector={}, ingress=[{"from": FROM_Y, "ports": [{"port": 81}]}]),
            policy("z", "local", podSelector={}, ingress=[{"from": [{"podSelector": {}}]}]),
            policy("x", "local", podSelector={}, ingress=[{"from": [{"podSelector": {}}]}]),
        ]
    )
    table = compile_policy(snapshot, snapshot.nodes[0])
    assert table is not None
    peer_sets = sorted(s.name for s in table.sets if "-i0-" in s.name)
    # x/one and z/two share; x/local and z/local name their own namespace's pods: two sets
    assert peer_sets == ["p0-i0-v4", "p1-i0-v4", "p2-i0-v4"]


def test_a_long_name_keeps_the_comment_within_128_bytes() -> None:
    name = "a" * 253
    comment = rule_comment(NetworkPolicy("x", name, LabelSelector(), (INGRESS,)), INGRESS, 12)
    assert len(comment.encode()) <= 128
    assert comment.startswith("x/aaa") and comment.endswith("... ingress rule 12")


def test_the_table_evaluator_reads_only_compiles_grammar() -> None:
    """A rule of another form is refused, never guessed at (a table read back from a node may
    hold anything; the node side rewrites such a table whole)."""
    import pytest

    from kindplan.core.nfttable import NftChain, NftTable
    from kindplan.core.policy.tableeval import TableEvaluator

    base = "type filter hook forward priority filter - 1; policy accept;"
    refused = (
        "ip saddr 10.0.0.1 accept",
        "tcp dport { 80, 81 } accept",
        "meta l4proto { tcp, udp } accept",
        "counter",
        "jump nowhere",
    )
    for rule in refused:
        table = NftTable("inet", "kindplan-policy", (), (NftChain("c", base, (rule,)),))
        with pytest.raises(ValueError, match="rule"):
            TableEvaluator(table)


def test_the_tables_a_connection_crosses() -> None:
    from ipaddress import ip_address

    from policycase import pod_end

    from kindplan.core.policy.evaluate import Endpoint
    from kindplan.core.policy.path import crossings

    snapshot = model([])
    a, b = pod_end(snapshot, "x/a"), pod_end(snapshot, "x/b")  # kind-worker, kind-worker1
    worker = Endpoint(ip_address("172.18.0.2"), None, "kind-worker")
    outside = Endpoint(ip_address("192.0.2.1"))
    assert crossings(a, b) == [("kind-worker", "forward"), ("kind-worker1", "forward")]
    assert crossings(a, worker) == [("kind-worker", "input")]
    assert crossings(worker, a) == []  # output: the node reaches its pods
    assert crossings(worker, b) == [("kind-worker1", "forward")]
    assert crossings(outside, a) == [("kind-worker", "forward")]
    assert crossings(a, outside) == [("kind-worker", "forward")]
