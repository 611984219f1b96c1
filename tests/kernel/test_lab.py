"""The lab end to end, through the real CLI: up, check, plan-after-up empty, break and repair, down.

Lab names start with kpt-<pid>-, so the session sweep treats a killed run's lab like any other
test namespace; every test removes its lab, also when it fails.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from shell import NETNS_PREFIX, sh

pytestmark = pytest.mark.root
_counter = itertools.count()


class Lab:
    def __init__(self, state: Path) -> None:
        self.name = f"{NETNS_PREFIX}{os.getpid()}-lab{next(_counter)}"
        self.state = state

    def run(self, command: str, *args: str) -> subprocess.CompletedProcess[str]:
        """`kindplan lab COMMAND --name ... --state-dir ... ARGS` (options first: exec passes on
        everything after --)."""
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "kindplan.cli",
                "lab",
                command,
                "--name",
                self.name,
                "--state-dir",
                str(self.state),
                *args,
            ],
            capture_output=True,
            text=True,
            check=False,
        )

    def ns(self, node: str) -> str:
        nodes = json.loads((self.state / self.name / "lab.json").read_text())["nodes"]
        return next(n["ns"] for n in nodes if n["name"] == node)

    def namespaces(self) -> list[str]:
        out = sh("ip", "netns", "list")
        return [line.split()[0] for line in out.splitlines() if line.startswith(f"{self.name}-")]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    made = Lab(tmp_path / "labs")
    yield made
    made.run("down")


NODES = ("k8s-guide-control-plane", "k8s-guide-worker", "k8s-guide-worker2")


def assert_up_and_clean(lab: Lab, *up_args: str) -> str:
    """Up, checked, and no plan anywhere; returns what up printed."""
    up = lab.run("up", *up_args)
    assert up.returncode == 0, up.stderr
    check = lab.run("check")
    failed = [line for line in check.stdout.splitlines() if not line.startswith("pass")]
    assert check.returncode == 0, "\n".join(failed)
    assert ", 0 failed" in check.stdout and "FAIL" not in check.stdout
    for node in NODES:  # kindplan's idea of pod plumbing equals what the real ptp plugin did
        plan = lab.run("plan", node, "--detailed-exitcode")
        assert plan.returncode == 0, plan.stdout + plan.stderr
        assert plan.stdout == "No changes.\n"
    return up.stdout


def test_seed_lab_breaks_and_repairs(lab: Lab) -> None:
    assert_up_and_clean(lab)
    worker, worker2, control = (
        lab.ns(n) for n in ("k8s-guide-worker", "k8s-guide-worker2", "k8s-guide-control-plane")
    )
    nat_before = sh("iptables-save", "-t", "nat", ns=worker)
    assert "CNI-HOSTPORT-DNAT" in nat_before
    # Break four things, one of each kind (IPs as `lab up` assigns them: .2 and .3 per node).
    sh("ip", "-n", worker, "route", "del", "10.244.1.3/32")  # a pod's host route
    veth = sh("ip", "-n", worker2, "-o", "route", "get", "10.244.2.2").split(" dev ")[1].split()[0]
    sh("ip", "-n", worker2, "addr", "del", "10.244.2.1/32", "dev", veth)  # its gateway address
    sh("ip", "-n", control, "route", "del", "10.244.1.0/24")  # a peer route
    sh("iptables", "-t", "nat", "-F", "KIND-MASQ-AGENT", ns=worker)  # SNAT

    check = lab.run("check")
    assert check.returncode == 1
    failed = [line for line in check.stdout.splitlines() if line.startswith("FAIL")]
    assert any("pod-to-pod IPv4 k8s-guide-control-plane -> k8s-guide-worker " in f for f in failed)
    assert any("SNAT k8s-guide-worker pods" in f for f in failed)
    assert any("hops IPv4 web-0-0 -> web-1-0" in f for f in failed)
    assert not any("SNAT k8s-guide-control-plane" in f for f in failed), "only broken paths fail"

    plans = {node: lab.run("plan", node).stdout for node in NODES}
    assert plans["k8s-guide-control-plane"].splitlines()[1:] == [
        "  + route 10.244.1.0/24 via 172.18.0.11 dev eth0 proto 75 (peer k8s-guide-worker)",
        "Plan: 1 to add, 0 to change, 0 to delete.",
    ]
    assert "  + route 10.244.1.3/32 dev " in plans["k8s-guide-worker"]
    assert "  ~ iptables nat: chain KIND-MASQ-AGENT" in plans["k8s-guide-worker"]
    assert "Plan: 1 to add, 1 to change, 0 to delete." in plans["k8s-guide-worker"]
    # The kernel drops a device's routes with its last IPv4 address: ptp's route must come back too.
    assert (
        f"  + address 10.244.2.1/32 dev {veth} (pod default/web-2-0)" in plans["k8s-guide-worker2"]
    )
    assert f"  + route 10.244.2.2/32 dev {veth} scope host proto 75" in plans["k8s-guide-worker2"]
    assert "Plan: 2 to add, 0 to change, 0 to delete." in plans["k8s-guide-worker2"]

    for node in NODES:
        applied = lab.run("apply", node)
        assert applied.returncode == 0, applied.stderr
    check = lab.run("check")
    assert check.returncode == 0, check.stdout
    nat_after = sh("iptables-save", "-t", "nat", ns=worker)
    portmap = [line for line in nat_before.splitlines() if "CNI-" in line]
    assert portmap and all(line in nat_after for line in portmap), "portmap's rules are not ours"

    down = lab.run("down")
    assert down.returncode == 0
    assert lab.namespaces() == []
    assert not (lab.state / lab.name).exists(), "no file or IPAM state is left"


def test_dual_stack_lab(lab: Lab) -> None:
    up = assert_up_and_clean(lab, "--dual-stack")
    # ~10 s of DAD in the pods, said before it starts
    assert "\n  waiting for IPv6 duplicate address detection in the pods (about 10 s)\n" in up
    check = lab.run("check").stdout
    assert "pass  SNAT k8s-guide-worker pods -> outside 2001:db8:203::10" in check
    assert "pass  hops IPv6 web-0-0 -> web-1-0" in check


@pytest.mark.parametrize("dual", [False, True], ids=["ipv4", "dual-stack"])
def test_two_segments_through_the_tunnel(lab: Lab, dual: bool) -> None:
    """3 + 3 nodes on two subnets joined by a router: every check passes across them, the hops
    to the other segment going through kindplan's VXLAN device, those on the same one direct."""
    up = assert_up_and_clean(
        lab, "--nodes", "6", "--segments", "2", "--cross-subnet", "vxlan",
        *(["--dual-stack"] if dual else []),
    )  # fmt: skip
    assert "on 172.18.0.0/24 and 172.18.1.0/24" in up
    check = lab.run("check").stdout
    assert "node k8s-guide-control-plane via 10.244.1.0 dev kindplan.vxlan4," in check
    assert "node k8s-guide-control-plane via 172.18.0.12," in check
    assert "pass  pod-to-pod IPv4 k8s-guide-control-plane -> k8s-guide-worker (source" in check
    assert "pass  SNAT k8s-guide-worker pods -> outside 203.0.113.10" in check
    if dual:
        assert "pass  pod-to-pod IPv6 k8s-guide-worker -> k8s-guide-worker2 (source" in check
        assert "dev kindplan.vxlan6" in check
    # lab trace: the walk through the tunnel agrees with the kernel at every hop
    trace = lab.run("trace", "web-0-0", "web-1-0")
    assert trace.returncode == 0, trace.stdout + trace.stderr
    assert "same  hop 2 node k8s-guide-control-plane (in on veth" in trace.stdout
    assert "dev kindplan.vxlan4 via 10.244.1.0" in trace.stdout
    assert "same  hop 3 node k8s-guide-worker (in on kindplan.vxlan4)" in trace.stdout
    assert "plan and kernel agree at every hop" in trace.stdout


