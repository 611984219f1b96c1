"""One reconcile path (engine.reconcile) for a one-shot apply and every round of the watch loop,
against the fakes of tests/fakes.py: both call it, a step given to it (the deletion guard, a saved
plan's check) acts the same in both, and the engine returns values that the command line and the
loop turn into text."""

from __future__ import annotations

import ast
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fakes import FakeClock, FakeNode, seed_worker2

from kindplan.agent import watch
from kindplan.agent.logs import Log
from kindplan.agent.metrics import Health, Metrics
from kindplan.core.changes import DelRoute, Plan
from kindplan.core.guard import DeletionGuard
from kindplan.core.model import Options, Snapshot
from kindplan.core.planview import plan_to_json
from kindplan.errors import RuntimeFailure
from kindplan.inputs.files import FileSource, load_snapshot
from kindplan.node import engine
from kindplan.node.converged import Remember, load_record
from kindplan.node.engine import Reconciled, apply_opened, make_plan, reconcile
from kindplan.node.journal import Journal
from kindplan.node.observe import observed_digest
from kindplan.node.ports import NodeHandles
from kindplan.node.saved import SavedPlan

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "fixtures" / "seed-lab" / "snapshot.yaml"
NODE = "k8s-guide-worker2"
PEERS = {"10.244.0.0/24", "10.244.1.0/24"}


def handles(node: FakeNode) -> NodeHandles:
    return NodeHandles(node.kernel, node.iptables)


def ours(node: FakeNode) -> set[str]:
    return {str(r.dst) for r in node.kernel.routes.values() if r.proto == 75}


def options(tmp_path: Path, name: str) -> Options:
    return Options(node=NODE, conf_dir=str(tmp_path / name))


def without_peers(tmp_path: Path) -> Path:
    """The seed lab as a source that lost every node but this one (and their pods)."""
    doc = yaml.safe_load(SEED.read_text())
    doc["nodes"] = [n for n in doc["nodes"] if n["name"] == NODE]
    doc["pods"] = [p for p in doc["pods"] if p["node"] == NODE]
    path = tmp_path / "without-peers.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def snapshot_of(path: Path) -> Snapshot:
    return load_snapshot(str(path)).snapshot


def loop(tmp_path: Path, source: Path, node: FakeNode, log: io.StringIO) -> Iterator[watch.Loop]:
    files = FileSource(str(source))
    try:
        yield watch.Loop(
            files,
            options(tmp_path, "loop-cni"),
            "kpt-fake",  # never entered: the fake opener stands for the namespace
            tmp_path / "loop-state",
            settings=watch.LoopSettings(),
            telemetry=watch.Telemetry(Log("text", log), Metrics(), Health(60)),
            opener=node,
            clock=FakeClock(),
        )
    finally:
        files.close()


def test_the_one_shot_and_every_round_call_the_one_reconcile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert watch.reconcile is engine.reconcile, "the loop imports the engine's own function"
    called: list[tuple[int, ...]] = []
    real = engine.reconcile

    def spy(*args: Any, **kwargs: Any) -> Reconciled:
        called.append(tuple(map(id, kwargs.get("steps", ()))))
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "reconcile", spy)
    monkeypatch.setattr(watch, "reconcile", spy)
    node = seed_worker2()
    _, report = apply_opened(snapshot_of(SEED), options(tmp_path, "cni"), handles(node))
    assert report is not None and report.ok and called == [()]
    other = seed_worker2()
    for agent in loop(tmp_path, SEED, other, io.StringIO()):
        assert agent.round().ok and agent.round().ok
        assert len(called) == 3, "each round reconciles once"
        assert all(id(agent.hold_back) in steps for steps in called[1:]), "the guard is a step"
    assert ours(node) == ours(other)


def test_a_guard_step_holds_back_the_same_in_the_one_shot_and_the_loop(tmp_path: Path) -> None:
    """Every peer gone from the source: the deletion guard, given as a step, keeps the peers'
    routes in a one-shot apply as in a watch round, and applies nothing else."""
    seed, shrunk = snapshot_of(SEED), without_peers(tmp_path)
    once, looped = seed_worker2(), seed_worker2()
    apply_opened(seed, options(tmp_path, "cni"), handles(once))
    apply_opened(seed, options(tmp_path, "loop-cni"), handles(looped))
    assert ours(once) == ours(looped) >= PEERS
    writes = len(once.kernel.writes), len(looped.kernel.writes)

    step = watch.HoldBack(DeletionGuard(0.5, 3, FakeClock()), 75)
    planned, report = apply_opened(
        snapshot_of(shrunk), options(tmp_path, "cni"), handles(once), steps=(step,)
    )
    assert report is None, "nothing left to apply once the guard held the deletions back"
    assert {type(c) for c in planned.plan.changes} == {DelRoute}
    log = io.StringIO()
    for agent in loop(tmp_path, shrunk, looped, log):
        outcome = agent.round()
        assert outcome.ok and outcome.applied == [] and outcome.held == 2
        assert agent.hold_back.guarded.held == step.guarded.held
        assert "deletion guard: holding back the removal of 2 of 2 peer route(s)" in log.getvalue()
    assert {str(c.route.dst) for c in step.guarded.held if isinstance(c, DelRoute)} == PEERS
    assert ours(once) == ours(looped) >= PEERS, "held back in both"
    assert (len(once.kernel.writes), len(looped.kernel.writes)) == writes


