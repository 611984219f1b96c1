"""plan and apply against a real kernel, in throw-away namespaces, through the real CLI process.

Each test builds a node namespace (uplink eth0 holding the node's InternalIPs, a host veth per
local pod) and points kindplan at it with --netns, --conf-dir and --state-dir in tmp_path.
Kernel writes are counted with `ip monitor`, SNAT state compared with `iptables-save`.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest
from nodes import SEED, Node, build_node, cni_cache_entry, edit_snapshot, kernel_events, kindplan
from shell import sh

from kindplan.node.locking import LOCK_DIR, apply_lock
from kindplan.resources import load_schema

pytestmark = pytest.mark.root


def test_apply_from_empty_then_converged_is_zero_writes(seed_worker2: Node) -> None:
    node = seed_worker2
    first = node.apply()
    assert first.returncode == 0, first.stderr
    assert "Apply complete: 8 to add, 1 to change, 0 to delete." in first.stdout
    assert sorted(line for line in node.routes() if "proto 75" in line) == [
        "10.244.0.0/24 via 172.18.0.10 dev eth0 proto 75 ",
        "10.244.1.0/24 via 172.18.0.11 dev eth0 proto 75 ",
        "10.244.2.8 dev vetha1079faf proto 75 scope host ",
        "10.244.2.9 dev veth4b2c9d10 proto 75 scope host ",
    ]
    assert "inet 10.244.2.1/32" in sh("ip", "-n", node.ns, "addr", "show", "vetha1079faf")
    assert sh("cat", "/proc/sys/net/ipv4/ip_forward", ns=node.ns).strip() == "1"
    assert "-j KIND-MASQ-AGENT" in node.nat()
    assert json.loads(node.conflist.read_text())["plugins"][0]["type"] == "ptp"

    nat_before, conflist_stat = node.nat(), node.conflist.stat()
    with kernel_events(node.ns) as events:
        second = node.apply()
    assert second.returncode == 0, second.stderr
    assert second.stdout == "No changes.\n"
    assert events == [], "a converged node must see zero kernel writes"
    assert node.nat() == nat_before
    assert node.conflist.stat().st_mtime_ns == conflist_stat.st_mtime_ns
    assert node.plan("--detailed-exitcode").returncode == 0


def test_drift_is_repaired_exactly_and_foreign_state_survives(seed_worker2: Node) -> None:
    node = seed_worker2
    assert node.apply().returncode == 0
    ns = node.ns
    # drift: a peer route gone, a stale route of ours, the MTU edited, the RETURN rule deleted
    sh("ip", "-n", ns, "route", "del", "10.244.0.0/24")
    sh("ip", "-n", ns, "route", "add", "10.244.9.0/24", "via", "172.18.0.99", "proto", "75")
    node.conflist.write_text(node.conflist.read_text().replace('"mtu": 1500', '"mtu": 1450'))
    sh("iptables", "-t", "nat", "-D", "KIND-MASQ-AGENT", "1", ns=ns)
    # foreign state that must survive: a route, a Docker-style chain, a POSTROUTING rule
    sh("ip", "-n", ns, "route", "add", "198.51.100.0/24", "via", "172.18.0.98", "proto", "static")
    sh("iptables", "-t", "nat", "-N", "DOCKER", ns=ns)
    sh("iptables", "-t", "nat", "-A", "DOCKER", "-i", "docker0", "-j", "RETURN", ns=ns)
    sh(
        "iptables",
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-s",
        "172.17.0.0/16",
        "!",
        "-o",
        "docker0",
        "-j",
        "MASQUERADE",
        ns=ns,
    )
    foreign_nat = [
        line for line in node.nat().splitlines() if "docker0" in line or "DOCKER" in line
    ]

    plan = node.plan("--detailed-exitcode")
    assert plan.returncode == 2
    changes = [line[2:] for line in plan.stdout.splitlines() if re.match(r"  [+~-] ", line)]
    assert changes == [
        "+ route 10.244.0.0/24 via 172.18.0.10 dev eth0 proto 75 (peer k8s-guide-control-plane)",
        "~ iptables nat: chain KIND-MASQ-AGENT",
        "- route 10.244.9.0/24 via 172.18.0.99 dev eth0 proto 75 "
        "(stale: no longer in the snapshot)",
        f"~ file {node.conflist}",
    ]
    assert "plugins[0].mtu: 1450 -> 1500" in plan.stdout
    assert "Plan: 1 to add, 2 to change, 1 to delete." in plan.stdout

    applied = node.apply()
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.count("applied: ") == 4
    assert (  # a deletion says so: it must not read like an addition
        "applied: removed route 10.244.9.0/24 via 172.18.0.99 dev eth0 proto 75 "
        "(stale: no longer in the snapshot)\n"
    ) in applied.stdout
    assert "applied: added route 10.244.0.0/24 via 172.18.0.10" in applied.stdout
    assert "198.51.100.0/24 via 172.18.0.98 dev eth0 proto static " in node.routes()
    assert all("10.244.9.0" not in line for line in node.routes())
    assert [
        line for line in node.nat().splitlines() if "docker0" in line or "DOCKER" in line
    ] == foreign_nat
    assert node.plan("--detailed-exitcode").returncode == 0


def test_nodes_leaving_and_joining_cost_one_write_each(seed_worker2: Node, tmp_path: Path) -> None:
    node = seed_worker2
    assert node.apply().returncode == 0
    without = edit_snapshot(
        SEED,
        tmp_path / "without.yaml",
        lambda t: t.replace(
            '  - name: k8s-guide-worker\n    internalIPs: ["172.18.0.11"]\n'
            '    podCIDRs: ["10.244.1.0/24"]\n',
            "",
        ).replace("  - {namespace: default, name: web-0, node: k8s-guide-worker,", "  # "),
    )
    with kernel_events(node.ns) as removed:
        result = node.apply(snapshot=without)
    assert result.returncode == 0, result.stderr
    assert len(removed) == 1 and removed[0].startswith("Deleted 10.244.1.0/24 via 172.18.0.11")
    added = edit_snapshot(
        SEED,
        tmp_path / "added.yaml",
        lambda t: t.replace(
            "pods:",
            '  - name: k8s-guide-worker3\n    internalIPs: ["172.18.0.13"]\n'
            '    podCIDRs: ["10.244.3.0/24"]\npods:',
        ),
    )
    with kernel_events(node.ns) as events:
        result = node.apply(snapshot=added)
    assert result.returncode == 0, result.stderr
    assert sorted(e.split(" proto")[0] for e in events) == [
        "10.244.1.0/24 via 172.18.0.11 dev eth0",
        "10.244.3.0/24 via 172.18.0.13 dev eth0",
    ]


def test_dual_stack_routes_and_ip6tables(dual_worker: Node) -> None:
    node = dual_worker
    result = node.apply()
    assert result.returncode == 0, result.stderr + result.stdout
    v6 = node.routes("-6")
    assert (
        "fd00:10:244::/64 via fc00:f853:ccd:e793::2 dev eth0 proto 75 metric 1024 pref medium" in v6
    )
    assert "fd00:10:244:1::5 dev veth8e1d2c33 proto 75 metric 1024 pref medium" in v6
    assert "-A KIND-MASQ-AGENT -d fd00:10:244::/56" in node.nat("ip6tables-save")
    assert "-A KIND-MASQ-AGENT -d 10.244.0.0/16" in node.nat("iptables-save")
    assert sh("cat", "/proc/sys/net/ipv6/conf/all/forwarding", ns=node.ns).strip() == "1"
    assert 'mtu": 1450' in node.conflist.read_text()  # cluster.mtu wins over the uplink's
    sh("ip", "-n", node.ns, "-6", "route", "del", "fd00:10:244:2::/64")
    sh("ip6tables", "-t", "nat", "-F", "KIND-MASQ-AGENT", ns=node.ns)
    plan = node.plan("--json")
    document = json.loads(plan.stdout)
    from jsonschema import Draft202012Validator

    Draft202012Validator(load_schema("plan.schema.json")).validate(document)
    assert [c["description"].split(" (")[0] for c in document["changes"]] == [
        "route fd00:10:244:2::/64 via fc00:f853:ccd:e793::4 dev eth0 proto 75 metric 1024",
        "ip6tables nat: chain KIND-MASQ-AGENT",
    ]
    assert node.apply().returncode == 0
    with kernel_events(node.ns) as events:
        assert node.apply().stdout == "No changes.\n"
    assert events == []


def test_foreign_route_is_a_conflict_until_adopted(seed_worker2: Node) -> None:
    """Classic kindnetd's routes carry no protocol of their own: --adopt takes them over."""
    node = seed_worker2
    sh("ip", "-n", node.ns, "route", "add", "10.244.1.0/24", "via", "172.18.0.77")
    plan = node.plan("--detailed-exitcode")
    assert plan.returncode == 2
    assert (
        "conflict: route 10.244.1.0/24 is foreign (via 172.18.0.77 dev eth0 proto 3)" in plan.stdout
    )
    result = node.apply()
    assert result.returncode == 1
    assert "10.244.1.0/24 via 172.18.0.77 dev eth0 " in node.routes()  # ip hides proto boot
    adopted = node.apply("--adopt")
    assert adopted.returncode == 0, adopted.stderr
    assert "10.244.1.0/24 via 172.18.0.11 dev eth0 proto 75 " in node.routes()


