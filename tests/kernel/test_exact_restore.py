"""A foreign route that --adopt replaced or deleted comes back from rollback exactly as the kernel
had it: from its own netlink attributes, journaled when the apply took it away, so that what
kindplan does not model comes back too (onlink, src, realm, metrics, IPv6 pref and hoplimit, an
expiry). And a journal of before (no attributes) still rolls back as it did.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from nodes import Node, kindplan
from shell import sh
from test_route_kinds import PEER, adopt_then_rollback, rollback, show

pytestmark = pytest.mark.root

V6_PEER = "fd00:10:244:2::/64"  # dual-worker's peer, via fc00:f853:ccd:e793::4


def test_an_onlink_route_comes_back(seed_worker2: Node) -> None:
    """Its gateway is not on-link: written back without onlink, the kernel refuses it ("Nexthop
    has invalid gateway") and the generation is stuck."""
    node = seed_worker2
    sh("ip", "-n", node.ns, "route", "add", PEER, "via", "10.99.0.1", "dev", "eth0", "onlink")
    adopt_then_rollback(node, PEER)
    assert "onlink" in show(node, PEER)[0]


def test_an_onlink_multipath_route_comes_back(seed_worker2: Node) -> None:
    node = seed_worker2
    sh("ip", "-n", node.ns, "route", "add", PEER,
       "nexthop", "via", "10.99.0.1", "dev", "eth0", "onlink",
       "nexthop", "via", "172.18.0.11", "dev", "eth0", "weight", "3")  # fmt: skip
    adopt_then_rollback(node, PEER)
    assert "onlink" in "".join(show(node, PEER))


def test_src_realm_and_metrics_come_back(seed_worker2: Node) -> None:
    node = seed_worker2
    sh("ip", "-n", node.ns, "route", "add", PEER, "via", "172.18.0.11", "dev", "eth0",
       "src", "172.18.0.12", "realm", "5", "mtu", "1400", "advmss", "1360", "rtt", "10ms",
       "initcwnd", "20")  # fmt: skip
    adopt_then_rollback(node, PEER)
    shown = show(node, PEER)[0]
    for word in ("src 172.18.0.12", "realm 5", "mtu 1400", "advmss 1360", "initcwnd 20"):
        assert word in shown


def test_ipv6_pref_and_hoplimit_come_back(dual_worker: Node) -> None:
    node = dual_worker
    sh("ip", "-n", node.ns, "-6", "route", "add", V6_PEER, "via", "fc00:f853:ccd:e793::9",
       "dev", "eth0", "metric", "1024", "pref", "high", "hoplimit", "33")  # fmt: skip
    adopt_then_rollback(node, V6_PEER, "-6")
    shown = show(node, V6_PEER, "-6")[0]
    assert "pref high" in shown and "hoplimit 33" in shown


def test_an_expiring_ipv6_route_comes_back_expiring(dual_worker: Node) -> None:
    node = dual_worker
    sh("ip", "-n", node.ns, "-6", "route", "add", V6_PEER, "via", "fc00:f853:ccd:e793::9",
       "dev", "eth0", "metric", "1024", "expires", "600")  # fmt: skip
    adopted = node.apply("--adopt")
    assert adopted.returncode == 0, adopted.stdout + adopted.stderr
    assert "expires" not in "".join(show(node, V6_PEER, "-6"))
    rollback(node)
    (shown,) = show(node, V6_PEER, "-6")
    seconds = re.search(r"expires (\d+)sec", shown)
    assert seconds is not None, shown
    assert 500 < int(seconds.group(1)) <= 600
    assert "via fc00:f853:ccd:e793::9" in shown


def test_a_stale_foreign_route_deleted_by_adopt_comes_back_exactly(seed_worker2: Node) -> None:
    """--adopt deletes kindnetd's leftover to a PodCIDR of no node: the undo adds it again,
    attributes and all."""
    node, stale = seed_worker2, "10.244.9.0/24"
    sh("ip", "-n", node.ns, "route", "add", stale, "via", "10.99.0.1", "dev", "eth0", "onlink",
       "mtu", "1300")  # fmt: skip
    adopt_then_rollback(node, stale)
    assert "mtu 1300" in show(node, stale)[0]


def test_the_journal_keeps_the_raw_attributes_of_foreign_routes_only(seed_worker2: Node) -> None:
    node = seed_worker2
    sh("ip", "-n", node.ns, "route", "add", PEER, "via", "10.99.0.1", "dev", "eth0", "onlink")
    assert node.apply("--adopt").returncode == 0
    undo = [
        change
        for line in journal(node).read_text().splitlines()
        for change in json.loads(line).get("undo", ())
    ]
    raws = [c for c in undo if "raw" in c]
    assert [c["type"] for c in raws] == ["ReplaceRoute"]
    assert raws[0]["route"]["dst"] == PEER and raws[0]["route"]["proto"] == 3
    # kindplan's own routes (pods' host routes, undone by a delete) carry none
    assert all("raw" not in c for c in undo if c["type"] != "ReplaceRoute")


def test_an_old_journal_line_without_attributes_still_rolls_back(seed_worker2: Node) -> None:
    node = seed_worker2
    sh("ip", "-n", node.ns, "route", "add", PEER, "via", "172.18.0.10", "dev", "eth0")
    before = show(node, PEER)
    assert node.apply("--adopt").returncode == 0
    path = journal(node)
    lines = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        for change in record.get("undo", ()):
            assert change.pop("raw", None) is not None or change["type"] != "ReplaceRoute"
        lines.append(json.dumps(record, separators=(",", ":")))
    path.write_text("".join(f"{line}\n" for line in lines))
    rollback(node)
    assert show(node, PEER) == before


def test_a_raw_route_of_another_destination_makes_the_journal_unusable(seed_worker2: Node) -> None:
    """The journal is untrusted input: bytes naming another route than their change does are
    refused before anything is written back."""
    node = seed_worker2
    sh("ip", "-n", node.ns, "route", "add", PEER, "via", "10.99.0.1", "dev", "eth0", "onlink")
    assert node.apply("--adopt").returncode == 0
    path = journal(node)
    text = path.read_text()
    raw = re.search(r'"raw":"([0-9a-f]+)"', text)
    assert raw is not None
    # RTA_DST 10.244.1.0 (08 00 01 00 0a f4 01 00) -> 10.244.7.0
    forged = raw.group(1).replace("080001000af40100", "080001000af40700")
    assert forged != raw.group(1)
    path.write_text(text.replace(raw.group(1), forged))
    routes = node.routes()
    back = kindplan("rollback", "--netns", node.ns, "--state-dir", str(node.tmp / "state"))
    assert back.returncode != 0
    assert "unusable journal" in back.stderr and "another route than 10.244.1.0/24" in back.stderr
    assert "Traceback" not in back.stderr
    assert node.routes() == routes


def journal(node: Node) -> Path:
    (path,) = (node.tmp / "state").glob("*/journal.json")
    return path


@pytest.mark.parametrize("adopt", [(), ("--adopt",)])
def test_an_ipv6_source_specific_route_is_another_route(
    dual_worker: Node, adopt: tuple[str, ...]
) -> None:
    """`from SRC` makes it another route than the one at its destination (RTA_SRC is part of the
    kernel's key): no conflict, no "replaced" while the kernel adds a second route, named and
    left alone by apply and rollback."""
    node = dual_worker
    sh("ip", "-n", node.ns, "-6", "route", "add", V6_PEER, "from", "2001:db8:1::/64",
       "via", "fc00:f853:ccd:e793::9", "dev", "eth0")  # fmt: skip
    theirs = show(node, V6_PEER, "-6")
    plan = node.plan("--detailed-exitcode", *adopt)
    assert plan.returncode == 2
    assert "conflict" not in plan.stdout
    assert f"+ route {V6_PEER} via fc00:f853:ccd:e793::4 dev eth0" in plan.stdout
    assert (
        "source-specific routes at destinations kindplan routes, left alone (they are other "
        f"routes, taken only for traffic from their source): {V6_PEER} from 2001:db8:1::/64 "
        "proto 3"
    ) in plan.stdout + plan.stderr
    applied = node.apply(*adopt)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert node.plan("--detailed-exitcode", *adopt).returncode == 0
    assert set(theirs) < set(show(node, V6_PEER, "-6"))
    rollback(node)
    assert show(node, V6_PEER, "-6") == theirs
