"""The journal's undo rules and its file format, without a kernel."""

from __future__ import annotations

import json
from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kindplan.errors import RuntimeFailure
from kindplan.journal import MAX_GENERATIONS, Journal, _encode, _encode_undo, undo_all, undo_of
from kindplan.model import (
    AddAddress,
    Address,
    AddRoute,
    Change,
    DelAddress,
    DeleteConflist,
    DelRoute,
    NextHop,
    RemoveChain,
    ReplaceRoute,
    Route,
    RouteSpecial,
    SetSysctl,
    WriteChain,
    WriteConflist,
)

ROUTE = Route(ip_network("10.244.1.0/24"), "eth0", ip_address("192.0.2.11"), peer="b")
FOREIGN = ROUTE._replace(gateway=ip_address("192.0.2.77"), proto=3, peer="")
V6 = Route(ip_network("fd00:10:244:1::5/128"), "veth1", None, metric=1024, peer="default/web")
ADDRESS = Address("veth1", ip_address("10.244.1.1"), pod="default/web")
RULES = ("-A KIND-MASQ-AGENT -j MASQUERADE",)
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
    WriteChain(4, RULES, None, 0),
    WriteChain(4, RULES, ("-A KIND-MASQ-AGENT -j RETURN",), 2),
    WriteChain(6, None, RULES, 0),
    RemoveChain(6, RULES, 1),
    WriteChain(4, RULES, None, 0, backend="legacy"),
    RemoveChain(6, RULES, 1, "nft"),
    *(ReplaceRoute(ROUTE, old) for old in (MULTIPATH, BLACKHOLE, NEXTHOP, TOS)),
    WriteConflist("/etc/cni/net.d/10-kindnet.conflist", "{}", None),
    WriteConflist("/etc/cni/net.d/10-kindnet.conflist", "{}", '{"old": 1}'),
    DeleteConflist("/etc/cni/net.d/10-kindnet.conflist", "{}"),
]


@pytest.mark.parametrize("change", CHANGES, ids=lambda c: type(c).__name__)
def test_undo_of_undo_is_the_change(change: object) -> None:
    once = undo_of(change)  # type: ignore[arg-type]
    assert once is not None and once != change
    assert undo_of(once) == change


def test_undo_examples() -> None:
    assert undo_of(ReplaceRoute(ROUTE, FOREIGN)) == ReplaceRoute(FOREIGN, ROUTE)
    assert undo_of(WriteChain(4, RULES, None, 0)) == RemoveChain(4, RULES, 1)
    assert undo_of(SetSysctl("net.ipv4.ip_forward", "1", None)) is None
    order = [
        type(c).__name__
        for c in undo_all([WriteConflist("/x", "{}", None), AddAddress(ADDRESS), AddRoute(ROUTE)])
    ]
    assert order == ["DeleteConflist", "DelRoute", "DelAddress"], "a teardown: conflist first"


def test_journal_round_trip_and_bound(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "kp-n1")
    assert journal.path == tmp_path / "netns-kp-n1" / "journal.json"
    assert journal.load() == []
    first = journal.begin("b", (4, 6), "/x/10-kindnet.conflist", tuple(CHANGES))
    assert [g.complete for g in journal.load()] == [False]
    assert journal.load()[0].undo == undo_all(CHANGES)
    journal.finish(first, CHANGES[:3])
    (loaded,) = journal.load()
    assert loaded.complete and loaded.undo == undo_all(CHANGES[:3])
    for _ in range(MAX_GENERATIONS + 3):
        journal.finish(journal.begin("b", (4,), "/x", (AddRoute(ROUTE),)), [AddRoute(ROUTE)])
    numbers = [g.number for g in journal.load()]
    assert len(numbers) == MAX_GENERATIONS and numbers[-1] == MAX_GENERATIONS + 4
    journal.finish(journal.begin("b", (4,), "/x", (AddRoute(ROUTE),)), [])
    assert len(journal.load()) == MAX_GENERATIONS, "a generation that applied nothing is dropped"
    assert Journal(tmp_path, None).path == tmp_path / "host" / "journal.json"


def test_corrupt_journal_is_a_clear_failure(tmp_path: Path) -> None:
    journal = Journal(tmp_path, None)
    journal.path.parent.mkdir(parents=True)
    journal.path.write_text('{"generations": [{"number": 1}]}')
    with pytest.raises(RuntimeFailure, match="unreadable journal"):
        journal.load()


def test_a_complete_apply_reuses_the_encoding_and_the_file_is_one_line_per_generation(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path, None)
    journal.finish(journal.begin("b", (4,), "/x", (AddRoute(ROUTE),)), [AddRoute(ROUTE)])
    everything = tuple(CHANGES)
    journal.finish(journal.begin("b", (4, 6), "/x", everything), list(everything))
    first, second = journal.load()
    assert second.complete and second.undo == undo_all(CHANGES)
    assert first.complete and first.undo == undo_all([AddRoute(ROUTE)])
    text = journal.path.read_text()
    lines = text.splitlines()
    assert lines[0] == '{"generations": [' and lines[-1] == "]}" and len(lines) == 4
    # a generation joined from its header and undo is what encoding it whole gives
    whole = json.loads(lines[2])
    assert lines[2] == json.dumps(whole, separators=(",", ":"))
    assert list(whole) == ["number", "time", "node", "families", "conflistPath", "complete", "undo"]


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
def test_undo_is_encoded_as_json_would(changes: list[Change]) -> None:
    """The routes' hand-written JSON is byte for byte json.dumps of their dicts (any names)."""
    expected = json.dumps([_encode(c) for c in changes], separators=(",", ":"))
    assert _encode_undo(tuple(changes)) == expected