def test_stale_saved_plan_is_refused(seed_worker2: Node) -> None:
    node = seed_worker2
    saved = node.tmp / "plan.json"
    assert node.plan("--out", str(saved)).returncode == 0
    sh("ip", "-n", node.ns, "route", "add", "203.0.113.0/24", "via", "172.18.0.1")
    state = ["--state-dir", str(node.tmp / "state")]
    refused = kindplan("apply", "--plan", str(saved), *state)
    assert refused.returncode == 1
    assert "changed since the plan was made; plan again" in refused.stderr
    assert all("proto 75" not in line for line in node.routes()), "nothing applied"
    assert node.plan("--out", str(saved)).returncode == 0
    fresh = kindplan("apply", "--plan", str(saved), *state)
    assert fresh.returncode == 0, fresh.stderr
    assert kindplan("apply", "--plan", str(node.tmp / "missing.json"), *state).returncode == 65


def test_saved_plan_with_another_target_is_a_usage_error(seed_worker2: Node) -> None:
    """apply --plan applies to the plan's node and namespace: naming others is a mistake (64)."""
    node = seed_worker2
    saved = node.tmp / "plan.json"
    assert node.plan("--out", str(saved), "--state-dir", str(node.tmp / "state")).returncode == 0
    state = ["--state-dir", str(node.tmp / "state")]
    for flag, other, planned in (("--netns", "elsewhere", node.ns), ("--node", "w9", node.name)):
        refused = kindplan("apply", "--plan", str(saved), flag, other, *state)
        assert (refused.returncode, refused.stdout) == (64, "")
        assert refused.stderr == f"error: {flag} {other}: {saved} was made for {flag} {planned}\n"
    assert all("proto 75" not in line for line in node.routes()), "nothing applied"
    same = kindplan("apply", "--plan", str(saved), "--netns", node.ns, "--node", node.name, *state)
    assert same.returncode == 0, same.stderr


