"""The journal's undo rules and its file format, without a kernel."""

from __future__ import annotations

import json
from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kindplan.core.changes import (
    AddAddress,
    AddRoute,
    Change,
    DelAddress,
    DeleteConflist,
    DelRoute,
    RemoveMasquerade,
    ReplaceRoute,
    SetSysctl,
    WriteConflist,
    WriteMasquerade,
    decode_change,
)
from kindplan.core.masq.value import EXEMPT, MASQUERADE, MasqRule, Masquerade
from kindplan.core.model import Address
from kindplan.core.routes import NextHop, Route, RouteSpecial
from kindplan.errors import RuntimeFailure
from kindplan.node.journal import MAX_GENERATIONS, Journal, _encode_undo, undo_all

CONF = "/etc/cni/net.d/10-kindnet.conflist"  # a generation's conflist, as kindplan journals it

ROUTE = Route(ip_network("10.244.1.0/24"), "eth0", ip_address("192.0.2.11"), peer="b")
FOREIGN = ROUTE._replace(gateway=ip_address("192.0.2.77"), proto=3, peer="")
V6 = Route(ip_network("fd00:10:244:1::5/128"), "veth1", None, metric=1024, peer="default/web")
ADDRESS = Address("veth1", ip_address("10.244.1.1"), pod="default/web")
RULES = Masquerade(4, (MasqRule(EXEMPT, ip_network("10.244.0.0/16")), MasqRule(MASQUERADE)))
RULES6 = Masquerade(6, (MasqRule(MASQUERADE),))
# Foreign routes of every kind that kindplan may replace with --adopt: restored exactly.
MULTIPATH = FOREIGN._replace(
    ifname="",
    gateway=None,
    special=RouteSpecial(
        nexthops=(
            NextHop(ip_address("192.0.2.10"), "eth0", 2),
            NextHop(ip_address("2001:db8::1"), "eth1"),  # RTA_VIA
        )
    ),
)
BLACKHOLE = FOREIGN._replace(ifname="", gateway=None, special=RouteSpecial("blackhole"))
NEXTHOP = FOREIGN._replace(
    ifname="", gateway=None, special=RouteSpecial(nh_id=7, nexthops=(NextHop(None, "eth0"),))
)
TOS = FOREIGN._replace(special=RouteSpecial(tos=0x10))
CHANGES = [
    SetSysctl("net.ipv4.ip_forward", "1", "0"),
    AddAddress(ADDRESS),
    DelAddress(ADDRESS),
    AddRoute(ROUTE),
    AddRoute(V6),
    ReplaceRoute(ROUTE, FOREIGN),
    DelRoute(ROUTE),
    WriteMasquerade(4, RULES, None, 0),
    WriteMasquerade(4, RULES, Masquerade(4, (MasqRule(EXEMPT, None),)), 2),
    WriteMasquerade(6, None, RULES6, 0),
    RemoveMasquerade(6, RULES6, 1),
    WriteMasquerade(4, RULES, None, 0, variant="legacy"),
    RemoveMasquerade(6, RULES6, 1, variant="nft"),
    WriteMasquerade(4, RULES, RULES, 3, 1, (1, 3, 4), (1,), variant=""),
    *(ReplaceRoute(ROUTE, old) for old in (MULTIPATH, BLACKHOLE, NEXTHOP, TOS)),
    WriteConflist(CONF, "{}", None),
    WriteConflist(CONF, "{}", '{"old": 1}'),
    DeleteConflist(CONF, "{}"),
]


@pytest.mark.parametrize("change", CHANGES, ids=lambda c: type(c).__name__)
def test_undo_of_undo_is_the_change(change: Change) -> None:
    once = change.undo()
    assert once is not None and once != change
    assert once.undo() == change


def test_undo_examples() -> None:
    assert ReplaceRoute(ROUTE, FOREIGN).undo() == ReplaceRoute(FOREIGN, ROUTE)
    assert WriteMasquerade(4, RULES, None, 0).undo() == RemoveMasquerade(4, RULES, 1)
    assert SetSysctl("net.ipv4.ip_forward", "1", None).undo() is None
    order = [
        type(c).__name__
        for c in undo_all([WriteConflist("/x", "{}", None), AddAddress(ADDRESS), AddRoute(ROUTE)])
    ]
    assert order == ["DeleteConflist", "DelRoute", "DelAddress"], "a teardown: conflist first"


