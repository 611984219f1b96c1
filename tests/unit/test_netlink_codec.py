"""The netlink codec that rtnetlink (links, routes) and the nf_tables probe share: the attribute
walk and the message walk on recorded bytes, and on bytes cut or malformed, which end the walk or
fail with EBADMSG but never loop or crash. No root, no kernel."""

from __future__ import annotations

import errno
import itertools
import json
import struct
from ipaddress import ip_network
from pathlib import Path

import pytest

from kindplan.core.routes import Route
from kindplan.node import netlink_codec as codec
from kindplan.node import netlink_links as linkmsg
from kindplan.node import netlink_routes as routemsg
from kindplan.node.iptables import _nat_families

DATA = Path(__file__).parent / "data"
DUMP = json.loads((DATA / "netlink-dump.json").read_text())
TABLES = json.loads((DATA / "nftables-tables.json").read_text())
ETH0 = bytes.fromhex(DUMP["links"][2])  # index 3, "eth0", mtu 1500, a veth
LINK_ATTRS = codec.HEADER.size + 16  # where a link message's attributes start (ifinfomsg)


def test_the_attribute_walk_reads_a_recorded_link_message() -> None:
    found = list(codec.attrs(ETH0, LINK_ATTRS))
    kinds = [kind for kind, _ in found]
    assert kinds[:3] == [linkmsg.IFLA_IFNAME, 13, 16]  # IFLA_TXQLEN, IFLA_OPERSTATE after it
    values = dict(found)
    assert values[linkmsg.IFLA_IFNAME] == b"eth0\0"
    assert struct.unpack("=I", values[linkmsg.IFLA_MTU]) == (1500,)
    # The spans cover the message to its end, each starting where the last one's padding ends.
    spans = list(codec.attr_spans(ETH0, LINK_ATTRS))
    assert spans[0][0] == LINK_ATTRS
    for (at, length, _), (following, _, _) in itertools.pairwise(spans):
        assert following == at + (length + 3) // 4 * 4
    assert spans[-1][0] + spans[-1][1] == len(ETH0)
    nested = dict(codec.attrs(values[linkmsg.IFLA_LINKINFO], 0))
    assert codec.text(nested[linkmsg.IFLA_INFO_KIND]) == "veth"
    assert linkmsg.parse_link(ETH0) == (3, "eth0", 1500, True, "veth")


def _link(*attrs: bytes, tail: bytes = b"") -> bytes:
    body = struct.pack("=BxHiII", 0, 1, 7, 1, 0) + b"".join(attrs) + tail
    return codec.request(linkmsg.RTM_NEWLINK, 2, 1, body)


NAME = codec.attr(linkmsg.IFLA_IFNAME, b"veth7\0")


@pytest.mark.parametrize(
    ("tail", "why"),
    [
        (struct.pack("=HH", 8, linkmsg.IFLA_MTU) + b"\x05\xdc", "longer than what is left"),
        (struct.pack("=HHI", 0, linkmsg.IFLA_MTU, 1500), "length 0: would walk in place"),
        (struct.pack("=HHI", 3, linkmsg.IFLA_MTU, 1500), "shorter than its header"),
        (b"\x08\x00", "a header cut in half"),
    ],
)
def test_a_malformed_attribute_ends_the_walk(tail: bytes, why: str) -> None:
    """What comes before it is read; it and what follows are not; no loop, no exception."""
    message = _link(NAME, tail=tail)
    assert list(codec.attrs(message, LINK_ATTRS)) == [(linkmsg.IFLA_IFNAME, b"veth7\0")], why
    assert linkmsg.parse_link(message) == (7, "veth7", 0, True, "")


def test_a_cut_nested_attribute_is_read_as_far_as_it_goes() -> None:
    kind = codec.attr(linkmsg.IFLA_INFO_KIND, b"veth\0")
    info = codec.attr(linkmsg.IFLA_LINKINFO, kind + struct.pack("=HH", 40, 2))  # cut INFO_DATA
    assert linkmsg.parse_link(_link(NAME, info)) == (7, "veth7", 0, True, "veth")


