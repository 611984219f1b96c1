"""apply_plan's bookkeeping, with a kernel that answers as a failing socket would (no root)."""

from __future__ import annotations

import errno
from collections.abc import Sequence
from ipaddress import ip_address, ip_network
from typing import Any, cast

from kindplan.core.changes import AddRoute, Change, Plan
from kindplan.core.routes import Route
from kindplan.node.apply import apply_plan
from kindplan.node.kernel import Kernel, KernelError


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
