"""The policy table's pure side: nft's text listing read strictly, the diff (elements only while
the structure holds, else one rewrite), the change types' journal form and undo, what a rollback
compares with, the guard's count, and the text replayed into nft checked."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from kindplan.core.changes import Plan, decode_change
from kindplan.core.guard import POLICY_RULES, POLICY_TABLES, removed_state, split_deletions
from kindplan.core.model import CniConfig, CniSettings, DesiredState, ObservedState
from kindplan.core.nfttable import NftChain, NftSet, NftTable
from kindplan.core.planview import details, format_plan
from kindplan.core.policychanges import (
    DelPolicyTable,
    WritePolicyElements,
    WritePolicyTable,
    decode_table,
    encode_table,
    policy_payload,
)
from kindplan.core.policydiff import diff_policy, policy_held, policy_in_effect
from kindplan.core.policytable import MARKER, check_table, parse_listing, table_digest
from kindplan.core.schemacheck import compile_schema
from kindplan.resources import load_schema

BASE = "type filter hook forward priority filter; policy accept;"
TABLE = NftTable(
    "inet",
    "kindplan-policy",
    (
        NftSet(
            "allow-0",
            "ipv4_addr",
            ("interval",),
            frozenset({"10.244.1.0/24", "172.16.0.1-172.16.0.9", "192.168.1.1"}),
            "x peers",
        ),
        NftSet(
            "ports",
            "ipv4_addr . inet_proto . inet_service",
            (),
            frozenset({"10.244.1.5 . tcp . 80", "10.244.1.6 . udp . 53"}),
        ),
        NftSet("six", "ipv6_addr", (), frozenset({"fd00::1", "fd00::2"})),
    ),
    (
        NftChain(
            "forward",
            BASE,
            (
                'ct state established,related accept comment "replies"',
                'ip daddr 10.244.1.5 jump ingress-a comment "x/a"',
            ),
        ),
        NftChain(
            "ingress-a",
            "",
            (
                "ip saddr @allow-0 ip daddr . meta l4proto . th dport @ports accept "
                'comment "x/allow 0"',
                "ip6 saddr @six accept",
                'drop comment "x/a isolated"',
            ),
        ),
    ),
)

# As nft 1.0.6 lists TABLE (wrapped element lists, creation order, blank lines between blocks).
LISTING = f"""\
table inet kindplan-policy {{
\tcomment "{MARKER}"
\tset allow-0 {{
\t\ttype ipv4_addr
\t\tflags interval
\t\tcomment "x peers"
\t\telements = {{ 10.244.1.0/24, 172.16.0.1-172.16.0.9,
\t\t\t     192.168.1.1 }}
\t}}

\tset six {{
\t\ttype ipv6_addr
\t\telements = {{ fd00::1,
\t\t\t     fd00::2 }}
\t}}

\tset ports {{
\t\ttype ipv4_addr . inet_proto . inet_service
\t\telements = {{ 10.244.1.6 . udp . 53,
\t\t\t     10.244.1.5 . tcp . 80 }}
\t}}

\tchain forward {{
\t\t{BASE}
\t\tct state established,related accept comment "replies"
\t\tip daddr 10.244.1.5 jump ingress-a comment "x/a"
\t}}

\tchain ingress-a {{
\t\tip saddr @allow-0 ip daddr . meta l4proto . th dport @ports accept comment "x/allow 0"
\t\tip6 saddr @six accept
\t\tdrop comment "x/a isolated"
\t}}
}}
"""

DESIRED = DesiredState("n", (), (), (), CniConfig(CniSettings(), 1500, ()), ())
OBSERVED = ObservedState((), (), (), (), None)


def states(
    want: NftTable | None, now: NftTable | None, **seen: object
) -> tuple[DesiredState, ObservedState]:
    return replace(DESIRED, policy=want), replace(OBSERVED, policy=now, **seen)


def with_elements(table: NftTable, name: str, elements: set[str]) -> NftTable:
    sets = tuple(
        replace(s, elements=frozenset(elements)) if s.name == name else s for s in table.sets
    )
    return replace(table, sets=sets)


def test_a_listing_reads_back_as_the_table_written() -> None:
    assert parse_listing(LISTING) == (TABLE, (), False, None)


def test_a_table_without_the_marker_is_someone_else_s() -> None:
    theirs = LISTING.replace(f'comment "{MARKER}"', 'comment "theirs"')
    assert parse_listing(theirs) == (None, (), True, None)
    want, now = states(TABLE, None, policy_foreign=True)
    changes, warnings = diff_policy(want, now)
    assert changes == [] and "is not kindplan's" in warnings[0]
    assert diff_policy(*states(None, None, policy_foreign=True)) == ([], [])  # not deleted


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (
            ("\t\tflags interval\n", "\t\tflags interval\n\t\tauto-merge\n"),
            "set allow-0: auto-merge",
        ),
        (
            (
                "\tchain forward {\n",
                "\tmap m {\n\t\ttype ipv4_addr : verdict\n\t}\n\tchain forward {\n",
            ),
            "map m {",
        ),
        (
            ('\t\tdrop comment "x/a isolated"\n', '\t\tdrop\n\t\tcomment "c"\n'),
            'chain ingress-a: comment "c"',
        ),
        (("\t\ttype ipv6_addr\n", "\t\ttypeof ip6 saddr\n"), "set six: typeof ip6 saddr"),
    ],
)
def test_what_is_not_understood_is_named_and_rewrites_the_table(
    edit: tuple[str, str], named: str
) -> None:
    read = parse_listing(LISTING.replace(*edit))
    assert read.table is not None and named in read.unread
    (change,), _ = diff_policy(*states(TABLE, read.table, policy_unread=read.unread))
    assert isinstance(change, WritePolicyTable) and change.unread == read.unread
    assert policy_payload(change).startswith("delete table inet kindplan-policy\ncreate table")


def test_garbage_is_named_not_a_crash() -> None:
    assert parse_listing("Error: no such table\n").unread
    assert parse_listing("") == (
        None,
        ("not a listing of table inet kindplan-policy",),
        False,
        None,
    )


def test_the_same_table_needs_nothing_and_absent_both_nothing() -> None:
    assert diff_policy(*states(TABLE, TABLE)) == ([], [])
    assert diff_policy(*states(None, None)) == ([], [])


def test_the_same_structure_changes_elements_only() -> None:
    want = with_elements(TABLE, "six", {"fd00::2", "fd00::3"})
    want = with_elements(want, "allow-0", {"10.244.1.0/24"})
    (change,), _ = diff_policy(*states(want, TABLE))
    assert change == WritePolicyElements(
        (("six", "fd00::3"),),
        (("allow-0", "172.16.0.1-172.16.0.9"), ("allow-0", "192.168.1.1"), ("six", "fd00::1")),
        table_digest(TABLE),
        table_digest(want),
    )
    assert policy_payload(change).splitlines() == [  # deleted first, one transaction
        "delete element inet kindplan-policy allow-0 { 172.16.0.1-172.16.0.9, 192.168.1.1 }",
        "delete element inet kindplan-policy six { fd00::1 }",
        "add element inet kindplan-policy six { fd00::3 }",
    ]
    assert details(change) == [
        "- set allow-0: 172.16.0.1-172.16.0.9",
        "- set allow-0: 192.168.1.1",
        "- set six: fd00::1",
        "+ set six: fd00::3",
    ]


def test_another_structure_rewrites_the_table_whole() -> None:
    rules = ('ct state established,related accept comment "replies"',)
    want = replace(TABLE, chains=(replace(TABLE.chains[0], rules=rules), TABLE.chains[1]))
    (change,), _ = diff_policy(*states(want, TABLE))
    assert change == WritePolicyTable(want, TABLE)
    assert details(change) == ['- chain forward: ip daddr 10.244.1.5 jump ingress-a comment "x/a"']
    new, _ = diff_policy(*states(TABLE, None))
    assert new == [WritePolicyTable(TABLE, None)]
    assert policy_payload(new[0]).startswith(
        f'create table inet kindplan-policy {{ comment "{MARKER}"; }}\n'
    )


def test_no_policy_wanted_deletes_kindplan_s_table() -> None:
    (change,), _ = diff_policy(*states(None, TABLE))
    assert change == DelPolicyTable(TABLE)
    assert policy_payload(change) == "delete table inet kindplan-policy\n"
    assert "- nftables: table inet kindplan-policy" in format_plan(Plan("n", (change,)))


CHANGES = [
    WritePolicyTable(TABLE, None),
    WritePolicyTable(with_elements(TABLE, "six", set()), TABLE),
    DelPolicyTable(TABLE),
    WritePolicyElements((("six", "fd00::3"),), (("six", "fd00::1"),), "a" * 32, "b" * 32),
]


@pytest.mark.parametrize("change", CHANGES, ids=lambda c: type(c).__name__)
def test_the_journal_form_decodes_to_the_same_change_and_its_undo_undoes(change: object) -> None:
    assert isinstance(change, WritePolicyTable | DelPolicyTable | WritePolicyElements)
    line = {"undo": [change.encode(), change.undo().encode()]}
    assert compile_schema(load_schema("journal.schema.json"))(line)
    assert decode_change(change.encode()) == change
    assert change.undo().undo() == change


def test_a_rollback_compares_with_the_table_the_apply_left() -> None:
    after = with_elements(TABLE, "six", {"fd00::9"})
    (apply,), _ = diff_policy(*states(after, TABLE))
    undo = apply.undo()
    _, left = states(None, after)
    assert policy_held(undo) == table_digest(left.policy)  # untouched since: put back
    assert policy_in_effect(apply, left) and not policy_in_effect(undo, left)
    assert policy_held(WritePolicyTable(TABLE, None).undo()) == table_digest(TABLE)
    assert policy_held(DelPolicyTable(TABLE).undo()) == table_digest(None)


@pytest.mark.parametrize(
    "rule",
    [
        "accept\ndelete table ip nat",
        "accept; delete table ip nat",
        "accept } add table ip x {",
        'accept comment "open',
        "accept # the rest",
    ],
)
def test_text_that_could_end_its_nft_command_is_refused(rule: str) -> None:
    bad = replace(TABLE, chains=(replace(TABLE.chains[0], rules=(rule,)), TABLE.chains[1]))
    with pytest.raises(ValueError, match="could end its nft command"):
        check_table(bad)
    with pytest.raises(ValueError, match="could end its nft command"):
        decode_table(encode_table(bad))
    other = replace(TABLE, name="filter")
    with pytest.raises(ValueError, match="not kindplan's policy table"):
        decode_table(encode_table(other))


def test_the_guard_holds_a_policy_table_that_goes_and_counts_no_elements() -> None:
    # A source that suddenly lists no policy (a broken list: every pod open) deletes the table.
    assert removed_state(DelPolicyTable(TABLE)) == Counter({POLICY_TABLES: 1, POLICY_RULES: 5})
    fewer = replace(TABLE, chains=(TABLE.chains[0], replace(TABLE.chains[1], rules=())))
    assert removed_state(WritePolicyTable(fewer, TABLE)) == Counter({POLICY_RULES: 3})
    assert not +removed_state(CHANGES[3])  # elements: pods come and go
    observed = replace(OBSERVED, policy=TABLE)
    guarded = split_deletions(Plan("n", (DelPolicyTable(TABLE),)), observed, 75, 0.5)
    assert guarded.held == (DelPolicyTable(TABLE),) and guarded.plan.changes == ()
    assert (POLICY_TABLES, 1, 1) in guarded.kinds
    one_rule = WritePolicyTable(
        replace(
            TABLE,
            chains=(TABLE.chains[0], replace(TABLE.chains[1], rules=TABLE.chains[1].rules[1:])),
        ),
        TABLE,
    )
    assert split_deletions(Plan("n", (one_rule,)), observed, 75, 0.5).held == ()


def test_a_listing_not_read_at_all_is_replaced_not_created() -> None:
    read = parse_listing("table inet kindplan-policy {\n\tflags dormant\n")
    assert read.table is None and read.unread
    (change,), _ = diff_policy(*states(TABLE, None, policy_unread=read.unread))
    assert policy_payload(change).startswith("delete table inet kindplan-policy\n")


def test_the_converged_digest_of_a_table_is_the_same_in_every_process() -> None:
    # A one-shot apply compares its digest with the one an earlier process recorded; a set's
    # repr follows string hashes, which differ from process to process.
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        "from dataclasses import replace; "
        "from test_policy_diff import OBSERVED, TABLE; from kindplan.node.observe import digest; "
        "print(digest(replace(OBSERVED, policy=TABLE), b''))"
    )
    seen = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in range(1, 6)
    }
    assert len(seen) == 1, seen