def test_concurrent_applies_take_turns(seed_worker2: Node) -> None:
    """The second apply waits for the node lock (flock(1) of the namespace's lock file takes the
    same lock); with a zero timeout it gives up clearly."""
    node = seed_worker2
    lock = str(apply_lock(node.ns))
    LOCK_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    holder = subprocess.Popen(["flock", lock, "sleep", "4"])
    try:
        time.sleep(0.2)
        impatient = node.apply("--lock-timeout", "0")
        assert impatient.returncode == 1
        assert "another kindplan apply holds" in impatient.stderr
        started = time.monotonic()
        patient = node.apply("--lock-timeout", "30")
        assert patient.returncode == 0, patient.stderr
        assert patient.stderr.startswith(  # whose lock, and how long it waits
            f"waiting for {lock}: held by pid {holder.pid} (flock {lock} sleep 4); "
            "up to 30 s (--lock-timeout)\n"
        )
        assert time.monotonic() - started > 0.8, "it must have waited for the holder"
    finally:
        holder.wait()


def test_off_link_peer_is_reported_and_the_others_are_routed(netns: str, tmp_path: Path) -> None:
    build_node(netns, ["172.18.0.12/24"], ["vetha1079faf", "veth4b2c9d10"])  # .10/.11 on-link
    snapshot = edit_snapshot(
        SEED, tmp_path / "far.yaml", lambda t: t.replace("172.18.0.10", "172.19.0.10")
    )
    node = Node(netns, tmp_path, snapshot, "k8s-guide-worker2")
    result = node.apply()
    assert result.returncode == 1
    assert "k8s-guide-control-plane" in result.stderr and "unreachable" in result.stderr.lower()
    assert "10.244.1.0/24 via 172.18.0.11 dev eth0 proto 75 " in node.routes()
    assert node.conflist.exists(), "a refused peer route does not hold back the node's own plumbing"


def test_local_pods_from_the_cni_cache(seed_worker2: Node) -> None:
    node = seed_worker2
    cache = node.tmp / "results"
    cache.mkdir()
    entry = cni_cache_entry("veth4b2c9d10", "10.244.2.30")
    (cache / "kindnet-c0ffee-eth0").write_text(json.dumps(entry))
    (cache / "othernet-beef-eth0").write_text(json.dumps({**entry, "networkName": "othernet"}))
    result = node.apply("--cni-cache-dir", str(cache))
    assert result.returncode == 0, result.stderr
    assert "10.244.2.30 dev veth4b2c9d10 proto 75 scope host " in node.routes()
