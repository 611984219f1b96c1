"""The masquerade value, its iptables dialect both ways, the registry of dialects, and the
journal's masquerade changes: today's form, the form before the value, and the schema."""

from __future__ import annotations

import json
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from pathlib import Path
from typing import Any, get_args

import pytest
from fakes import FakeIptables, FakeKernel
from hypothesis import given
from hypothesis import strategies as st

from kindplan.core.addresses import IPNetwork
from kindplan.core.changes import Change, Plan, RemoveMasquerade, WriteMasquerade, decode_change
from kindplan.core.diff import diff
from kindplan.core.masq import iptables
from kindplan.core.masq.dialects import DIALECTS, dialect
from kindplan.core.masq.value import (
    EXEMPT,
    MASQUERADE,
    MasqObserved,
    MasqRule,
    Masquerade,
    wanted,
)
from kindplan.core.planview import details, format_plan
from kindplan.core.schemacheck import compile_schema
from kindplan.node.apply import apply_plan
from kindplan.node.journal import Journal
from kindplan.resources import load_schema

DATA = Path(__file__).parent / "data"
POD_SUBNET = ip_network("10.244.0.0/16")
EXTRA = ip_network("192.0.2.0/24")


def networks(version: int) -> st.SearchStrategy[IPNetwork]:
    """Any network of one family, host bits cleared."""
    bits = 32 if version == 4 else 128
    make = IPv4Network if version == 4 else IPv6Network

    def build(address: int, length: int) -> IPNetwork:
        return make((address >> (bits - length) << (bits - length), length))

    return st.builds(build, st.integers(0, 2**bits - 1), st.integers(0, bits))


def masquerades(version: int) -> st.SearchStrategy[Masquerade]:
    """Any sequence of the two kinds of rule a dialect reads, kindplan's shape or not."""
    rule = st.one_of(
        st.builds(MasqRule, st.just(EXEMPT), networks(version)),
        st.just(MasqRule(MASQUERADE)),
    )
    return st.builds(Masquerade, st.just(version), st.lists(rule, max_size=6).map(tuple))


# -- the value ---------------------------------------------------------------------------------


def test_wanted_exempts_each_destination_once_then_masquerades_the_rest() -> None:
    masq = wanted(4, [POD_SUBNET, EXTRA, POD_SUBNET])
    assert masq.rules == (
        MasqRule(EXEMPT, POD_SUBNET),
        MasqRule(EXEMPT, EXTRA),
        MasqRule(MASQUERADE),
    )
    assert masq.exempt == (POD_SUBNET, EXTRA)
    assert masq.decide(ip_address("10.244.3.4")) == MasqRule(EXEMPT, POD_SUBNET)
    assert masq.decide(ip_address("198.51.100.1")) == MasqRule(MASQUERADE)


def test_the_first_matching_rule_decides_and_none_matching_keeps_the_source() -> None:
    # kindnetd after a POD_SUBNET change: its new exemption after MASQUERADE never matches
    kindnetd = Masquerade(
        4, (MasqRule(EXEMPT, POD_SUBNET), MasqRule(MASQUERADE), MasqRule(EXEMPT, EXTRA))
    )
    assert kindnetd.decide(ip_address("192.0.2.9")) == MasqRule(MASQUERADE)
    assert Masquerade(4, (MasqRule(EXEMPT, EXTRA),)).decide(ip_address("198.51.100.1")) is None


# -- the iptables dialect ----------------------------------------------------------------------


@given(st.sampled_from((4, 6)).flatmap(masquerades))
def test_iptables_renders_then_reads_back_the_same_value(masq: Masquerade) -> None:
    """render -> parse is the identity: what kindplan writes, it reads as what it wrote."""
    saved = iptables.restore_payload(masq).replace("*nat\n", "*nat\n:POSTROUTING ACCEPT [0:0]\n")
    assert iptables.parse_nat(masq.version, saved, "legacy") == MasqObserved(
        masq.version, masq, 1, (1,), variant="legacy"
    )
    assert iptables.read_rules(masq.version, iptables.rule_lines(masq)) == (masq, ())


@given(st.sampled_from((4, 6)).flatmap(lambda v: st.lists(networks(v), max_size=5)))
def test_what_kindplan_wants_renders_as_kindnetd_writes_it(exempt: list[IPNetwork]) -> None:
    version = exempt[0].version if exempt else 4
    lines = iptables.rule_lines(wanted(version, exempt))
    assert lines[-1] == (
        '-A KIND-MASQ-AGENT -m comment --comment "kind-masq-agent: outbound traffic is subject '
        'to MASQUERADE (must be last in chain)" -j MASQUERADE'
    )
    assert all(line.endswith("-j RETURN") for line in lines[:-1])


