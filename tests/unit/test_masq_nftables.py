"""The nftables dialect of masquerade: kindplan's table rendered as one transaction, and tables
read back from `nft -j list table` (recorded from real nft 1.0.6 in a namespace: data/
nftables-masq.json) into the value, robust to anything else a table may hold."""

from __future__ import annotations

import json
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kindplan.core.changes import RemoveMasquerade, WriteMasquerade
from kindplan.core.masq import nftables
from kindplan.core.masq.dialects import dialect
from kindplan.core.masq.value import EXEMPT, MASQUERADE, MasqObserved, MasqRule, Masquerade, wanted
from kindplan.core.model import DesiredState, ObservedState

DATA = json.loads((Path(__file__).parent / "data" / "nftables-masq.json").read_text())
N = ip_network


def listed(name: str) -> str:
    return json.dumps(DATA[name])


def test_kindplans_table_is_one_transaction_that_names_no_other_table() -> None:
    masq = wanted(4, [N("10.244.0.0/16"), N("192.0.2.0/24")])
    payload = nftables.table_payload(masq)
    lines = payload.splitlines()
    # declared (so that delete never fails), deleted, made anew: atomic in one `nft -f -`
    assert lines[:3] == [
        "add table ip kindplan-masq",
        "delete table ip kindplan-masq",
        "add table ip kindplan-masq",
    ]
    assert all(" ip kindplan-masq" in line for line in lines)
    assert "flags interval; auto-merge; elements = { 10.244.0.0/16, 192.0.2.0/24 };" in payload
    assert "type nat hook postrouting priority srcnat + 10; policy accept;" in payload
    assert [line.split(" postrouting ", 1)[1].split(" comment")[0] for line in lines[5:]] == [
        "fib daddr type local accept",
        "ip daddr @no-masquerade accept",
        "masquerade",
    ]


def test_ipv6_has_a_table_of_its_own() -> None:
    payload = nftables.table_payload(wanted(6, [N("fd00:10:244::/56")]))
    assert "add set ip6 kindplan-masq no-masquerade { type ipv6_addr;" in payload
    assert "ip6 daddr @no-masquerade accept" in payload
    assert " ip " not in payload


def test_a_table_read_back_is_the_value_as_its_set_holds_it() -> None:
    observed = nftables.parse_table(4, listed("kindplan-ip"))
    # written: 10.244.0.0/16, 10.0.1.0/24, 10.0.2.0/24; the set joined the neighbours into a
    # range, read back as the prefixes that cover it
    want = wanted(4, [N("10.244.0.0/16"), N("10.0.1.0/24"), N("10.0.2.0/24")])
    assert observed.right and observed.hooks == 1
    assert observed.masq == nftables.held(want)
    assert observed.masq.exempt == (N("10.0.1.0/24"), N("10.0.2.0/24"), N("10.244.0.0/16"))
    assert (observed.backend, observed.variant) == ("nftables", "")


def test_no_table_is_no_masquerade() -> None:
    observed = nftables.parse_table(6, None)
    assert observed.masq is None and observed.hooks == 0 and not observed.right


def test_what_the_table_holds_beyond_kindplans_shape_is_named_not_a_crash() -> None:
    observed = nftables.parse_table(4, listed("edited"))
    assert not observed.right
    assert observed.hooks == 0  # the first rule is no longer the local test
    assert "chain extra" in observed.unread
    assert any('"mark"' in line for line in observed.unread)  # meta mark 0x4000 accept
    assert any('"dport"' in line for line in observed.unread)  # tcp dport 22 counter accept
    assert any("local" in line for line in observed.unread)  # the local test out of place


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"nftables": 3}',
        '{"nftables": [{"table": {"name": "kindplan-masq"}}, 7, {"a": 1, "b": 2}]}',
        '{"nftables": [{"table": {"name": "kindplan-masq"}}, {"set": {"name": "no-masquerade",'
        ' "type": "ipv4_addr", "flags": ["interval"], "elem": [{"range": ["x", 1]}]}}]}',
        '{"nftables": [{"table": {"name": "kindplan-masq"}}, {"chain": {"name": "postrouting",'
        ' "hook": "postrouting", "type": "nat", "prio": 90, "policy": "accept"}},'
        ' {"rule": {"chain": "postrouting", "expr": [{"future": {"x": 1}}]}}]}',
    ],
)
def test_unknown_json_is_read_without_a_crash(text: str) -> None:
    observed = nftables.parse_table(4, text)
    assert not observed.right