@pytest.mark.parametrize("drift", ["node", "plan"])
def test_a_saved_plan_step_that_refuses_stops_before_any_write(tmp_path: Path, drift: str) -> None:
    """The node changed since the plan was saved, or the plan made now is not the one saved:
    reconcile raises before anything is written or recorded."""
    node, snapshot, opts = seed_worker2(), snapshot_of(SEED), options(tmp_path, "cni")
    planned = make_plan(snapshot, opts, node.kernel, node.iptables)
    json_plan = plan_to_json(planned.plan)
    fingerprint = planned.fingerprint
    if drift == "node":
        node.kernel.sysctls["net.ipv4.ip_forward"] = "1"  # someone changed the node since
    else:
        json_plan = {**json_plan, "node": "reviewed-elsewhere"}
    saved = SavedPlan(fingerprint, opts, None, b"", "", [], json_plan)
    journal = Journal(tmp_path / "state", None)
    with pytest.raises(RuntimeFailure, match="plan again"):
        reconcile(snapshot, opts, handles(node), steps=(saved.check,), journal=journal)
    assert node.kernel.writes == [] and node.iptables.netfilter.restores == []
    assert journal.load() == []
    assert not Path(str(opts.conf_dir)).exists()


def test_a_converged_node_is_remembered_with_the_callers_text_a_held_one_is_not(
    tmp_path: Path,
) -> None:
    """The record keeps what the caller prints for the converged plan (the engine formats
    nothing); a reconcile that held changes back did not converge the node: no record."""
    node, opts = seed_worker2(), options(tmp_path, "cni")
    remember = Remember(tmp_path / "converged.json", "inputs", "", lambda plan: f"{plan.node}\n")
    done = reconcile(snapshot_of(SEED), opts, handles(node), remember=remember)
    assert done.converged and done.report is not None and done.report.ok
    record = load_record(remember.path)
    assert record is not None and record.output == f"{NODE}\n"

    remember.path.unlink()
    step = watch.HoldBack(DeletionGuard(0.5, 3, FakeClock()), 75)
    shrunk = snapshot_of(without_peers(tmp_path))
    held = reconcile(shrunk, opts, handles(node), steps=(step,), remember=remember)
    assert len(held.held) == 2 and held.report is None and not held.converged
    assert not remember.path.exists()


def test_the_record_of_a_convergence_is_the_verifications_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node is read once after an apply (the verification), and the record's digest is that
    reading's: the same digest a fresh reading gives, without reading the node again."""
    node, opts = seed_worker2(), options(tmp_path, "cni")
    remember = Remember(tmp_path / "converged.json", "inputs", "", lambda plan: "")
    reads: list[str] = []
    read_links = node.kernel.read_links
    monkeypatch.setattr(node.kernel, "read_links", lambda: reads.append("links") or read_links())
    done = reconcile(snapshot_of(SEED), opts, handles(node), remember=remember)
    assert done.converged and done.report is not None and done.report.verified is not None
    assert reads == ["links", "links"]  # to plan, to verify: not a third time to record
    record = load_record(remember.path)
    where = engine.observe_where(snapshot_of(SEED), opts)
    assert record is not None
    assert record.observed == observed_digest(node.kernel, node.iptables, where)


def test_a_reading_that_is_no_longer_the_last_dump_is_not_recorded_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the kernel cannot vouch for the verification's dump, the node is read again."""
    node, opts = seed_worker2(), options(tmp_path, "cni")
    remember = Remember(tmp_path / "converged.json", "inputs", "", lambda plan: "")
    monkeypatch.setattr(node.kernel, "dumped_digest", lambda routes: None)
    reads: list[str] = []
    read_links = node.kernel.read_links
    monkeypatch.setattr(node.kernel, "read_links", lambda: reads.append("links") or read_links())
    reconcile(snapshot_of(SEED), opts, handles(node), remember=remember)
    assert reads == ["links", "links", "links"]
    record = load_record(remember.path)
    where = engine.observe_where(snapshot_of(SEED), opts)
    assert record is not None
    assert record.observed == observed_digest(node.kernel, node.iptables, where)


def test_steps_run_in_order_each_seeing_the_plan_the_one_before_left(tmp_path: Path) -> None:
    node = seed_worker2()
    seen: list[int] = []

    def first(planned: engine.Planned) -> Plan:
        seen.append(len(planned.plan.changes))
        return Plan(planned.plan.node, planned.plan.changes[1:])

    def second(planned: engine.Planned) -> Plan:
        seen.append(len(planned.plan.changes))
        return planned.plan

    opts = options(tmp_path, "cni")
    done = reconcile(snapshot_of(SEED), opts, handles(node), steps=(first, second))
    whole = len(done.planned.plan.changes)
    assert seen == [whole, whole - 1]
    assert done.held == done.planned.plan.changes[:1]
    assert done.report is not None and done.held[0] not in done.report.applied


def test_the_engine_imports_no_formatter() -> None:
    """Printing stays in the command line (and the loop's log): the engine returns values."""
    tree = ast.parse((ROOT / "kindplan" / "node" / "engine.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "kindplan.core.planview" not in imported