@pytest.mark.parametrize(
    "line",
    [
        "-A KIND-MASQ-AGENT -d 192.0.2.0/24 -j RETURN",  # no comment: not kindplan's form
        '-A KIND-MASQ-AGENT -d 192.0.2.1/24 -m comment --comment "kind-masq-agent: local '
        'traffic is not subject to MASQUERADE" -j RETURN',  # host bits set
        '-A KIND-MASQ-AGENT -d 2001:db8::/32 -m comment --comment "kind-masq-agent: local '
        'traffic is not subject to MASQUERADE" -j RETURN',  # the other family
        "-A KIND-MASQ-AGENT -s 10.0.0.0/8 -j ACCEPT",
        "-A KIND-MASQ-AGENT -j MASQUERADE",
    ],
)
def test_a_rule_is_read_only_in_the_exact_form_kindplan_writes(line: str) -> None:
    masq, unread = iptables.read_rules(4, [*iptables.rule_lines(wanted(4, [POD_SUBNET])), line])
    assert masq == wanted(4, [POD_SUBNET]) and unread == (line,)


def test_a_chain_with_a_rule_not_understood_is_rewritten_and_shown() -> None:
    desired = wanted(4, [POD_SUBNET])
    foreign = "-A KIND-MASQ-AGENT -s 10.0.0.0/8 -j ACCEPT"
    saved = "*nat\n:KIND-MASQ-AGENT - [0:0]\n" + "\n".join(
        [*iptables.rule_lines(desired), foreign, iptables.jump_rule(), "COMMIT"]
    )
    observed = iptables.parse_nat(4, saved)
    assert (observed.masq, observed.unread, observed.right) == (desired, (foreign,), False)
    write = WriteMasquerade(4, desired, observed.masq, 1, unread=observed.unread)
    assert details(write) == [f"- {foreign}"]
    # the undo puts back the value, never the text kindplan could not read
    assert write.undo() == WriteMasquerade(4, desired, desired, 1)


def test_the_dialect_registry_names_a_module_per_backend() -> None:
    for name in DIALECTS:
        assert dialect(name).name == name
    with pytest.raises(ValueError, match="unknown masquerade backend 'ebtables'"):
        dialect("ebtables")


def test_plan_lines_of_masquerade_changes_are_the_iptables_words_they_were() -> None:
    masq = wanted(4, [POD_SUBNET])
    plan = Plan(
        "n",
        (
            WriteMasquerade(4, masq, None, 0),
            WriteMasquerade(4, None, masq, 2, hooks_at=(1, 2), want_at=(1,)),
            RemoveMasquerade(6, Masquerade(6, (MasqRule(MASQUERADE),)), 1, variant="legacy"),
        ),
    )
    assert format_plan(plan).splitlines()[1:5] == [
        "  + iptables nat: chain KIND-MASQ-AGENT (new), POSTROUTING jump (0 present, 1 wanted)",
        f"      + {iptables.rule_lines(masq)[0]}",
        f"      + {iptables.rule_lines(masq)[1]}",
        "  ~ iptables nat: POSTROUTING jump (2 present, 1 wanted)",
    ]
    assert "  - ip6tables-legacy nat: chain KIND-MASQ-AGENT and 1 jump(s)" in format_plan(plan)


# -- the journal -------------------------------------------------------------------------------


def _schema_types() -> set[str]:
    """The change types the journal's schema allows, by name."""
    schema = load_schema("journal.schema.json")
    names: set[str] = set()
    for ref in schema["$defs"]["change"]["anyOf"]:
        kind = schema["$defs"][ref["$ref"].rsplit("/", 1)[1]]["properties"]["type"]
        names |= {kind["const"]} if "const" in kind else set(kind["enum"])
    return names


def test_every_change_type_is_in_the_journal_schema() -> None:
    """A change type added to the union without its schema would make journals unreadable."""
    missing = {cls.__name__ for cls in get_args(Change)} - _schema_types()
    assert missing == set(), f"add to schemas/journal.schema.json: {sorted(missing)}"


@given(
    st.sampled_from((4, 6)).flatmap(
        lambda v: st.tuples(masquerades(v), st.one_of(st.none(), masquerades(v)))
    ),
    st.integers(0, 3),
    st.sampled_from((None, "", "legacy", "nft")),
)
def test_masquerade_changes_go_through_the_journal_unchanged(
    values: tuple[Masquerade, Masquerade | None], hooks: int, variant: str | None
) -> None:
    masq, old = values
    check = compile_schema(load_schema("journal.schema.json"))
    for change in (
        WriteMasquerade(masq.version, masq, old, hooks, 1, (1,) * hooks, (), variant=variant),
        RemoveMasquerade(masq.version, masq, hooks, variant=variant),
    ):
        encoded = json.loads(json.dumps(change.encode()))
        assert check({"undo": [encoded]})
        assert decode_change(encoded) == change