def test_kindnets_table_reads_per_family_in_its_own_shape() -> None:
    v4 = nftables.parse_table(4, listed("kindnet"), nftables.KINDNET)
    v6 = nftables.parse_table(6, listed("kindnet"), nftables.KINDNET)
    assert v4.right and v4.hooks == 1 and v4.masq == wanted(4, [N("10.244.0.0/16")])
    assert v6.right and v6.hooks == 1 and v6.masq == wanted(6, [N("fd00:10:244::/56")])
    # kindplan's shape is not kindnet's: read as kindplan's table it is not understood
    assert not nftables.parse_table(4, listed("kindnet")).right


def exempts(version: int) -> st.SearchStrategy[list[object]]:
    bits = 32 if version == 4 else 128
    make = IPv4Network if version == 4 else IPv6Network
    prefix = st.integers(8 if version == 4 else 16, bits)
    return st.lists(
        st.builds(
            lambda a, n: make((a >> (bits - n) << (bits - n), n)),
            st.integers(0, 2**bits - 1),
            prefix,
        ),
        min_size=1,
        max_size=8,
    )


@given(st.sampled_from([4, 6]).flatmap(lambda v: exempts(v).map(lambda e: (v, e))))
def test_held_keeps_the_meaning_of_the_value(case: tuple[int, list[object]]) -> None:
    version, nets = case
    masq = wanted(version, nets)  # type: ignore[arg-type]
    kept = nftables.held(masq)
    assert kept.rules[-1] == MasqRule(MASQUERADE)
    for net in nets:
        for address in (net.network_address, net.broadcast_address):  # type: ignore[attr-defined]
            assert kept.decide(address) == MasqRule(EXEMPT, kept.decide(address).dst)  # type: ignore[union-attr]
            assert masq.decide(address).action == EXEMPT  # type: ignore[union-attr]
    assert nftables.held(kept) == kept


def test_the_dialect_describes_and_writes_its_changes() -> None:
    words = dialect("nftables")
    masq = wanted(4, [N("10.244.0.0/16")])
    write = WriteMasquerade(4, masq=masq, old=None, hooks=0, backend="nftables", variant="")
    assert write.describe() == "nftables: table ip kindplan-masq (new)"
    assert words.write_payload(write) == nftables.table_payload(masq)
    undo = write.undo()
    assert isinstance(undo, RemoveMasquerade)
    assert words.remove_payload(undo) == (
        "add table ip kindplan-masq\ndelete table ip kindplan-masq\n"
    )
    adopt = RemoveMasquerade(6, wanted(6, []), 1, backend="nftables", variant="kindnet")
    assert adopt.describe() == "nftables: table inet kindnet-ipmasq (kindnet's, taken over), IPv6"
    back = adopt.undo()
    assert isinstance(back, WriteMasquerade)
    assert "priority srcnat - 10" in words.write_payload(back)
    hooks_only = WriteMasquerade(6, masq=None, old=wanted(6, []), hooks=0, backend="nftables")
    assert "chain postrouting hooked (0 present, 1 wanted)" in hooks_only.describe()
    assert "type nat hook postrouting" in words.write_payload(hooks_only)
    unhooked = WriteMasquerade(4, masq=masq, old=masq, hooks=1, want_hooks=0, backend="nftables")
    assert "hook" not in words.write_payload(unhooked)


def test_rule_text_names_the_set_element_or_the_masquerade() -> None:
    words = dialect("nftables")
    assert words.rule_text(MasqRule(MASQUERADE)) == "masquerade"
    assert words.rule_text(MasqRule(EXEMPT, N("fd00::/8"))) == (
        "ip6 daddr @no-masquerade accept (fd00::/8)"
    )


def test_render_file_is_the_table_for_nft_f() -> None:
    name, text = dialect("nftables").render_file("w2", Masquerade(4, (MasqRule(MASQUERADE),)))
    assert name == "ip-kindplan-masq.nft"
    assert text.startswith("# kindplan: SNAT of node w2;")
    assert "add table ip kindplan-masq" in text


# -- auto's rule, the diff between backends, kindnet's table, the journal ----------------------


def observed_with(
    *masq: MasqObserved, tools: tuple[str, ...] = ("iptables", "nftables")
) -> ObservedState:
    return ObservedState((), (), (), masq, None, masq_tools=tools)


def desired_for(backend: str) -> DesiredState:
    from builders import cluster_doc, load

    from kindplan.core.compiler import compile_desired
    from kindplan.core.model import HostFacts

    return compile_desired(load(cluster_doc(2)), "node-0000", HostFacts(), masq_backend=backend)


KINDPLANS = MasqObserved(4, wanted(4, [N("10.244.0.0/16")]), 1, backend="nftables", variant="")
KINDNETS = MasqObserved(
    4, wanted(4, [N("10.244.0.0/16")]), 1, backend="nftables", variant="kindnet"
)
CHAIN = MasqObserved(4, wanted(4, [N("10.244.0.0/16")]), 1, (3,), variant="nft")


