"""The reconcile round's memos (netlink parse memo, engine.Memo) change speed, never answers."""

from __future__ import annotations

import operator
from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest
from nodes import Node
from shell import sh

from kindplan.core.model import MAIN_TABLE, Options, Route
from kindplan.core.snapshot import parse_snapshot
from kindplan.node.engine import Memo, make_plan
from kindplan.node.iptables import Iptables, detect_backend
from kindplan.node.kernel import Kernel
from kindplan.node.netlink import Netlink
from kindplan.node.netns import enter_netns

pytestmark = pytest.mark.root


def test_route_reads_are_reused_only_while_the_kernel_says_the_same(netns: str) -> None:
    sh("ip", "-n", netns, "link", "add", "d0", "type", "veth", "peer", "name", "d0p")
    sh("ip", "-n", netns, "link", "set", "d0p", "up")
    sh("ip", "-n", netns, "link", "set", "d0", "up")
    sh("ip", "-n", netns, "route", "add", "192.0.2.0/24", "dev", "d0", "proto", "75")
    with enter_netns(netns):
        kernel = Kernel()
        try:
            kernel.read_links()
            first = kernel.read_routes()
            again = kernel.read_routes()  # nothing changed: the same Route objects, not parsed
            assert again == first and all(map(operator.is_, again, first))

            sh("ip", "-n", netns, "route", "replace", "192.0.2.0/24", "dev", "d0", "metric", "0",
               "proto", "76")  # fmt: skip
            changed = kernel.read_routes()
            assert [r.proto for r in changed if str(r.dst) == "192.0.2.0/24"] == [76]

            # The same route messages read for other link names (a link renamed): parsed anew.
            index = next(r for r in changed if str(r.dst) == "192.0.2.0/24")
            names = {i: n for n, i in kernel._index.items()}
            renamed = {i: ("other" if n == "d0" else n) for i, n in names.items()}
            again = kernel._netlink.routes(MAIN_TABLE, renamed)
            assert {r.ifname for r in again if str(r.dst) == "192.0.2.0/24"} == {"other"}
            assert index.ifname == "d0"
        finally:
            kernel.close()


def test_memoized_plan_equals_a_fresh_one_as_the_node_drifts(
    seed_worker2: Node, tmp_path: Path
) -> None:
    assert seed_worker2.apply().returncode == 0
    snapshot = parse_snapshot(seed_worker2.snapshot.read_bytes()).snapshot
    options = Options(node=seed_worker2.name, conf_dir=str(tmp_path / "cni"))
    memo = Memo()
    with enter_netns(seed_worker2.ns):
        kernel = Kernel()
        iptables = Iptables(detect_backend())
        try:

            def both() -> tuple[object, object]:
                memoized = make_plan(snapshot, options, kernel, iptables, memo).plan
                other = Kernel()
                try:
                    return memoized, make_plan(snapshot, options, other, iptables).plan
                finally:
                    other.close()

            memoized, fresh = both()
            assert memoized == fresh and memoized.empty
            sh("ip", "-n", seed_worker2.ns, "route", "del", "10.244.0.0/24")
            memoized, fresh = both()
            assert memoized == fresh and len(memoized.changes) == 1
            (tmp_path / "cni" / "10-kindnet.conflist").write_text("{}")
            memoized, fresh = both()
            assert memoized == fresh and len(memoized.changes) == 2
        finally:
            kernel.close()


def test_expected_routes_are_taken_only_when_the_kernel_says_exactly_that(netns: str) -> None:
    """Kernel.expect (the desired routes) spares parsing a dumped route that matches one field for
    field; any field the kernel says otherwise must come out as the kernel says it."""
    for link in ("d0", "d1"):
        sh("ip", "-n", netns, "link", "add", link, "type", "veth", "peer", "name", f"{link}p")
        sh("ip", "-n", netns, "link", "set", f"{link}p", "up")
        sh("ip", "-n", netns, "link", "set", link, "up")
    sh("ip", "-n", netns, "addr", "add", "198.51.100.1/24", "dev", "d0")
    sh("ip", "-n", netns, "addr", "add", "198.51.101.1/24", "dev", "d1")
    sh("ip", "-n", netns, "-6", "addr", "add", "2001:db8:ff::1/64", "dev", "d0", "nodad")
    desired = (
        Route(ip_network("192.0.2.0/24"), "d0", ip_address("198.51.100.2"), proto=75, peer="a"),
        Route(ip_network("10.0.0.5/32"), "d1", None, "host", proto=75, peer="ns/pod"),
        Route(
            ip_network("2001:db8:1::/64"),
            "d0",
            ip_address("2001:db8:ff::2"),
            metric=1024,
            proto=75,
            peer="a",
        ),
    )
    route = ("ip", "-n", netns, "route", "replace")
    sh(*route, "192.0.2.0/24", "via", "198.51.100.2", "dev", "d0", "proto", "75")
    sh(*route, "10.0.0.5/32", "dev", "d1", "scope", "host", "proto", "75")
    sh(*route, "2001:db8:1::/64", "via", "2001:db8:ff::2", "dev", "d0", "proto", "75")

    def read() -> tuple[tuple[Route, ...], tuple[Route, ...]]:
        """(read with the desired routes expected, parsed from scratch), for the same dump."""
        with enter_netns(netns):
            kernel = Kernel()
            try:
                kernel.read_links()
                kernel.expect(desired)
                expecting = kernel.read_routes()
                names = {i: n for n, i in kernel._index.items()}
                scratch = Netlink()
                try:
                    fresh = tuple(sorted(scratch.routes(MAIN_TABLE, names), key=lambda r: r.key))
                finally:
                    scratch.close()
                return expecting, fresh
            finally:
                kernel.close()

    expecting, fresh = read()
    assert expecting == fresh
    taken = [r for r in expecting if r.proto == 75]
    assert len(taken) == 3 and all(r.peer == "" for r in taken)  # labels are not observations
    assert {id(r.dst) for r in taken} == {id(r.dst) for r in desired}  # the fast path was taken

    drifts = [  # one field at a time, as somebody else might change it
        ("192.0.2.0/24", "via", "198.51.100.3", "dev", "d0", "proto", "75"),  # gateway
        ("192.0.2.0/24", "via", "198.51.101.2", "dev", "d1", "proto", "75"),  # link
        ("192.0.2.0/24", "via", "198.51.100.2", "dev", "d0", "proto", "76"),  # protocol
        ("10.0.0.5/32", "dev", "d1", "scope", "link", "proto", "75"),  # scope
        ("2001:db8:1::/64", "via", "2001:db8:ff::3", "dev", "d0", "proto", "75"),  # gateway v6
        ("2001:db8:1::/64", "dev", "d0", "proto", "75"),  # no gateway
    ]
    for drift in drifts:
        sh(*route, *drift)
        expecting, fresh = read()
        assert expecting == fresh, drift
        changed = next(r for r in expecting if str(r.dst) == drift[0])
        assert changed not in [Route(d.dst, d.ifname, d.gateway, d.scope, d.metric, d.proto)
                               for d in desired], drift  # fmt: skip
