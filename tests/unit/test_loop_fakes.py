"""The reconcile loop's rounds against the fakes of tests/fakes.py: what a round writes, logs and
counts when the node is converged, when the kernel or iptables refuses, when another applier holds
the lock, and how the deletion guard waits in time (a fake clock). tests/kernel/test_watch.py
runs the loop as a process against real namespaces."""

from __future__ import annotations

import errno
import io
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from fakes import FakeClock, FakeNode, seed_worker2

from kindplan.agent.logs import Log
from kindplan.agent.metrics import Health, Metrics
from kindplan.agent.watch import Loop, LoopSettings, Telemetry
from kindplan.core.model import Options
from kindplan.inputs.files import FileSource

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "fixtures" / "seed-lab" / "snapshot.yaml"
PEERS = {"10.244.0.0/24", "10.244.1.0/24"}


@dataclass
class Agent:
    loop: Loop
    node: FakeNode
    snapshot: Path
    log: io.StringIO
    metrics: Metrics
    clock: FakeClock

    def rounds(self, result: str) -> float | None:
        return self.metrics.registry.get_sample_value("kindplan_rounds_total", {"result": result})

    def errors(self, kind: str) -> float:
        value = self.metrics.registry.get_sample_value("kindplan_errors_total", {"kind": kind})
        return value or 0.0  # a kind never counted has no sample yet

    def writes(self) -> int:
        return len(self.node.kernel.writes) + len(self.node.iptables.netfilter.restores)

    def ours(self) -> set[str]:
        return {str(r.dst) for r in self.node.kernel.routes.values() if r.proto == 75}


def start(tmp_path: Path, node: FakeNode, **settings: float) -> Iterator[Agent]:
    snapshot = tmp_path / "snapshot.yaml"
    shutil.copy(SEED, snapshot)
    log, metrics, clock = io.StringIO(), Metrics(), FakeClock()
    source = FileSource(str(snapshot))
    loop = Loop(
        source,
        Options(node="k8s-guide-worker2", conf_dir=str(tmp_path / "cni")),
        "kpt-fake",  # never entered: the fake opener stands for the namespace
        tmp_path / "state",
        settings=LoopSettings(**settings),
        telemetry=Telemetry(Log("text", log), metrics, Health(60)),
        opener=node,
        clock=clock,
    )
    try:
        yield Agent(loop, node, snapshot, log, metrics, clock)
    finally:
        source.close()


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    yield from start(tmp_path, seed_worker2())


def test_a_converged_round_makes_no_write(agent: Agent) -> None:
    first = agent.loop.round()
    assert first.ok and first.applied
    said = agent.log.getvalue()
    assert "round 1: applied" in said
    # each change with its action, and the actions counted (a JSON log's field)
    assert "applied 9 change(s): changed sysctl net.ipv4.ip_forward = 1 (was 0); added " in said
    assert " actions=added:" in said
    writes = agent.writes()
    for _ in range(3):
        outcome = agent.loop.round()
        assert outcome.ok and outcome.applied == []
    assert agent.writes() == writes
    assert (agent.rounds("changed"), agent.rounds("converged")) == (1, 3)
    assert agent.node.opened == 4, "the node is opened every round"


def test_a_refused_pod_route_fails_the_round_and_is_tried_again(agent: Agent) -> None:
    agent.node.kernel.refuse["10.244.2.8/32"] = errno.EPERM
    outcome = agent.loop.round()
    assert not outcome.ok and agent.loop.failures == 1
    assert agent.errors("apply") == 1
    assert (
        "10.244.2.8" in agent.log.getvalue() and "Operation not permitted" in agent.log.getvalue()
    )
    del agent.node.kernel.refuse["10.244.2.8/32"]
    outcome = agent.loop.round()
    assert outcome.ok and agent.loop.failures == 0
    assert "10.244.2.8/32" in agent.ours()


def test_a_refused_peer_is_said_once_and_the_round_is_not_a_failure(agent: Agent) -> None:
    agent.node.kernel.refuse["10.244.0.0/24"] = errno.ENETUNREACH
    for _ in range(3):
        assert agent.loop.round().ok
    assert agent.log.getvalue().count("refused: ") == 1
    assert agent.errors("apply") == 0


def test_a_held_node_lock_fails_the_round_and_the_next_one_applies(agent: Agent) -> None:
    agent.node.lock_held = True
    outcome = agent.loop.round()
    assert not outcome.ok and agent.writes() == 0
    assert "another kindplan apply holds the lock" in agent.log.getvalue()
    assert agent.errors("node") == 1
    assert agent.loop.next_delay() <= 1.1, "backs off from 1 s, not the interval"
    agent.node.lock_held = False
    assert agent.loop.round().applied
    assert agent.ours() >= PEERS


def test_a_held_xtables_lock_fails_the_round_until_it_is_released(tmp_path: Path) -> None:
    for agent in start(tmp_path, seed_worker2(backend="legacy")):
        agent.node.iptables.netfilter.lock_held = True
        assert not agent.loop.round().ok
        assert "holding the xtables lock" in agent.log.getvalue()
        agent.node.iptables.netfilter.lock_held = False
        assert agent.loop.round().ok
        assert agent.loop.round().applied == []


def test_a_busy_dump_fails_one_round_only(agent: Agent) -> None:
    agent.node.kernel.busy_dumps = 1
    assert not agent.loop.round().ok
    assert "Device or resource busy" in agent.log.getvalue()
    assert agent.loop.round().ok


def test_the_deletion_guard_waits_for_rounds_and_for_time(tmp_path: Path) -> None:
    for agent in start(tmp_path, seed_worker2(), hold_rounds=3, interval=10):
        assert agent.loop.round().ok
        doc = yaml.safe_load(agent.snapshot.read_text())  # a snapshot that lost every peer
        doc["nodes"] = [n for n in doc["nodes"] if n["name"] == "k8s-guide-worker2"]
        doc["pods"] = [p for p in doc["pods"] if p["node"] == "k8s-guide-worker2"]
        agent.snapshot.write_text(yaml.safe_dump(doc))
        for _ in range(5):  # five quick rounds: asked for long enough in rounds, not in time
            outcome = agent.loop.round()
            assert outcome.held == 2 and agent.ours() >= PEERS
        held = [line for line in agent.log.getvalue().splitlines() if "holding back" in line]
        assert "holding back the removal of 2 of 2 peer route(s)" in held[0]
        assert "(asked 1 time so far)" in held[0], "the guard's count, not the loop's round"
        agent.clock.advance(20)  # (hold_rounds - 1) * interval
        outcome = agent.loop.round()
        assert outcome.held == 0 and agent.ours() == {"10.244.2.8/32", "10.244.2.9/32"}