@pytest.mark.parametrize(
    ("asked", "masq", "tools", "chosen"),
    [
        ("iptables", (KINDPLANS,), ("iptables", "nftables"), "iptables"),
        ("nftables", (CHAIN,), ("iptables", "nftables"), "nftables"),
        ("auto", (), ("iptables", "nftables"), "iptables"),  # a fresh node: as before auto
        ("auto", (CHAIN,), ("iptables", "nftables"), "iptables"),  # keeps its chain
        ("auto", (CHAIN, KINDPLANS), ("iptables", "nftables"), "nftables"),  # half switched
        ("auto", (KINDNETS,), ("iptables", "nftables"), "nftables"),  # kindnet >= 1.5's node
        ("auto", (), ("nftables",), "nftables"),  # no iptables binaries
    ],
)
def test_autos_one_rule(
    asked: str, masq: tuple[MasqObserved, ...], tools: tuple[str, ...], chosen: str
) -> None:
    from kindplan.core.compiler import masq_backend

    assert masq_backend(asked, observed_with(*masq, tools=tools)) == chosen
    assert masq_backend("auto", None) == "iptables"  # render: no node observed


def test_switching_to_nftables_removes_the_chain_in_the_same_plan() -> None:
    from kindplan.core.diff import diff

    plan = diff(desired_for("nftables"), observed_with(CHAIN), conflist_path="/x")
    masq = [c for c in plan.changes if c.kind in ("iptables", "nftables")]
    assert [(type(c).__name__, c.kind, c.variant) for c in masq] == [
        ("WriteMasquerade", "nftables", ""),
        ("RemoveMasquerade", "iptables", "nft"),
    ]


def test_a_right_table_is_no_change_and_the_set_order_does_not_matter() -> None:
    from kindplan.core.diff import diff

    desired = desired_for("nftables")
    held_there = MasqObserved(4, desired.masq[0], 1, backend="nftables", variant="")
    plan = diff(desired, observed_with(held_there), conflist_path="/x")
    assert [c for c in plan.changes if c.kind == "nftables"] == []


def test_kindnets_table_is_named_without_adopt_and_removed_with_it() -> None:
    from kindplan.core.diff import diff

    desired = desired_for("nftables")
    mine = MasqObserved(4, desired.masq[0], 1, backend="nftables", variant="")
    v6 = MasqObserved(6, wanted(6, []), 1, backend="nftables", variant="kindnet")
    observed = observed_with(mine, KINDNETS, v6)
    plan = diff(desired, observed, conflist_path="/x")
    assert [c for c in plan.changes if c.kind == "nftables"] == []
    assert (
        "kindnet's table inet kindnet-ipmasq masquerades IPv4 and IPv6 too: two masquerade paths "
        "are live (--adopt takes it over: removed, journaled)"
    ) in plan.warnings
    adopted = diff(desired, observed, conflist_path="/x", adopt=True)
    removals = [c for c in adopted.changes if isinstance(c, RemoveMasquerade)]
    assert [(c.version, c.variant) for c in removals] == [(4, "kindnet"), (6, "kindnet")]
    assert not any("kindnet" in w for w in adopted.warnings)


@given(st.sampled_from([None, "", "kindnet"]), st.integers(0, 1))
def test_nftables_changes_go_through_the_journal_unchanged(variant: str | None, hooks: int) -> None:
    from kindplan.core.changes import decode_change
    from kindplan.core.schemacheck import compile_schema
    from kindplan.resources import load_schema

    check = compile_schema(load_schema("journal.schema.json"))
    masq = wanted(6, [N("fd00::/8")])
    for change in (
        WriteMasquerade(6, masq, None, hooks, 1, backend="nftables", variant=variant),
        RemoveMasquerade(6, masq, hooks, backend="nftables", variant=variant),
    ):
        encoded = json.loads(json.dumps(change.encode()))
        assert check({"undo": [encoded]})
        assert decode_change(encoded) == change


def test_a_single_flag_printed_without_its_list_reads_the_same() -> None:
    """Later nft versions print one flag as a string, not a list of one: the same table."""
    doc = json.loads(listed("kindplan-ip"))
    for item in doc["nftables"]:
        if "set" in item:
            item["set"]["flags"] = "interval"
        for expr in item.get("rule", {}).get("expr", []):
            fib = expr.get("match", {}).get("left", {})
            if isinstance(fib, dict) and "fib" in fib:
                fib["fib"]["flags"] = "daddr"
    observed = nftables.parse_table(4, json.dumps(doc))
    assert observed.right and observed.hooks == 1
    assert observed == nftables.parse_table(4, listed("kindplan-ip"))
