"""The README's console examples that need root, run as they are written (tests/docexamples.py).

Each test builds what the example's text describes (the seed node k8s-guide-worker2 in a
namespace, or a lab), runs the example's commands with bash, under the test's own names for the
namespace, the folders and the lab, and compares what they print with the example, line by line.
tests/unit/test_docs.py shows that every example needing root is named here.
"""

from __future__ import annotations

import re
import shlex
import shutil
import socket
from collections.abc import Iterator, Mapping
from contextlib import chdir
from pathlib import Path

import pytest
from docexamples import Step, assert_prints, example, shell
from nodes import SEED, Node
from shell import sh
from tracelab import TraceLab, lab_up
from watcher import Watcher

pytestmark = pytest.mark.root


class Names:
    """The example's names (`kp-w2`, `/tmp/cni`, the lab `kp`) and the test's for them."""

    def __init__(self, cwd: Path, ours: Mapping[str, str], lab: TraceLab | None = None) -> None:
        self.cwd, self.ours, self.lab = cwd, dict(ours), lab

    def command(self, step: Step) -> str:
        command = step.command
        for shown, real in self.ours.items():
            command = command.replace(shown, real)
        if self.lab is not None:  # the lab's options go right after `kindplan lab COMMAND`
            options = f"--name {self.lab.name} --state-dir {self.lab.state}"
            command = re.sub(r"\bkindplan lab (\w+)", rf"kindplan lab \1 {options}", command)
            command = re.sub(r"\bkp-(n\d)", rf"{self.lab.name}-\1", command)
        return command

    def shown(self) -> dict[str, str]:
        shown = {real: name for name, real in self.ours.items()}
        if self.lab is not None:
            shown |= {str(self.lab.state): "/run/kindplan-lab", self.lab.name: "kp"}
        return shown

    def check(self, step: Step) -> None:
        assert_prints(step, shell(self.command(step), self.cwd), self.shown())


def on_node(node: Node) -> Names:
    """The seed node as the README's "Run it on a node" describes it."""
    shutil.copy(SEED, node.tmp / "cluster.yaml")
    return Names(
        node.tmp,
        {"kp-w2": node.ns, "/tmp/cni": f"{node.tmp}/cni", "/tmp/state": f"{node.tmp}/state"},
    )


def test_apply_show_and_a_drifted_plan(seed_worker2: Node) -> None:
    node, names = seed_worker2, on_node(seed_worker2)
    for step in example("kindplan apply cluster.yaml").steps:
        names.check(step)
    (show,) = example("kindplan show --netns kp-w2").steps
    names.check(show)
    # the drift the example names: a peer route deleted, a stale route of kindplan's, the MTU
    # edited, the RETURN rule deleted
    sh("ip", "-n", node.ns, "route", "del", "10.244.0.0/24")
    sh("ip", "-n", node.ns, "route", "add", "10.244.9.0/24", "via", "172.18.0.99", "proto", "75")
    node.conflist.write_text(node.conflist.read_text().replace('"mtu": 1500', '"mtu": 1450'))
    sh("iptables", "-t", "nat", "-D", "KIND-MASQ-AGENT", "1", ns=node.ns)
    (plan,) = example("kindplan plan cluster.yaml").steps
    names.check(plan)


def test_history_and_rollback_after_an_adopting_apply(seed_worker2: Node) -> None:
    node, names = seed_worker2, on_node(seed_worker2)
    sh("ip", "-n", node.ns, "route", "add", "10.244.1.0/24", "via", "172.18.0.77")  # kindnetd's
    sh("sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward", ns=node.ns)
    applied = node.apply("--adopt")
    assert applied.returncode == 0, applied.stderr
    for step in example("kindplan history --netns kp-w2").steps:
        names.check(step)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_the_watch_log_of_a_node_added(seed_worker2: Node) -> None:
    """A long-running command: its first lines, as many as the example shows."""
    names = on_node(seed_worker2)
    (step,) = example("kindplan apply --watch cluster.yaml").steps
    names.ours[":9177"] = f"127.0.0.1:{_free_port()}"  # the example's port may be taken here
    args = shlex.split(names.command(step))
    assert args[:3] == ["kindplan", "apply", "--watch"]
    with chdir(names.cwd):  # the log names the source as it was given
        loop = Watcher(args[3:])
    try:
        loop.wait_for(r"round 1: ")
        snapshot = names.cwd / "cluster.yaml"
        snapshot.write_text(
            snapshot.read_text().replace(
                "pods:",
                '  - name: extra\n    internalIPs: ["172.18.0.20"]\n'
                '    podCIDRs: ["10.244.9.0/24"]\npods:',
            )
        )
        loop.wait_for(r"round 2: ")
    finally:
        loop.stop()
        loop.kill()  # closes its pipes
    printed = "".join(f"{line}\n" for line in loop.lines[: len(step.output)])
    assert_prints(step, printed, names.shown())


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[TraceLab]:
    with lab_up(tmp_path / "labs") as made:
        yield made


def test_the_lab_breaks_and_is_repaired(lab: TraceLab, tmp_path: Path) -> None:
    names = Names(tmp_path, {}, lab)
    for step in example("kindplan lab exec k8s-guide-control-plane").steps:
        names.check(step)


def test_lab_trace_and_trace_of_a_node_where_the_walk_breaks(lab: TraceLab, tmp_path: Path) -> None:
    lab.snapshot_with_pods(tmp_path / "lab-with-pods.json")
    names = Names(tmp_path, {}, lab)
    for step in example("kindplan lab trace web-2-0 web-0-0").steps:
        names.check(step)


def test_a_cross_subnet_node_in_the_two_segment_lab(tmp_path: Path) -> None:
    up = ("--nodes", "4", "--segments", "2", "--cross-subnet", "vxlan")
    with lab_up(tmp_path / "labs", *up) as made:
        names = Names(tmp_path, {}, made)
        for step in example("kindplan lab exec k8s-guide-worker -- ip route show").steps:
            names.check(step)


def test_taking_over_from_kindnetd(tmp_path: Path) -> None:
    with lab_up(tmp_path / "labs", "--kindnetd") as made:
        names = Names(tmp_path, {}, made)
        for step in example("kindplan lab plan k8s-guide-worker").steps:
            names.check(step)


def test_the_nftables_backend_and_the_switch_back(seed_worker2: Node) -> None:
    names = on_node(seed_worker2)
    for step in example("kindplan apply --masq-backend nftables cluster.yaml").steps:
        names.check(step)
