"""Faults in the middle of an apply, contention, a hostile environment, and the way back.

Faults are injected through the collaborators that make the changes (a Kernel and an Iptables
that stop after k changes, as a killed process would), never through flags in production code.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from builders import cluster_doc
from nodes import SEED, Node, build_node, edit_snapshot, kindplan, settle
from shell import sh

from kindplan.core.masq.iptables import rule_lines
from kindplan.core.model import Options
from kindplan.core.render import render_conflist
from kindplan.core.routes import Route
from kindplan.inputs.files import load_snapshot
from kindplan.node.engine import apply_planned, make_plan
from kindplan.node.iptables import Iptables, detect_backend
from kindplan.node.journal import Journal
from kindplan.node.kernel import Kernel, KernelError
from kindplan.node.netns import enter_netns
from kindplan.node.ports import NodeHandles

pytestmark = pytest.mark.root


class Killed(BaseException):
    """The applier died: nothing after it runs, not even the journal's finish."""


class Budget:
    def __init__(self, changes: int) -> None:
        self.left = changes

    def spend(self, count: int = 1) -> int:
        """How many of `count` changes may still happen."""
        allowed = min(self.left, count)
        self.left -= allowed
        return allowed


class DyingKernel(Kernel):
    def __init__(self, budget: Budget) -> None:
        super().__init__()
        self.budget = budget

    def write_routes(
        self, writes: Sequence[tuple[str, Route] | tuple[str, Route, bytes]]
    ) -> list[KernelError | None]:
        allowed = self.budget.spend(len(writes))
        results = super().write_routes(writes[:allowed])
        if allowed < len(writes):
            raise Killed
        return results

    def set_sysctl(self, name: str, value: str) -> None:
        if not self.budget.spend():
            raise Killed
        super().set_sysctl(name, value)

    def add_address(self, address) -> None:  # type: ignore[no-untyped-def]
        if not self.budget.spend():
            raise Killed
        super().add_address(address)


class DyingIptables(Iptables):
    def __init__(self, backend: str, budget: Budget) -> None:
        super().__init__(backend)
        object.__setattr__(self, "budget", budget)

    def restore(self, version: int, payload: str) -> None:
        if not self.budget.spend():  # type: ignore[attr-defined]
            raise Killed
        super().restore(version, payload)


def node_state(node: Node) -> dict[str, object]:
    """What the invariants are about: our routes, foreign routes, the nat table, the conflist."""
    routes = node.routes() + node.routes("-6")
    return {
        "ours": sorted(r for r in routes if "proto 75" in r),
        "foreign": sorted(r for r in routes if "proto 75" not in r and "proto kernel" not in r),
        "nat": node.nat(),
        "conflist": node.conflist.read_text() if node.conflist.exists() else None,
    }


def masq_chain(nat: str) -> list[str]:
    return [line for line in nat.splitlines() if line.startswith("-A KIND-MASQ-AGENT")]


@pytest.fixture
def drifted(seed_worker2: Node, tmp_path: Path) -> tuple[Node, Path, dict[str, object]]:
    """A converged node, then a snapshot that changes a bit of everything: a peer leaves, one
    joins, a PodCIDR moves, the MTU and the extra non-masquerade CIDRs change."""
    node = seed_worker2
    assert node.apply().returncode == 0
    sh(
        "ip",
        "-n",
        node.ns,
        "route",
        "add",
        "198.51.100.0/24",
        "via",
        "172.18.0.98",
        "proto",
        "static",
    )
    sh("iptables", "-t", "nat", "-N", "DOCKER", ns=node.ns)
    sh("iptables", "-t", "nat", "-A", "DOCKER", "-i", "docker0", "-j", "RETURN", ns=node.ns)
    # and drift: a veth lost its gateway (and with it its pod route), forwarding went off
    sh("ip", "-n", node.ns, "addr", "del", "10.244.2.1/32", "dev", "veth4b2c9d10")
    sh("sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward", ns=node.ns)
    changed = edit_snapshot(
        SEED,
        tmp_path / "changed.yaml",
        lambda t: (
            t.replace("10.244.0.0/24", "10.244.5.0/24")
            .replace("10.244.0.2", "10.244.5.2")
            .replace(
                'podSubnets: ["10.244.0.0/16"]',
                'podSubnets: ["10.244.0.0/16"]\n  mtu: 1400\n'
                '  nonMasqueradeCIDRs: ["192.0.2.0/24"]',
            )
            .replace(
                "pods:",
                '  - name: k8s-guide-worker3\n    internalIPs: ["172.18.0.13"]\n'
                '    podCIDRs: ["10.244.3.0/24"]\npods:',
            )
        ),
    )
    return node, changed, node_state(node)


def options(node: Node) -> Options:
    return Options(node=node.name, conf_dir=str(node.tmp / "cni"))


