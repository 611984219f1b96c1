"""The engine and apply_plan against the fakes of tests/fakes.py: plan, apply, verify, roll back,
and what a refusal, a lost acknowledgement or a stop does to the report and the journal (no root;
tests/kernel holds the same stories against the real kernel)."""

from __future__ import annotations

import errno
import threading
from collections.abc import Sequence
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import cast

import pytest
from fakes import FakeNode, seed_worker2

from kindplan.core.changes import AddRoute, Change, DelRoute, Plan, RemoveMasquerade, WriteConflist
from kindplan.core.masq.iptables import parse_nat, restore_payload
from kindplan.core.masq.value import wanted
from kindplan.core.model import Options, Snapshot
from kindplan.core.planview import applied_text, describe, plan_to_json
from kindplan.core.routes import Route
from kindplan.errors import Interrupted, RuntimeFailure
from kindplan.inputs.files import load_snapshot
from kindplan.node.apply import BATCH, apply_plan
from kindplan.node.engine import apply_opened, apply_planned, make_plan, rollback_opened
from kindplan.node.journal import Journal
from kindplan.node.kernel import KernelError
from kindplan.node.ports import NodeHandles
from kindplan.node.saved import SavedPlan

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "fixtures" / "seed-lab" / "snapshot.yaml"
PEERS = ("10.244.0.0/24", "10.244.1.0/24")
PODS = ("10.244.2.8/32", "10.244.2.9/32")


@pytest.fixture
def snapshot() -> Snapshot:
    return load_snapshot(str(SEED)).snapshot


@pytest.fixture
def node() -> FakeNode:
    return seed_worker2()


@pytest.fixture
def options(tmp_path: Path) -> Options:
    return Options(node="k8s-guide-worker2", conf_dir=str(tmp_path / "cni"))


def handles(node: FakeNode) -> NodeHandles:
    return NodeHandles(node.kernel, node.iptables)


def ours(node: FakeNode) -> set[str]:
    return {str(r.dst) for r in node.kernel.routes.values() if r.proto == 75}


def plan(snapshot: Snapshot, options: Options, node: FakeNode) -> Plan:
    return make_plan(snapshot, options, node.kernel, node.iptables).plan


def conflist(options: Options) -> Path:
    return Path(str(options.conf_dir), "10-kindnet.conflist")


def test_a_bare_node_is_converged_and_verified_then_left_alone(
    snapshot: Snapshot, options: Options, node: FakeNode
) -> None:
    planned, report = apply_opened(snapshot, options, handles(node))
    assert report is not None and report.ok and report.residue is not None
    assert report.residue.empty, "verified by observing again"
    assert ours(node) == {*PEERS, *PODS}
    assert node.kernel.sysctls["net.ipv4.ip_forward"] == "1"
    assert node.kernel.links["vetha1079faf"].addresses == ((ip_address("10.244.2.1"), 32),)
    saved = parse_nat(4, node.iptables.save_nat(4))
    assert saved.masq is not None and saved.hooks == 1
    assert conflist(options).is_file()
    assert len(report.applied) == len(planned.plan.changes)
    writes, restores = len(node.kernel.writes), len(node.iptables.netfilter.restores)
    _, again = apply_opened(snapshot, options, handles(node))
    assert again is None, "nothing to do"
    assert (len(node.kernel.writes), len(node.iptables.netfilter.restores)) == (writes, restores)


def test_rollback_puts_the_node_back_and_empties_the_journal(
    snapshot: Snapshot, options: Options, node: FakeNode, tmp_path: Path
) -> None:
    journal = Journal(tmp_path / "state", None)
    _, report = apply_opened(snapshot, options, handles(node), journal=journal)
    assert report is not None and report.ok
    assert [g.complete for g in journal.load()] == [True]
    done = rollback_opened(handles(node), journal)
    assert done is not None and done.report.failures == [] and done.residue == ()
    assert ours(node) == set()
    assert node.kernel.sysctls["net.ipv4.ip_forward"] == "0"
    assert node.kernel.links["vetha1079faf"].addresses == ()
    assert parse_nat(4, node.iptables.save_nat(4)).masq is None
    assert not conflist(options).exists()
    assert journal.load() == []
    assert rollback_opened(handles(node), journal) is None, "nothing left to roll back"


def converged_but_routes(snapshot: Snapshot, options: Options, node: FakeNode) -> Plan:
    """A converged node whose routes of kindplan's vanished: the plan is route additions only."""
    apply_opened(snapshot, options, handles(node))
    for key in [k for k, r in node.kernel.routes.items() if r.proto == 75]:
        del node.kernel.routes[key]
    only = plan(snapshot, options, node)
    assert {type(c) for c in only.changes} == {AddRoute}
    return only