def test_failed_up_cleans_up_after_itself(lab: Lab) -> None:
    # host-local cannot create its data dir where a file stands: the second node's pods fail.
    blocker = lab.state / lab.name / "nodes" / "k8s-guide-worker" / "ipam"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a folder\n")
    up = lab.run("up")
    assert up.returncode == 1
    assert "error:" in up.stderr and "Traceback" not in up.stderr
    assert lab.namespaces() == []
    assert not (lab.state / lab.name).exists()


def test_lab_refuses_a_second_up_and_unknown_nodes(lab: Lab) -> None:
    assert lab.run("up", "--pods-per-node", "0").returncode == 0
    again = lab.run("up")
    assert again.returncode == 64 and "already exists" in again.stderr
    assert lab.run("plan", "no-such-node").returncode == 64
    exec_ = lab.run("exec", "k8s-guide-worker", "--", "ip", "-4", "-o", "addr", "show", "eth0")
    assert "172.18.0.11/16" in exec_.stdout


def test_rollback_after_a_bad_snapshot_restores_connectivity(lab: Lab) -> None:
    """A snapshot that moves worker2's PodCIDR breaks its pods; rollback on every node heals."""
    assert lab.run("up").returncode == 0
    root = lab.state / lab.name
    moved = root / "moved.json"
    moved.write_text((root / "snapshot.yaml").read_text().replace("10.244.2.0/24", "10.244.7.0/24"))

    def on_every_node(*args: str, moved_snapshot: bool = False) -> None:
        for node in NODES:
            nodes = root / "nodes" / node
            extra = (
                [
                    str(moved),
                    "--node",
                    node,
                    "--conf-dir",
                    str(nodes / "conf"),
                    "--cni-cache-dir",
                    str(nodes / "cache"),
                ]
                if moved_snapshot
                else []
            )
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "kindplan.cli",
                    *args,
                    *extra,
                    "--netns",
                    lab.ns(node),
                    "--state-dir",
                    str(root / "state"),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            assert result.returncode == 0, f"{node}: {result.stderr}"

    on_every_node("apply", moved_snapshot=True)
    broken = lab.run("check")
    assert broken.returncode == 1
    assert "FAIL  pod-to-pod IPv4 k8s-guide-control-plane -> k8s-guide-worker2" in broken.stdout
    on_every_node("rollback")
    healed = lab.run("check")
    assert healed.returncode == 0, healed.stdout
    for node in NODES:
        assert lab.run("plan", node, "--detailed-exitcode").returncode == 0