def test_journal_round_trip_and_bound(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "kp-n1")
    assert journal.path == tmp_path / "netns-kp-n1" / "journal.json"
    assert journal.load() == []
    first = journal.begin("b", (4, 6), CONF)
    first.record(CHANGES[:3])
    assert [g.complete for g in journal.load()] == [False], "written before the batch is sent"
    assert journal.load()[0].undo == undo_all(CHANGES[:3])
    first.record(CHANGES[3:])
    first.complete()
    first.close()
    (loaded,) = journal.load()
    assert loaded.complete and loaded.undo == undo_all(CHANGES), "batches join, as a teardown"
    assert (loaded.number, loaded.node, loaded.families) == (1, "b", (4, 6))
    for _ in range(2 * MAX_GENERATIONS + 3):
        recording = journal.begin("b", (4,), CONF)
        recording.record([AddRoute(ROUTE)])
        recording.complete()
        recording.close()
    numbers = [g.number for g in journal.load()]
    assert len(numbers) == MAX_GENERATIONS and numbers[-1] == 2 * MAX_GENERATIONS + 4
    lines = journal.path.read_text().count("\n")
    assert lines <= 3 * 2 * MAX_GENERATIONS, "the oldest are cut off now and then"
    assert Journal(tmp_path, None).path == tmp_path / "host" / "journal.json"


def test_appends_and_drops_never_rewrite_what_is_there(tmp_path: Path) -> None:
    """An apply appends its lines; one that applied nothing (or a rollback) truncates them
    away: the generations before are never written again (a 10,000-route journal is MBs)."""
    journal = Journal(tmp_path, None)
    done = journal.begin("b", (4,), CONF)
    done.record(CHANGES)
    done.complete()
    done.close()
    before = journal.path.read_bytes()
    inode = journal.path.stat().st_ino
    nothing = journal.begin("b", (4,), CONF)  # a round whose plan the kernel refuses
    nothing.record([AddRoute(ROUTE)])
    assert journal.path.read_bytes().startswith(before) and journal.path.stat().st_ino == inode
    nothing.drop()
    assert journal.path.read_bytes() == before and journal.path.stat().st_ino == inode
    unsent = journal.begin("b", (4,), CONF)  # planned, but stopped before the first batch
    unsent.drop()
    assert journal.path.read_bytes() == before
    second = journal.begin("b", (4,), CONF)
    second.record([AddRoute(V6)])
    second.close()  # stopped half way: not complete, its undo kept
    assert [(g.number, g.complete) for g in journal.load()] == [(1, True), (2, False)]
    journal.drop_last()  # rolled back
    assert journal.path.read_bytes() == before and journal.path.stat().st_ino == inode


def test_a_torn_last_line_is_ignored_and_cut_off(tmp_path: Path) -> None:
    """A process killed while appending a batch's undo never sent that batch."""
    journal = Journal(tmp_path, None)
    recording = journal.begin("b", (4,), CONF)
    recording.record([AddRoute(ROUTE)])
    recording.close()
    whole = journal.path.read_bytes()
    with journal.path.open("ab") as f:
        f.write(b'{"undo":[{"type":"AddRo')
    assert journal.load()[0].undo == (DelRoute(ROUTE),)
    journal.begin("b", (4,), CONF).drop()
    assert journal.path.read_bytes() == whole


def test_a_journal_of_the_first_format_is_read_and_converted(tmp_path: Path) -> None:
    journal = Journal(tmp_path, None)
    journal.path.parent.mkdir(parents=True)
    old = {
        "number": 4,
        "time": "2026-11-27T20:32:55Z",
        "node": "b",
        "families": [4],
        "conflistPath": CONF,
        "complete": True,
        "undo": [DelRoute(ROUTE).encode()],
    }
    journal.path.write_text(json.dumps({"generations": [old]}))
    (loaded,) = journal.load()
    assert (loaded.number, loaded.complete, loaded.undo) == (4, True, (DelRoute(ROUTE),))
    journal.begin("b", (4,), CONF).record([AddRoute(V6)])
    assert [g.number for g in journal.load()] == [4, 5]


def _line(**record: object) -> str:
    return json.dumps(record) + "\n"


_HEADER = _line(
    generation=1,
    time="t",
    node="b",
    families=[4],
    conflistPath=CONF,
)
_ROUTE = {**AddRoute(ROUTE).encode()}
UNUSABLE = {
    "nested 100,000 deep": "[" * 100_000 + "]" * 100_000 + "\n",
    "dst a number": _HEADER + _line(undo=[{**_ROUTE, "route": {**_ROUTE["route"], "dst": 5}}]),
    "dst not a CIDR": _HEADER
    + _line(undo=[{**_ROUTE, "route": {**_ROUTE["route"], "dst": "10.0.0.1/33"}}]),
    "families holds a 5": _HEADER.replace("[4]", "[5]"),
    "families a number": _HEADER.replace("[4]", "4"),
    "an unknown change": _HEADER + _line(undo=[{"type": "Reboot"}]),
    "a chain of IPv5": _HEADER
    + _line(undo=[{**RemoveMasquerade(4, RULES, 1).encode(), "version": 5}]),
    "undo before any generation": _line(undo=[]),
    "not JSON": "{nope\n",
    # A journal is read as untrusted even in a trusted folder (#21): only what kindplan writes.
    "a sysctl kindplan never sets": _HEADER
    + _line(undo=[{"type": "SetSysctl", "name": "kernel.core_pattern", "value": "1", "old": "0"}]),
    "a sysctl name as a path": _HEADER
    + _line(undo=[{"type": "SetSysctl", "name": ".etc.shadow", "value": "1", "old": "0"}]),
    "a sysctl value that is no number": _HEADER
    + _line(
        undo=[{"type": "SetSysctl", "name": "net.ipv4.ip_forward", "value": "|sh", "old": "0"}]
    ),
    "100,000 jumps": _HEADER
    + _line(undo=[{**RemoveMasquerade(4, Masquerade(4, ()), 1).encode(), "hooks": 100_000}]),
    "a conflist elsewhere": _HEADER
    + _line(undo=[WriteConflist("/etc/shadow", "x", None).encode()]),
    "a relative conflist path": _line(
        generation=1, time="t", node="b", families=[4], conflistPath="net.d/10-kindnet.conflist"
    ),
    "a conflist path with ..": _line(
        generation=1,
        time="t",
        node="b",
        families=[4],
        conflistPath="/etc/cni/../../root/10-kindnet.conflist",
    ),
}