def test_a_batch_that_may_have_been_made_keeps_its_generation(
    snapshot: Snapshot, options: Options, node: FakeNode, tmp_path: Path
) -> None:
    """Nothing acknowledged, all of it maybe made: the undo must stay in the journal."""
    converged_but_routes(snapshot, options, node)
    node.kernel.overrun_batches = 1
    journal = Journal(tmp_path / "state", None)
    planned = make_plan(snapshot, options, node.kernel, node.iptables)
    report = apply_planned(snapshot, options, planned, handles(node), journal)
    assert report.applied == [] and len(report.maybe_applied) == len(planned.plan.changes)
    (generation,) = journal.load()
    assert generation.complete
    assert {type(c) for c in generation.undo} == {DelRoute}


def test_a_batch_the_kernel_refused_entirely_leaves_no_generation(
    snapshot: Snapshot, options: Options, node: FakeNode, tmp_path: Path
) -> None:
    converged_but_routes(snapshot, options, node)
    node.kernel.refuse.update(dict.fromkeys((*PEERS, *PODS), errno.EPERM))
    journal = Journal(tmp_path / "state", None)
    planned = make_plan(snapshot, options, node.kernel, node.iptables)
    report = apply_planned(snapshot, options, planned, handles(node), journal)
    assert report.applied == [] and report.maybe_applied == [] and len(report.failures) == 4
    assert journal.load() == []


def test_a_refused_peer_still_lets_the_conflist_go_a_refused_pod_route_does_not(
    snapshot: Snapshot, options: Options, node: FakeNode
) -> None:
    node.kernel.refuse[PEERS[0]] = errno.ENETUNREACH
    _, report = apply_opened(snapshot, options, handles(node))
    assert report is not None
    assert [type(c) for c in report.refused_peers] == [AddRoute]
    assert "Network is unreachable" in report.failures[0]
    assert conflist(options).is_file(), "a peer is the cluster's problem, not this node's"
    other = seed_worker2()
    other.kernel.refuse[PODS[0]] = errno.EPERM
    _, report = apply_opened(snapshot, options_elsewhere(options), handles(other))
    assert report is not None and report.refused_peers == []
    assert any("not written, the changes before it failed" in f for f in report.failures)
    assert not conflist(options_elsewhere(options)).exists()


def options_elsewhere(options: Options) -> Options:
    return Options(node=options.node, conf_dir=f"{options.conf_dir}-2")


def test_a_refused_restore_is_a_failure_and_holds_the_conflist_back(
    snapshot: Snapshot, options: Options, node: FakeNode
) -> None:
    node.iptables.netfilter.refuse = "iptables-restore: line 3 failed"
    _, report = apply_opened(snapshot, options, handles(node))
    assert report is not None and not report.ok
    assert any("line 3 failed" in f for f in report.failures)
    assert ours(node) == {*PEERS, *PODS}, "the routes went in all the same"
    assert not conflist(options).exists()


def test_a_busy_dump_fails_the_plan_with_its_errno(
    snapshot: Snapshot, options: Options, node: FakeNode
) -> None:
    node.kernel.busy_dumps = 1
    with pytest.raises(KernelError) as caught:
        plan(snapshot, options, node)
    assert caught.value.errno == errno.EBUSY
    assert not plan(snapshot, options, node).empty, "the next try reads the node"


def test_a_stop_between_batches_leaves_an_unfinished_generation(
    snapshot: Snapshot, options: Options, node: FakeNode, tmp_path: Path
) -> None:
    journal = Journal(tmp_path / "state", None)
    planned = make_plan(snapshot, options, node.kernel, node.iptables)
    asked = iter((False, False, True))  # a stop request comes after two changes
    with pytest.raises(Interrupted, match="did not finish"):
        apply_planned(snapshot, options, planned, handles(node), journal, stop=lambda: next(asked))
    (generation,) = journal.load()
    assert not generation.complete and len(generation.undo) == 2


def test_a_saved_plan_is_refused_once_the_node_changed(
    snapshot: Snapshot, options: Options, node: FakeNode
) -> None:
    planned = make_plan(snapshot, options, node.kernel, node.iptables)
    saved = SavedPlan(planned.fingerprint, options, None, b"", "", [], plan_to_json(planned.plan))
    node.kernel.sysctls["net.ipv4.ip_forward"] = "1"  # someone changed the node since
    with pytest.raises(RuntimeFailure, match="changed since the plan was made"):
        apply_opened(snapshot, options, handles(node), steps=(saved.check,))
    assert node.kernel.writes == []


# -- apply_plan ----------------------------------------------------------------------------------


