"""The compiled policy table against real nft 1.0.6 in a namespace: `nft -f` takes render's
transaction, and `nft list table` gives back exactly the rules and elements compiled (the node
side compares what it reads with what compile wants); a second load replaces it whole; elements
of interval sets read back as written (no auto-merge)."""

from __future__ import annotations

import re

import pytest
from policycase import VARIETY, model, policy
from shell import sh

from kindplan.core.nfttable import NftChain, NftSet, NftTable
from kindplan.core.policy.compile import TABLE, compile_policy
from kindplan.core.policy.render import render_table

pytestmark = pytest.mark.root


def listed(text: str) -> NftTable:
    """`nft list table` text as an NftTable (only what compile writes is expected)."""
    text = re.sub(r",\n\s+", ", ", text)  # nft wraps long element lists
    sets, chains = [], []
    for kind, name, body in re.findall(r"^\t(set|chain) (\S+) \{\n(.*?)^\t\}", text, re.M | re.S):
        lines = [line.strip() for line in body.splitlines() if line.strip()]
        if kind == "set":
            fields = dict(line.split(" ", 1) for line in lines if not line.startswith("elements"))
            elements = [line for line in lines if line.startswith("elements")]
            members = elements[0].split("{ ", 1)[1].rstrip(" }").split(", ") if elements else []
            flags = tuple(fields["flags"].split(",")) if "flags" in fields else ()
            comment = fields.get("comment", "").strip('"')  # a policy's pods set names it
            sets.append(NftSet(name, fields["type"], flags, frozenset(members), comment))
        else:
            base = lines[0] if lines and lines[0].startswith("type ") else ""
            chains.append(NftChain(name, base, tuple(lines[1:] if base else lines)))
    family, table = re.match(r"table (\S+) (\S+) \{", text).groups()  # type: ignore[union-attr]
    return NftTable(family, table, tuple(sets), tuple(chains))


def load_and_list(ns: str, table: NftTable) -> NftTable:
    sh("nft", "-f", "-", ns=ns, stdin=render_table(table))
    return listed(sh("nft", "list", "table", "inet", TABLE, ns=ns))


@pytest.mark.parametrize("dual", [False, True], ids=["ipv4", "dual-stack"])
def test_the_table_reads_back_as_compiled(netns: str, dual: bool) -> None:
    snapshot = model(VARIETY, dual=dual)
    for node in snapshot.nodes:
        table = compile_policy(snapshot, node)
        assert table is not None
        assert load_and_list(netns, table) == table, node.name


def test_a_second_load_replaces_the_table_whole(netns: str) -> None:
    first = compile_policy(model(VARIETY), model(VARIETY).nodes[0])
    smaller = model([policy("x", "deny", podSelector={})])
    second = compile_policy(smaller, smaller.nodes[0])
    assert first is not None and second is not None
    load_and_list(netns, first)
    assert load_and_list(netns, second) == second
    assert "p1-" not in sh("nft", "list", "table", "inet", TABLE, ns=netns)


def test_prefixes_read_back_unmerged(netns: str) -> None:
    """Adjacent prefixes and a pod address next to a block stay as written (no auto-merge), and
    the whole space reads back as 0.0.0.0/0 and ::/0."""
    everything = [
        policy(
            "x",
            "all",
            podSelector={},
            policyTypes=["Egress"],
            egress=[
                {
                    "to": [
                        {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.244.0.0/24"]}},
                        {"ipBlock": {"cidr": "::/0"}},
                        {"podSelector": {}},
                    ]
                }
            ],
        ),
    ]
    snapshot = model(everything, dual=True)
    table = compile_policy(snapshot, snapshot.nodes[0])
    assert table is not None
    peers = {s.name: s.elements for s in table.sets}
    assert "::/0" in peers["p0-e0-v6"] and "10.244.0.10" in peers["p0-e0-v4"]
    assert load_and_list(netns, table) == table