@pytest.mark.parametrize("up_args", [(), ("--dual-stack",)], ids=["ipv4", "dual-stack"])
def test_take_over_from_kindnetd(lab: Lab, up_args: tuple[str, ...]) -> None:
    """Nodes as classic kindnetd leaves them (its routes with proto boot, a departed node's
    route and a peer's old PodCIDR never deleted); lab apply --adopt takes over, every check
    passes, and nothing of kindnetd's is left in the pod subnets but the pods' own routes."""
    up = lab.run("up", "--kindnetd", *up_args)
    assert up.returncode == 0, up.stderr
    assert "as kindnetd leaves it" in up.stdout
    worker = lab.ns("k8s-guide-worker")
    before = sh("ip", "-n", worker, "route", "show")
    assert "10.244.200.0/24 via 172.18.0.250 dev eth0 \n" in before + "\n"
    assert "10.244.0.0/23 via 172.18.0.10 dev eth0" in before
    check = lab.run("check")
    assert check.returncode == 0, check.stdout  # kindnetd's routes work: nothing to fix there

    plan = lab.run("plan", "k8s-guide-worker").stdout
    assert "stale foreign routes in the pod subnets, of no node (--adopt removes them): " in plan
    assert "10.244.0.0/23 via 172.18.0.10 proto 3" in plan
    assert "10.244.200.0/24 via 172.18.0.250 proto 3" in plan
    assert "correct but not owned by kindplan, --adopt takes them over" in plan
    assert "10.244.0.0/24 (peer k8s-guide-control-plane, proto 3 -> 75)" in plan
    # the pods' host routes that ptp made: --adopt takes them too, and the plan says so first
    assert "10.244.1.2/32 (pod default/web-1-0, proto 3 -> 75)" in plan
    assert "~ file " in plan  # kindnetd's layout of the same conflist: rewritten in kindplan's

    for node in NODES:
        applied = lab.run("apply", node, "--adopt")
        assert applied.returncode == 0, applied.stderr
        said = applied.stdout.splitlines()
        if node == "k8s-guide-worker":  # each line says what it did; a leftover is no deletion
            assert (
                "applied: adopted route 10.244.0.0/24 via 172.18.0.10 dev eth0 proto 75 "
                "(peer k8s-guide-control-plane; was via 172.18.0.10 dev eth0 proto 3)"
            ) in said
            assert any(
                line.startswith("applied: adopted route 10.244.1.2/32 dev veth") for line in said
            ), said
            assert (
                "applied: removed route 10.244.200.0/24 via 172.18.0.250 dev eth0 proto 3 "
                "(foreign, stale: of no node)"
            ) in said
            assert not any("no longer in the snapshot" in line for line in said), said
    check = lab.run("check")
    failed = [line for line in check.stdout.splitlines() if not line.startswith("pass")]
    assert check.returncode == 0, "\n".join(failed)
    assert ", 0 failed" in check.stdout
    for node in NODES:
        plan = lab.run("plan", node, "--detailed-exitcode")
        assert plan.returncode == 0 and plan.stdout == "No changes.\n", plan.stdout + plan.stderr
        gateway_routes = [
            line
            for family in ("-4", "-6")
            for line in sh("ip", "-n", lab.ns(node), family, "route", "show").splitlines()
            if " via " in line and not line.startswith("default")
        ]
        assert gateway_routes and all(" proto 75 " in line for line in gateway_routes), (
            gateway_routes
        )


