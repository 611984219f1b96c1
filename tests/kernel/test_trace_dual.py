"""lab trace on the dual-stack lab: every pod pair and every pod to the outside host, in both
families, nodes to pods and hostPorts, trace as the kernel routes them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tracelab import TraceLab, lab_up

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def dual(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TraceLab]:
    with lab_up(tmp_path_factory.mktemp("labs"), "--pods-per-node", "2", "--dual-stack") as made:
        yield made


def test_every_pod_pair_and_pod_to_outside_trace_as_the_kernel(dual: TraceLab) -> None:
    parted, compared = dual.every_pod_pair_and_outside()
    assert not parted, "\n".join(parted)
    assert compared == 2 * 6 * (4 + 4 * 5 + 3)  # both families of the seed lab's walk


def test_nodes_and_host_ports_trace_as_the_kernel_in_both_families(dual: TraceLab) -> None:
    cases = [
        ("k8s-guide-worker", "web-2-0", 7000),
        ("web-0-0", "k8s-guide-worker2", 8080),
        ("web-2-1", "k8s-guide-worker2", 8080),
        ("outside", "k8s-guide-control-plane", 8080),
        ("web-1-1", "k8s-guide-control-plane", 7000),  # a node's address: masqueraded
    ]
    parted, compared = [], 0
    for source, target, port in cases:
        more, count = dual.disagreements(source, target, port)
        parted += more
        compared += count
    assert not parted, "\n".join(parted)
    assert compared > 2 * len(cases) * 2


def test_lab_trace_cli_one_family(dual: TraceLab) -> None:
    out = dual.run("lab", "trace", "web-1-0", "outside", "--family", "6")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines()[0] == (
        "IPv6 tcp/7000: pod default/web-1-0 -> outside: leaves at node k8s-guide-worker"
    )
    assert "  same  end (leaves at node k8s-guide-worker): leaves, source " in out.stdout
    assert "IPv4" not in out.stdout
