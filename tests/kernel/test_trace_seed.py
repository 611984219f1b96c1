"""lab trace on the 3-node seed lab (IPv4): every pod pair, pods to outside, nodes and hostPorts
trace as the kernel routes them; a removed peer route shows the hop where plan and kernel part,
and kindplan trace on that node's observed state shows where the walk breaks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from shell import sh
from tracelab import TraceLab, lab_up

from kindplan.lab.trace import lab_traces

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def seed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TraceLab]:
    with lab_up(tmp_path_factory.mktemp("labs"), "--pods-per-node", "2") as made:
        yield made


def test_every_pod_pair_and_pod_to_outside_trace_as_the_kernel(seed: TraceLab) -> None:
    assert len(seed.lab.pods) == 6
    parted, compared = seed.every_pod_pair_and_outside()
    assert not parted, "\n".join(parted)
    # Per pod, hops + the end: 1 pod on its node (3 + 1), 4 on others (4 + 1), outside (2 + 1).
    assert compared == 6 * (4 + 4 * 5 + 3)


def test_nodes_and_host_ports_trace_as_the_kernel(seed: TraceLab) -> None:
    cases = [
        ("k8s-guide-worker", "web-2-0", 7000),  # a node's own traffic to a pod elsewhere
        ("k8s-guide-control-plane", "web-0-1", 7000),  # to its own pod: from its InternalIP
        ("web-0-0", "k8s-guide-worker2", 8080),  # hostPort on another node: SNAT, then DNAT
        ("web-2-1", "k8s-guide-worker2", 8080),  # hostPort on its own node: portmap masquerades
        ("outside", "k8s-guide-worker", 8080),  # hostPort from outside: the source is kept
        ("outside", "web-1-0", 7000),  # nothing outside routes to a PodCIDR
    ]
    parted = []
    for source, target, port in cases:
        parted += seed.disagreements(source, target, port)[0]
    assert not parted, "\n".join(parted)


def test_udp_traces_as_the_kernel(seed: TraceLab) -> None:
    """The listener is a UDP socket: SNAT to outside as for TCP; the lab's hostPorts are TCP, so
    a datagram to one is not DNATed and arrives at the node itself."""
    cases = [
        ("web-2-0", "web-0-0", 7000),
        ("web-1-1", "outside", 7000),
        ("web-0-0", "k8s-guide-worker2", 8080),
    ]
    parted, ends = [], []
    for source, target, port in cases:
        parted += seed.disagreements(source, target, port, "udp")[0]
        ends += [t.end.at for t in lab_traces(seed.lab, source, target, port, proto="udp")]
    assert not parted, "\n".join(parted)
    assert ends == ["pod default/web-0-0", "node k8s-guide-worker", "node k8s-guide-worker2"]


def test_lab_trace_cli_agrees_and_prints_each_hop(seed: TraceLab) -> None:
    out = seed.run("lab", "trace", "web-2-0", "web-0-0")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == (
        "IPv4 tcp/7000: pod default/web-2-0 -> pod default/web-0-0: "
        "delivered at pod default/web-0-0"
    )
    assert "  same  hop 1 pod default/web-2-0: dev eth0 via 10.244.2.1" in lines
    assert any(
        line.startswith("  same  hop 2 node k8s-guide-worker2 (in on veth")
        and line.endswith("dev eth0 via 172.18.0.10")
        for line in lines
    )
    assert "  same  end (delivered at pod default/web-0-0): delivered, source 10.244.2.2" in lines
    assert lines[-1] == "plan and kernel agree at every hop"


def test_a_removed_peer_route_shows_the_hop_where_plan_and_kernel_part(
    seed: TraceLab, tmp_path: Path
) -> None:
    worker2 = seed.lab.node("k8s-guide-worker2").ns
    sh("ip", "-n", worker2, "route", "del", "10.244.0.0/24", "via", "172.18.0.10", "proto", "75")
    try:
        out = seed.run("lab", "trace", "web-2-0", "web-0-0")
        assert out.returncode == 1, out.stdout + out.stderr
        diffs = [line for line in out.stdout.splitlines() if line.startswith("  DIFF")]
        assert diffs[0].startswith("  DIFF  hop 2 node k8s-guide-worker2 (in on veth")
        assert diffs[0].endswith("plan dev eth0 via 172.18.0.10; kernel dev eth0 via 172.18.0.1")
        # The node's observed state: the walk leaves by the default route where it broke.
        snapshot = seed.snapshot_with_pods(tmp_path / "snapshot.json")
        walk = ("trace", str(snapshot), "--from", "web-2-0", "--to", "web-0-0")
        walk += ("--node", "k8s-guide-worker2", "--netns", worker2)
        walk += ("--node-network", "172.18.0.0/16", "--default-via", "172.18.0.1")
        observed = seed.run(*walk)
        assert observed.returncode == 0, observed.stderr  # without --detailed-exitcode
        detailed = seed.run(*walk, "--detailed-exitcode")
        assert (detailed.returncode, detailed.stdout) == (3, observed.stdout), "3: drift"
        text = observed.stdout
        assert " 2  node k8s-guide-worker2 [observed], in on veth" in text
        assert (
            "      DRIFT  desired: 10.244.0.0/24 via 172.18.0.10 dev eth0 proto 75; "
            "observed: default via 172.18.0.1 dev eth0"
        ) in text
        assert "LEAVES at node k8s-guide-worker2" in text
    finally:
        repaired = seed.run("lab", "apply", "k8s-guide-worker2")
        assert repaired.returncode == 0, repaired.stderr
    assert seed.run("lab", "trace", "web-2-0", "web-0-0").returncode == 0


@pytest.mark.parametrize(
    "args",
    [
        ("lab", "plan", "ghost"),
        ("lab", "apply", "ghost"),
        ("lab", "exec", "ghost", "--", "true"),
        ("lab", "trace", "ghost", "web-0-0"),
        ("lab", "trace", "web-2-0", "ghost"),
    ],
)
def test_a_name_the_lab_has_not_got_is_a_usage_error(seed: TraceLab, args: tuple[str, ...]) -> None:
    """The rule of README "Exit statuses": a name on the command line that the lab (or the
    snapshot) has not got is the command line's mistake, 64, in one line."""
    out = seed.run(*args)
    assert (out.returncode, out.stdout) == (64, ""), out.stderr
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1, out.stderr
    assert "ghost" in out.stderr