def _before_the_value(tmp_path: Path) -> list[Any]:
    """The undo lines of a journal written by kindplan before the value (WriteChain and
    RemoveChain with iptables rule text), decoded by today's journal."""
    journal = Journal(tmp_path, None)
    journal.path.parent.mkdir(parents=True)
    journal.path.write_text((DATA / "journal-before-masquerade-value.jsonl").read_text())
    (generation,) = journal.load()
    assert generation.complete
    return list(generation.undo)


def test_a_journal_from_before_the_value_decodes_into_values(tmp_path: Path) -> None:
    rules = wanted(4, [POD_SUBNET, EXTRA])
    kindnetd = Masquerade(4, (rules.rules[0], rules.rules[2], rules.rules[1]))
    assert _before_the_value(tmp_path) == [
        # a first apply's chain: removed, with its jump
        RemoveMasquerade(4, rules, 1, variant="nft"),
        # the first of three jumps kept: the others go back where they were
        WriteMasquerade(4, None, rules, 1, 3, (2,), (2, 4, 5), variant="legacy"),
        # kindnetd's chain after a POD_SUBNET change, taken over: put back as it was
        WriteMasquerade(4, kindnetd, rules, 1, 1, variant=""),
        # a chain removed from the backend no longer in use: made again
        WriteMasquerade(6, Masquerade(6, (MasqRule(MASQUERADE),)), None, 0, 1, variant="legacy"),
    ]


def test_a_journal_from_before_the_value_rolls_back(tmp_path: Path) -> None:
    """Its undo, applied to a node as that apply left it, gives the node as it was before."""
    rules = wanted(4, [POD_SUBNET, EXTRA])
    before_apply = [
        "-A POSTROUTING -s 172.17.0.0/16 -j MASQUERADE",
        iptables.jump_rule(),
        "-A POSTROUTING -o docker0 -j RETURN",
        iptables.jump_rule(),
        iptables.jump_rule(),
    ]
    legacy = FakeIptables("legacy")
    legacy.restore(4, iptables.restore_payload(rules))  # the chain and one jump
    legacy.restore(4, "*nat\n-I POSTROUTING 1 -s 172.17.0.0/16 -j MASQUERADE\nCOMMIT\n")
    legacy.restore(4, "*nat\n-A POSTROUTING -o docker0 -j RETURN\nCOMMIT\n")  # as the apply left it
    undo = _before_the_value(tmp_path)[1]
    report = apply_plan(Plan("n", (undo,)), FakeKernel(), legacy)
    assert report.failures == []
    saved = legacy.save_nat(4).splitlines()
    assert [line for line in saved if line.startswith("-A POSTROUTING ")] == before_apply
    assert iptables.parse_nat(4, legacy.save_nat(4), "legacy").masq == rules


def test_rollback_of_a_take_over_puts_kindnetds_chain_back_byte_for_byte(tmp_path: Path) -> None:
    rules = wanted(4, [POD_SUBNET, EXTRA])
    node = FakeIptables("")
    node.restore(4, iptables.restore_payload(rules))
    undo = _before_the_value(tmp_path)[2]
    assert apply_plan(Plan("n", (undo,)), FakeKernel(), node).failures == []
    lines = iptables.rule_lines(rules)
    assert [ln for ln in node.save_nat(4).splitlines() if ln.startswith("-A KIND")] == [
        lines[0],
        lines[2],
        lines[1],
    ]


def test_a_converged_chain_read_from_iptables_save_needs_no_change() -> None:
    """The plan compares values: a chain iptables-save shows as kindplan writes it is right."""
    from builders import cluster_doc, load

    from kindplan.core.compiler import compile_desired
    from kindplan.core.model import HostFacts, ObservedState

    desired = compile_desired(load(cluster_doc(2)), "node-0000", HostFacts())
    saved = iptables.restore_payload(desired.masq[0]).replace(
        "*nat\n", "*nat\n:POSTROUTING ACCEPT [0:0]\n"
    )
    observed = ObservedState((), (), (), (iptables.parse_nat(4, saved),), None)
    assert [
        type(c) for c in diff(desired, observed, conflist_path="/x").changes if c.kind == "iptables"
    ] == []
