"""apply_plan's bookkeeping, with a kernel that answers as a failing socket would, and the one
retry of the verifications (no root)."""

from __future__ import annotations

import errno
from collections.abc import Callable, Sequence
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any, cast

import pytest
from fakes import seed_worker2

from kindplan.core.changes import AddRoute, Change, Plan
from kindplan.core.model import Options
from kindplan.core.routes import Route
from kindplan.inputs.files import load_snapshot
from kindplan.node import apply, engine
from kindplan.node.apply import apply_plan
from kindplan.node.journal import Journal
from kindplan.node.kernel import Kernel, KernelError
from kindplan.node.ports import NodeHandles

SEED = Path(__file__).resolve().parents[2] / "fixtures" / "seed-lab" / "snapshot.yaml"


class SilentSocketKernel:
    """Every route write was sent and never acknowledged (the socket failed under it)."""

    def write_routes(self, writes: Sequence[tuple[str, Route]]) -> list[KernelError | None]:
        return [
            KernelError("no answer", errno.ENOBUFS, maybe_applied=True)
            if i % 2
            else KernelError("refused", errno.ENETUNREACH)
            for i, _ in enumerate(writes)
        ]


def test_writes_that_may_have_happened_are_kept_apart_from_refusals() -> None:
    """Their undo must stay in the journal: the engine keeps a generation whose report holds
    any change that may have been made, not only the acknowledged ones."""
    changes: list[Change] = [
        AddRoute(Route(ip_network(f"10.244.{i}.0/24"), "eth0", ip_address("172.18.0.10")))
        for i in range(4)
    ]
    recorded: list[Sequence[Change]] = []
    report = apply_plan(
        Plan("n", tuple(changes), (), ()),
        cast(Kernel, SilentSocketKernel()),
        cast(Any, None),
        record=recorded.append,
    )
    assert report.applied == []
    assert report.maybe_applied == [changes[1], changes[3]]
    assert len(report.failures) == 4
    assert [list(batch) for batch in recorded] == [changes], "the undo went down before the batch"


def test_settle_looks_until_done_and_at_most_three_times(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(apply.time, "sleep", slept.append)
    left = iter([3, 2, 1, 0])
    assert apply.settle(lambda: next(left), lambda n: n == 0) == 1, "the third answer stands"
    assert slept == [0.1, 0.2], "no wait after the last look"
    slept.clear()
    left = iter([3, 0, 9])
    assert apply.settle(lambda: next(left), lambda n: n == 0) == 0
    assert slept == [0.1]


def test_verify_and_rollback_both_settle(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The verification after an apply and the one after a rollback share the one retry."""
    settled: list[object] = []

    def spy(observe: Callable[[], Any], done: Callable[[Any], bool], attempts: int = 3) -> Any:
        result = observe()
        settled.append(result)
        return result

    monkeypatch.setattr(apply, "settle", spy)
    monkeypatch.setattr(engine, "settle", spy)
    node, journal = seed_worker2(), Journal(tmp_path / "state", None)
    snapshot = load_snapshot(str(SEED)).snapshot
    options = Options(node="k8s-guide-worker2", conf_dir=str(tmp_path / "cni"))
    _, report = engine.apply_opened(snapshot, options, NodeHandles(node.kernel, node.iptables),
                                    journal=journal)  # fmt: skip
    assert report is not None and report.ok and settled == [report.residue]
    done = engine.rollback_opened(NodeHandles(node.kernel, node.iptables), journal)
    assert done is not None and settled[1:] == [()] and done.residue == ()
