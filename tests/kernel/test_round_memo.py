"""The reconcile round's memos (netlink parse memo, engine.Memo) change speed, never answers."""

from __future__ import annotations

import operator
from pathlib import Path

import pytest
from nodes import Node
from shell import sh

from kindplan.core.model import Options
from kindplan.core.routes import MAIN_TABLE
from kindplan.inputs.kinds import parse_snapshot
from kindplan.node.engine import Memo, make_plan
from kindplan.node.iptables import Iptables, detect_backend
from kindplan.node.kernel import Kernel
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
            again, _ = kernel._netlink.routes(MAIN_TABLE, renamed)
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