@pytest.mark.parametrize("content", UNUSABLE)
def test_an_unusable_journal_is_named_with_what_to_do(tmp_path: Path, content: str) -> None:
    journal = Journal(tmp_path, None)
    journal.path.parent.mkdir(parents=True)
    journal.path.write_text(UNUSABLE[content])
    with pytest.raises(RuntimeFailure, match=r"unusable journal .*move it aside") as caught:
        journal.load()
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 400


def test_a_journal_that_is_a_directory_is_named_with_what_to_do(tmp_path: Path) -> None:
    journal = Journal(tmp_path, None)
    journal.path.mkdir(parents=True)
    with pytest.raises(RuntimeFailure, match=r"a directory.*move it aside"):
        journal.load()
    with pytest.raises(RuntimeFailure, match=r"a directory.*move it aside"):
        journal.begin("b", (4,), CONF)


def test_an_apply_refuses_a_journal_it_cannot_append_to(tmp_path: Path) -> None:
    journal = Journal(tmp_path, None)
    journal.path.parent.mkdir(parents=True)
    journal.path.write_text("garbage\n")
    with pytest.raises(RuntimeFailure, match="unusable journal"):
        journal.begin("b", (4,), CONF)
    assert journal.path.read_text() == "garbage\n", "left as it was, for the operator"


_NETWORKS = st.builds(
    lambda address, length: ip_network((address, length), strict=False),
    st.ip_addresses(),
    st.integers(0, 32),
)
_ROUTE_CHANGES = st.builds(
    lambda dst, gateway, names, numbers, add: (AddRoute if add else DelRoute)(
        Route(dst, names[0], gateway, names[1], *numbers, names[2])
    ),
    _NETWORKS,
    st.none() | st.ip_addresses(),
    st.tuples(st.text(max_size=8), st.sampled_from(["universe", "host", 'li"nk\\']), st.text()),
    st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 255), st.integers(0, 2**32 - 1)),
    st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_ROUTE_CHANGES | st.sampled_from(CHANGES), max_size=6))
def test_undo_reads_back_as_written(changes: list[Change]) -> None:
    """Any route (any names, quotes and backslashes in them) comes back from its JSON as it was."""
    assert [decode_change(d) for d in json.loads(_encode_undo(tuple(changes)))] == changes


@pytest.mark.parametrize(
    "content", ['{"someone": "else"}', "plain text", '{"generation": 1, "time": 3}\n{"x"']
)
def test_a_last_line_kindplan_never_writes_is_named_not_cut(tmp_path: Path, content: str) -> None:
    """Only a line that begins as kindplan's lines do can be a torn write of kindplan's: another
    file at the journal's path (one line, no newline) is left as it is."""
    journal = Journal(tmp_path, None)
    journal.path.parent.mkdir(parents=True)
    journal.path.write_text(content)
    with pytest.raises(RuntimeFailure, match=r"not a journal line .*move it aside"):
        journal.begin("b", (4,), CONF)
    with pytest.raises(RuntimeFailure, match=r"not a journal line .*move it aside"):
        journal.load()
    assert journal.path.read_text() == content


@pytest.mark.parametrize("torn", [b"{", b'{"gen', b'{"generation": 2, "ti', b'{"undo":[{"ty'])
def test_a_torn_first_line_is_still_cut(tmp_path: Path, torn: bytes) -> None:
    journal = Journal(tmp_path, None)
    journal.path.parent.mkdir(parents=True)
    journal.path.write_bytes(torn)
    journal.begin("b", (4,), CONF).drop()
    assert journal.path.read_bytes() == b""


def test_a_journal_link_is_never_followed(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.json"
    foreign.write_text('{"generation": 1}\n')
    journal = Journal(tmp_path / "state", None)
    journal.path.parent.mkdir(parents=True)
    journal.path.symlink_to(foreign)
    for call in (
        journal.load,
        lambda: journal.begin("b", (4,), CONF),
        journal.drop_last,
    ):
        with pytest.raises(RuntimeFailure, match=r"not a regular file \(a symbolic link\)"):
            call()
    assert foreign.read_text() == '{"generation": 1}\n'