def test_killed_after_every_change_then_the_next_apply_converges(
    drifted: tuple[Node, Path, dict[str, object]],
) -> None:
    node, changed, before = drifted
    snapshot = load_snapshot(str(changed)).snapshot
    with enter_netns(node.ns):
        kernel = Kernel()
        planned = make_plan(snapshot, options(node), kernel, Iptables(detect_backend()))
        kernel.close()
    total = len(planned.plan.changes)
    kinds = {type(c).__name__ for c in planned.plan.changes}
    assert kinds == {
        "SetSysctl",
        "AddAddress",
        "AddRoute",
        "WriteMasquerade",
        "DelRoute",
        "WriteConflist",
    }, kinds
    new_conflist = render_conflist(planned.desired)
    new_chain = list(rule_lines(planned.desired.masq[0]))
    converged = 0
    for k in range(total + 1):
        state = node.tmp / f"state-{k}"
        with enter_netns(node.ns):
            budget = Budget(k)
            kernel = DyingKernel(budget)
            iptables = DyingIptables(detect_backend(), budget)
            planned = make_plan(snapshot, options(node), kernel, iptables)
            try:
                apply_planned(
                    snapshot,
                    options(node),
                    planned,
                    NodeHandles(kernel, iptables),
                    Journal(state, node.ns),
                )
            except Killed:
                pass
            finally:
                kernel.close()
        mid = node_state(node)
        # foreign state is untouched, whatever happened
        assert mid["foreign"] == before["foreign"]
        assert [x for x in str(mid["nat"]).splitlines() if "DOCKER" in x] == [
            x for x in str(before["nat"]).splitlines() if "DOCKER" in x
        ]
        # the conflist and the chain are the old or the new one, never a mix
        assert mid["conflist"] in (before["conflist"], new_conflist), k
        assert masq_chain(str(mid["nat"])) in (masq_chain(str(before["nat"])), new_chain), k
        # the next apply converges, verified by an empty residual plan
        result = node.apply(snapshot=changed)
        assert result.returncode == 0, f"k={k}: {result.stderr}"
        if node.plan("--detailed-exitcode", snapshot=changed).returncode == 0:
            converged += 1
        # and the way back works from any point: roll the converging apply back, then re-apply
        assert (
            kindplan(
                "rollback", "--netns", node.ns, "--state-dir", str(node.tmp / "state")
            ).returncode
            == 0
        )
        restore = kindplan("apply", *node.args(SEED), "--state-dir", str(node.tmp / "state"))
        assert restore.returncode == 0, restore.stderr
    assert converged == total + 1
    print(f"\nfault points injected: {total + 1}, converged afterwards: {converged}")


def test_sigkill_in_the_middle_of_a_big_apply(netns: str, tmp_path: Path) -> None:
    """A real SIGKILL while 5,000 routes go in: the next apply converges, rollback works."""
    build_node(netns, ["198.18.0.10/15"], [])
    big = tmp_path / "big.json"
    big.write_text(json.dumps(cluster_doc(5000)))
    node = Node(netns, tmp_path, big, "node-0000")
    args = ["apply", *node.args(), "--state-dir", str(tmp_path / "state")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "kindplan.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # kill it once its routes start to appear
        if sh("ip", "-n", netns, "route", "show", "proto", "75").count("\n") > 10:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    written = sh("ip", "-n", netns, "route", "show", "proto", "75").count("\n")
    assert written < 4999, "killed too late to prove anything; the machine was too fast"
    assert not node.conflist.exists(), "the conflist comes last: not written by a killed apply"
    history = kindplan("history", "--netns", netns, "--state-dir", str(tmp_path / "state"))
    assert "(apply did not finish)" in history.stdout
    again = node.apply()
    assert again.returncode == 0, again.stderr
    assert node.plan("--detailed-exitcode").returncode == 0
    assert sh("ip", "-n", netns, "route", "show", "proto", "75").count("\n") == 4999


def test_rollback_restores_what_was_there(seed_worker2: Node) -> None:
    node = seed_worker2
    state = ["--state-dir", str(node.tmp / "state")]
    # Before kindplan: a kindnetd-style route, forwarding off, an old conflist of someone else.
    sh("ip", "-n", node.ns, "route", "add", "10.244.1.0/24", "via", "172.18.0.77")
    sh("sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward", ns=node.ns)
    node.conflist.parent.mkdir(parents=True)
    node.conflist.write_text('{"name": "old"}\n')
    settle(node.ns)
    before = node_state(node)
    addresses = sh("ip", "-n", node.ns, "-4", "addr")
    assert node.apply("--adopt").returncode == 0
    assert node_state(node) != before
    assert "1  " in kindplan("history", "--netns", node.ns, *state).stdout
    back = kindplan("rollback", "--netns", node.ns, *state)
    assert back.returncode == 0, back.stderr
    assert "verified" in back.stdout
    assert node_state(node) == before
    assert sh("ip", "-n", node.ns, "-4", "addr") == addresses
    assert sh("cat", "/proc/sys/net/ipv4/ip_forward", ns=node.ns).strip() == "0"
    nothing = kindplan("rollback", "--netns", node.ns, *state)
    assert (nothing.returncode, nothing.stderr) == (0, ""), "nothing to do is not an error"
    assert nothing.stdout.startswith("Nothing to roll back: ")


def test_journals_of_different_namespaces_never_mix(make_netns, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    first, second = make_netns(), make_netns()
    for ns in (first, second):
        build_node(ns, ["172.18.0.12/16"], ["vetha1079faf", "veth4b2c9d10"])
    state = tmp_path / "state"
    for ns in (first, second):
        node = Node(ns, tmp_path / ns, SEED, "k8s-guide-worker2")
        assert kindplan("apply", *node.args(), "--state-dir", str(state)).returncode == 0
    assert {p.name for p in state.iterdir() if p.is_dir()} == {f"netns-{first}", f"netns-{second}"}
    assert kindplan("rollback", "--netns", first, "--state-dir", str(state)).returncode == 0
    assert "proto 75" in sh("ip", "-n", second, "route")
    assert "proto 75" not in sh("ip", "-n", first, "route")