def test_nftables_lab_masquerades_from_kindplans_table(lab: Lab) -> None:
    """lab up --masq-backend nftables: every check passes (pods reach the outside host with
    their node's address, pod to pod keeps pod addresses), no KIND-MASQ-AGENT anywhere, and
    trace names the nftables rule that decided."""
    assert_up_and_clean(lab, "--dual-stack", "--masq-backend", "nftables")
    worker = lab.ns("k8s-guide-worker")
    assert {"table ip kindplan-masq", "table ip6 kindplan-masq"} <= set(
        sh("nft", "list", "tables", ns=worker).splitlines()
    )
    for tool in ("iptables-save", "ip6tables-save"):
        assert "KIND-MASQ-AGENT" not in sh(tool, "-t", "nat", ns=worker)
    check = lab.run("check").stdout
    assert "pass  SNAT k8s-guide-worker pods -> outside 203.0.113.10, from 172.18.0.11" in check
    assert "pass  pod-to-pod IPv6 k8s-guide-control-plane -> k8s-guide-worker " in check

    snapshot = lab.state / "with-pods.json"
    snapshot.write_text(lab.run("snapshot").stdout)
    walk = subprocess.run(
        [sys.executable, "-m", "kindplan.cli", "trace", str(snapshot), "--from", "web-1-0",
         "--to", "203.0.113.10", "--node", "k8s-guide-worker", "--netns", worker],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert walk.returncode == 0, walk.stderr
    assert (
        "SNAT   kindplan-masq postrouting (destination not local) -> masquerade: "
        "10.244.1.2 -> 172.18.0.11"
    ) in walk.stdout

    # taken away, the check fails where it should, and an apply puts the table back
    sh("nft", "delete", "table", "ip", "kindplan-masq", ns=worker)
    failed = lab.run("check")
    assert failed.returncode == 1
    assert "FAIL  SNAT k8s-guide-worker pods -> outside 203.0.113.10" in failed.stdout
    assert "+ nftables: table ip kindplan-masq (new)" in lab.run("plan", "k8s-guide-worker").stdout
    assert lab.run("apply", "k8s-guide-worker").returncode == 0
    assert lab.run("check").returncode == 0


def test_take_over_from_kindnets_nftables_table(lab: Lab) -> None:
    """Nodes as kindnet >= 1.5 leaves them (its routes, its table inet kindnet-ipmasq, no
    iptables chain): the plan names the table, lab apply --adopt replaces it with kindplan's,
    every check passes, and rollback puts kindnet's table back."""
    up = lab.run("up", "--kindnetd", "--masq-backend", "nftables")
    assert up.returncode == 0, up.stderr
    worker = lab.ns("k8s-guide-worker")
    tables = sh("nft", "list", "tables", ns=worker).splitlines()
    assert "table inet kindnet-ipmasq" in tables and "table ip kindplan-masq" not in tables
    assert "KIND-MASQ-AGENT" not in sh("iptables-save", "-t", "nat", ns=worker)  # portmap's only
    kindnets = sh("nft", "list", "table", "inet", "kindnet-ipmasq", ns=worker)
    assert lab.run("check").returncode == 0  # kindnet's table masquerades as it should
    plan = lab.run("plan", "k8s-guide-worker").stdout
    assert "+ nftables: table ip kindplan-masq (new)" in plan
    assert "kindnet's table inet kindnet-ipmasq masquerades IPv4 and IPv6 too" in plan
    for node in NODES:
        applied = lab.run("apply", node, "--adopt")
        assert applied.returncode == 0, applied.stderr
    assert "applied: removed nftables: table inet kindnet-ipmasq (kindnet's, taken over), IPv4" in (
        applied.stdout
    )
    tables = sh("nft", "list", "tables", ns=worker).splitlines()
    assert "table ip kindplan-masq" in tables and "table inet kindnet-ipmasq" not in tables
    check = lab.run("check")
    assert check.returncode == 0, check.stdout
    for node in NODES:
        assert lab.run("plan", node, "--detailed-exitcode").returncode == 0
    back = subprocess.run(
        [sys.executable, "-m", "kindplan.cli", "rollback", "--netns", worker,
         "--state-dir", str(lab.state / lab.name / "state")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert back.returncode == 0, back.stdout + back.stderr
    assert sh("nft", "list", "table", "inet", "kindnet-ipmasq", ns=worker) == kindnets