def peer_routes(count: int) -> list[Change]:
    gateway = ip_address("172.18.0.11")
    return [
        AddRoute(Route(ip_network(f"10.{64 + i // 256}.{i % 256}.0/24"), "eth0", gateway))
        for i in range(count)
    ]


def test_route_changes_go_in_batches_each_recorded_before_it_is_sent(
    node: FakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    changes = peer_routes(2 * BATCH + 500)
    recorded: list[Sequence[Change]] = []
    sent: list[tuple[int, bool]] = []  # batches recorded by then, and whether this one was last
    write_routes = node.kernel.write_routes

    def sending(writes: Sequence[tuple[str, Route]]) -> list[KernelError | None]:
        last = [w[1] for w in writes] == [cast(AddRoute, c).route for c in recorded[-1]]
        sent.append((len(recorded), last))
        return write_routes(writes)

    monkeypatch.setattr(node.kernel, "write_routes", sending)
    report = apply_plan(
        Plan("n", tuple(changes)), node.kernel, node.iptables, record=recorded.append
    )
    assert node.kernel.batches == [BATCH, BATCH, 500]
    assert sent == [(1, True), (2, True), (3, True)]
    assert report.applied == changes and report.failures == []


def test_the_next_batch_is_recorded_while_one_is_in_flight(
    node: FakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel takes its time in the send; the undo of the next batch is written meanwhile
    (a batch waits here until the next one was recorded: one after the other, it would never)."""
    changes = peer_routes(2 * BATCH)
    recorded: list[Sequence[Change]] = []
    next_recorded = threading.Event()
    write_routes = node.kernel.write_routes

    def slow(writes: Sequence[tuple[str, Route]]) -> list[KernelError | None]:
        if len(recorded) == 1:
            assert next_recorded.wait(timeout=5), "the next batch was not recorded meanwhile"
        return write_routes(writes)

    def record(batch: Sequence[Change]) -> None:
        recorded.append(batch)
        if len(recorded) == 2:
            next_recorded.set()

    monkeypatch.setattr(node.kernel, "write_routes", slow)
    report = apply_plan(Plan("n", tuple(changes)), node.kernel, node.iptables, record=record)
    assert report.applied == changes and node.kernel.batches == [BATCH, BATCH]


def test_an_error_in_a_batch_in_flight_stops_the_apply_in_the_caller(
    node: FakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception the worker thread meets is raised by apply_plan, once, after the batch."""

    def broken(writes: Sequence[tuple[str, Route]]) -> list[KernelError | None]:
        raise RuntimeFailure("the socket is gone")

    monkeypatch.setattr(node.kernel, "write_routes", broken)
    with pytest.raises(RuntimeFailure, match="the socket is gone"):
        apply_plan(Plan("n", tuple(peer_routes(3))), node.kernel, node.iptables)


def test_a_refusal_inside_a_batch_does_not_stop_the_others(node: FakeNode) -> None:
    changes = peer_routes(5)
    node.kernel.refuse["10.64.2.0/24"] = errno.EEXIST
    report = apply_plan(Plan("n", tuple(changes)), node.kernel, node.iptables)
    assert report.applied == changes[:2] + changes[3:]
    assert report.refused_peers == [changes[2]]
    assert report.failures == [f"{describe(changes[2])}: File exists"]
    # the applied lines, written while the batch was in flight: those of the changes made
    assert report.applied_texts == [applied_text(c) for c in report.applied]


def test_a_chain_in_the_backend_no_longer_used_is_removed_there_only(node: FakeNode) -> None:
    chain = wanted(4, (ip_network("10.244.0.0/16"),))
    legacy = node.iptables.for_backend("legacy")
    for tool in (legacy, node.iptables):
        tool.restore(4, restore_payload(chain))
    remove = RemoveMasquerade(4, chain, 1, variant="legacy")
    report = apply_plan(Plan("n", (remove,)), node.kernel, node.iptables)
    assert report.failures == []
    assert report.applied_texts == [applied_text(remove)]
    assert parse_nat(4, legacy.save_nat(4)).masq is None
    assert parse_nat(4, node.iptables.save_nat(4)).masq == chain


def test_a_conflist_someone_edited_since_the_plan_is_left_alone(
    node: FakeNode, tmp_path: Path
) -> None:
    path = tmp_path / "10-kindnet.conflist"
    path.write_text("someone's\n")
    write = WriteConflist(str(path), "kindplan's\n", None)  # planned when there was none
    report = apply_plan(Plan("n", (write,)), node.kernel, node.iptables)
    assert report.applied == [] and "changed since it was observed" in report.failures[0]
    assert path.read_text() == "someone's\n"