def test_an_attribute_of_the_wrong_size_is_not_read_as_a_number() -> None:
    short_mtu = codec.attr(linkmsg.IFLA_MTU, b"\x05\xdc")  # well formed, but 2 bytes
    assert linkmsg.parse_link(_link(NAME, short_mtu)) == (7, "veth7", 0, True, "")


def _route(*attrs: bytes) -> bytes:
    body = struct.pack("=BBBBBBBBI", 2, 24, 0, 0, 254, 75, 0, routemsg.RTN_UNICAST, 0)
    return codec.request(routemsg.RTM_NEWROUTE, 2, 1, body + b"".join(attrs))


def test_a_route_message_cut_in_its_last_attribute_parses_as_far_as_it_goes() -> None:
    dst = codec.attr(routemsg.RTA_DST, bytes([10, 1, 2, 0]))
    oif = codec.attr(routemsg.RTA_OIF, struct.pack("=I", 3))
    cut = codec.attr(routemsg.RTA_PRIORITY, struct.pack("=I", 7))[:-2]
    message = _route(dst, oif) + cut
    message = struct.pack("=I", len(message)) + message[4:]  # its header counts the cut bytes
    layouts: dict[int, routemsg.Layout] = {}
    expected = Route(ip_network("10.1.2.0/24"), "eth0", None, proto=75)
    for _ in range(2):  # learns no layout from it: the second read walks again
        assert routemsg._parse_route(24, message, 254, {3: "eth0"}, layouts) == expected
    assert layouts == {}


def test_the_message_walk_reads_a_buffer_and_rejects_what_does_not_fit() -> None:
    first, second = codec.request(20, 0, 1, b"abcd"), codec.request(3, 2, 2, b"\0" * 4)
    assert list(codec.messages(first + second)) == [(0, 20, 20, 0, 1), (20, 20, 3, 2, 2)]
    for broken in (first[:-1], first + b"\x01", codec.HEADER.pack(0, 20, 0, 1, 0)):
        with pytest.raises(codec.NetlinkError) as caught:
            list(codec.messages(broken))
        assert caught.value.errno == errno.EBADMSG


def test_the_dump_reader_and_the_message_walk_agree() -> None:
    """dump_answers walks a buffer itself (the hot loop): it keeps what messages() yields for
    its sequence number and stops at its NLMSG_DONE."""
    routes = [bytes.fromhex(m) for m in DUMP["routes"]]
    seq = struct.unpack_from("=I", routes[0], 8)[0]
    routes = [m for m in routes if struct.unpack_from("=I", m, 8)[0] == seq]  # one dump's
    stale = codec.request(routemsg.RTM_NEWROUTE, 2, seq + 1, b"\0" * 12)
    done = codec.request(codec.NLMSG_DONE, codec.F_MULTI, seq, b"\0" * 4)
    data = b"".join(routes[:2]) + stale + b"".join(routes[2:])
    answers: list[tuple[int, bytes]] = []
    assert codec.dump_answers(data, seq, answers) == (False, False)
    walked = [(k, data[o : o + n]) for o, n, k, _, s in codec.messages(data) if s == seq]
    assert answers == walked and len(answers) == len(routes)
    assert codec.dump_answers(done, seq, answers) == (True, False)


def test_the_nf_tables_probe_reads_recorded_tables_through_the_codec() -> None:
    """Tables ip nat, ip6 filter and ip6 natx: iptables-nft's nat table exists for IPv4 only."""
    tables = [(struct.unpack_from("=H", m, 4)[0], m) for m in map(bytes.fromhex, TABLES["tables"])]
    names = [codec.text(dict(codec.attrs(m, 20))[1]) for _, m in tables]
    assert names == ["nat", "filter", "natx"]
    assert _nat_families(tables) == frozenset({4})
    assert _nat_families(tables[1:]) == frozenset()
    # A table message too short to hold its nfgenmsg: both families, to be safe.
    assert _nat_families([*tables, (tables[0][0], tables[0][1][:18])]) == frozenset({4, 6})
