"""The journal records everything that may have happened: before each batch, until the end.

An apply is stopped half way by a real SIGINT, by an error of the kernel layer, or runs into a
refusal of everything it tried; the journal on disk is checked at every write, and rollback must
then go back exactly one step.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from nodes import KINDPLAN, Node, big_node, kindplan, our_routes
from shell import sh

from kindplan.cli import main
from kindplan.core.changes import Change, SetSysctl
from kindplan.core.model import Options
from kindplan.core.nexthops import Nexthop
from kindplan.core.routes import Route
from kindplan.errors import RuntimeFailure
from kindplan.inputs.files import load_snapshot
from kindplan.node.apply import BATCH
from kindplan.node.engine import apply_planned, make_plan
from kindplan.node.iptables import Iptables, detect_backend
from kindplan.node.journal import Journal
from kindplan.node.kernel import Kernel, KernelError
from kindplan.node.netns import enter_netns
from kindplan.node.ports import NodeHandles

pytestmark = pytest.mark.root


def state_args(node: Node) -> list[str]:
    return ["--netns", node.ns, "--state-dir", str(node.tmp / "state")]


def test_sigint_mid_apply_finishes_the_batch_records_it_and_rollback_goes_back_one_step(
    netns: str, tmp_path: Path
) -> None:
    """The issue's scenario: apply A (4,000 nodes), then B (2,000 peers on new gateways), then
    A again with a SIGINT once its first batch is on its way."""
    node, a, b = big_node(netns, tmp_path)
    assert node.apply(snapshot=a).returncode == 0
    routes_a = our_routes(netns)
    assert node.apply(snapshot=b).returncode == 0
    routes_b = our_routes(netns)
    assert len(set(routes_a) - set(routes_b)) == 2000
    journal = Journal(node.tmp / "state", netns).path
    for _attempt in range(5):
        size = journal.stat().st_size
        proc = subprocess.Popen(
            [*KINDPLAN, "apply", *node.args(a), "--state-dir", str(node.tmp / "state")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        # The first batch's undo is appended just before the batch is sent: interrupt then.
        deadline = time.monotonic() + 60
        while journal.stat().st_size == size and proc.poll() is None:
            assert time.monotonic() < deadline
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
        if proc.returncode == 130:
            break
        assert proc.returncode == 0, stderr  # done before the signal came: try again from B
        assert node.apply(snapshot=b).returncode == 0
    else:
        pytest.fail("the apply always finished before SIGINT came: the machine was too fast")
    assert stderr.count("\n") == 1 and stderr.startswith("error: interrupted"), stderr
    assert "did not finish" in stderr and "kindplan rollback" in stderr
    mid = our_routes(netns)
    back_to_a = len(set(mid) - set(routes_b))
    assert back_to_a == BATCH, "the batch in flight was finished, and no other begun"
    history = kindplan("history", *state_args(node)).stdout.splitlines()
    assert history[-1].endswith("(apply did not finish)") and "restore 1000 routes" in history[-1]
    back = kindplan("rollback", *state_args(node))
    assert back.returncode == 0, back.stderr
    assert our_routes(netns) == routes_b, "exactly one step back: to B"
    assert back.stdout.count("restored: route") == BATCH
    assert kindplan("rollback", *state_args(node)).returncode == 0
    assert our_routes(netns) == routes_a, "and one more: to A"


class Breaking(Kernel):
    """A kernel layer that raises after `sends` batches went out (a socket error, a bug)."""

    def __init__(self, sends: int) -> None:
        super().__init__()
        self.sends = sends
        self.sent: list[list[tuple[str, Route]]] = []

    def write_routes(
        self, writes: Sequence[tuple[str, Route] | tuple[str, Route, bytes]]
    ) -> list[KernelError | None]:
        if len(self.sent) == self.sends:
            super().write_routes(writes[: len(writes) // 2])  # half of it went in
            raise OSError(105, "No buffer space available")
        self.sent.append(list(writes))
        return super().write_routes(writes)


def test_an_error_mid_batch_leaves_every_undo_that_may_be_needed(
    netns: str, tmp_path: Path
) -> None:
    node, a, _ = big_node(netns, tmp_path, count=3000)
    snapshot = load_snapshot(str(a)).snapshot
    state = tmp_path / "state"
    options = Options(node=node.name, conf_dir=str(tmp_path / "cni"))
    with enter_netns(netns):
        kernel = Breaking(sends=1)
        try:
            planned = make_plan(snapshot, options, kernel, Iptables(detect_backend()))
            with pytest.raises(RuntimeFailure) as caught:
                apply_planned(
                    snapshot,
                    options,
                    planned,
                    NodeHandles(kernel, kernel_iptables()),
                    Journal(state, netns),
                )
        finally:
            kernel.close()
    message = str(caught.value)
    assert "OSError" in message and "generation 1 did not finish" in message, message
    (generation,) = Journal(state, netns).load()
    assert not generation.complete
    routes = [c for c in planned.plan.changes if type(c).__name__ == "AddRoute"]
    in_flight = routes[: 2 * BATCH]  # the first batch, and the one that broke half way
    assert set(generation.undo) >= {c.undo() for c in in_flight}
    assert len(our_routes(netns)) == BATCH + BATCH // 2
    back = kindplan("rollback", "--netns", netns, "--state-dir", str(state))
    assert back.returncode == 0, back.stderr
    assert our_routes(netns) == [], "everything that went in, half a batch too, is undone"


def kernel_iptables() -> Iptables:
    return Iptables(detect_backend())


def test_the_cli_says_one_line_for_an_error_mid_apply(
    netns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    node, _, _ = big_node(netns, tmp_path, count=1500)
    write_routes = Kernel.write_routes
    calls = []

    def breaks_on_the_second(
        self: Kernel, writes: Sequence[tuple[str, Route] | tuple[str, Route, bytes]]
    ) -> object:
        calls.append(len(writes))
        if len(calls) == 2:
            raise OSError(105, "No buffer space available")
        return write_routes(self, writes)

    monkeypatch.setattr(Kernel, "write_routes", breaks_on_the_second)
    status = main(["apply", *node.args(), "--state-dir", str(tmp_path / "state")])
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1, err
    assert err.startswith("error: apply stopped by an error (OSError: [Errno 105]")
    assert "generation 1 did not finish" in err


def expected_undo(
    verb: str, route: Route | Nexthop, replaced: dict[Route | Nexthop, Route | Nexthop]
) -> Change:
    from kindplan.core.changes import AddRoute, DelRoute, ReplaceRoute
    from kindplan.core.nexthop_changes import AddNexthop, DelNexthop, ReplaceNexthop

    if isinstance(route, Nexthop):
        if verb == "replace":
            old = replaced[route]
            assert isinstance(old, Nexthop)
            return ReplaceNexthop(old, route)
        return DelNexthop(route) if verb == "add" else AddNexthop(route)
    if verb == "replace":
        old_route = replaced[route]
        assert isinstance(old_route, Route)
        return ReplaceRoute(old_route, route)
    return DelRoute(route) if verb == "add" else AddRoute(route)


class Watching(Kernel):
    """Checks, as each batch is sent, that the journal on disk holds the undo of all of it."""

    def __init__(
        self, journal: Journal, number: int, replaced: dict[Route | Nexthop, Route | Nexthop]
    ) -> None:
        super().__init__()
        self.journal, self.number, self.replaced = journal, number, replaced
        self.checked = 0

    def on_disk(self, undo: set[Change]) -> None:
        generation = self.journal.load()[-1]
        assert (generation.number, generation.complete) == (self.number, False)
        assert undo <= set(generation.undo)
        self.checked += 1

    def write_routes(
        self, writes: Sequence[tuple[str, Route | Nexthop] | tuple[str, Route | Nexthop, bytes]]
    ) -> list[KernelError | None]:
        self.on_disk({expected_undo(w[0], w[1], self.replaced) for w in writes})
        return super().write_routes(writes)

    def set_sysctl(self, name: str, value: str) -> None:
        old = self.read_sysctls((name,))[0].value
        self.on_disk({SetSysctl(name, old, value)})
        super().set_sysctl(name, value)


@pytest.mark.parametrize("style", ["plain", "nexthop"])
def test_the_undo_of_each_batch_is_on_disk_before_it_is_sent(
    netns: str, tmp_path: Path, style: str
) -> None:
    """Routes, and with the nexthop style objects (B moves half of the peers: their objects
    are replaced in place), in the same batches, each batch's undo on disk before it is sent."""
    from kindplan.core.changes import ReplaceRoute
    from kindplan.core.nexthop_changes import ReplaceNexthop

    node, a, b = big_node(netns, tmp_path, count=2500, route_style=style)
    journal = Journal(tmp_path / "state", netns)
    options = Options(node=node.name, conf_dir=str(tmp_path / "cni"))
    for number, path in enumerate((a, b), 1):
        snapshot = load_snapshot(str(path)).snapshot
        with enter_netns(netns):
            kernel = Watching(journal, number, {})
            try:
                planned = make_plan(snapshot, options, kernel, kernel_iptables())
                kernel.replaced = {
                    **{c.route: c.old for c in planned.plan.changes if isinstance(c, ReplaceRoute)},
                    **{
                        c.nexthop: c.old
                        for c in planned.plan.changes
                        if isinstance(c, ReplaceNexthop)
                    },
                }
                if style == "nexthop" and number == 2:
                    assert len(kernel.replaced) == 1250  # the moved peers' objects only
                report = apply_planned(
                    snapshot, options, planned, NodeHandles(kernel, kernel_iptables()), journal
                )
            finally:
                kernel.close()
        assert report.ok and kernel.checked >= 2, kernel.checked
    assert [g.complete for g in journal.load()] == [True, True]


def test_a_round_that_applied_nothing_leaves_the_journal_as_it_was(
    netns: str, tmp_path: Path
) -> None:
    """With a peer that is not on-link, every apply tries its route and the kernel refuses it:
    the journal (one generation of 4,000 routes here) is not written again."""
    node, a, _ = big_node(netns, tmp_path)
    doc = json.loads(a.read_text())
    doc["nodes"][1]["internalIPs"] = ["192.0.2.99"]  # not on the uplink's /15
    a.write_text(json.dumps(doc))
    first = node.apply()
    assert first.returncode == 1 and "192.0.2.99" in first.stderr
    journal = Journal(tmp_path / "state", netns).path
    before, stat, folder = journal.read_bytes(), journal.stat(), journal.parent.stat()
    for _ in range(2):
        again = node.apply()
        assert again.returncode == 1 and "applied:" not in again.stdout
    assert journal.read_bytes() == before and journal.stat().st_ino == stat.st_ino
    # a rewrite renames a new file into the folder (whose mtime then changes; an inode number
    # alone can be reused by the next new file)
    assert journal.parent.stat().st_mtime_ns == folder.st_mtime_ns


_READ = {"x86_64": 0, "aarch64": 63}  # the read system call's number


def test_sigint_before_any_change_changes_nothing(netns: str, tmp_path: Path) -> None:
    """Ctrl-C while the snapshot is still being read: no batch is begun, nothing recorded."""
    import platform

    node, a, _ = big_node(netns, tmp_path)
    proc = subprocess.Popen(
        [*KINDPLAN, "apply", "-", *node.args()[1:], "--state-dir", str(tmp_path / "state")],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    reading = f"{_READ[platform.machine()]} 0x0 "  # blocked in read(0, ...): waiting for stdin
    deadline = time.monotonic() + 30
    while not Path(f"/proc/{proc.pid}/syscall").read_text().startswith(reading):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGINT)
    time.sleep(0.1)
    _, err = proc.communicate(a.read_bytes(), timeout=60)
    stderr = err.decode()
    assert proc.returncode == 130 and stderr.count("\n") == 1, stderr
    assert "nothing was changed" in stderr
    assert our_routes(netns) == []
    assert not Journal(tmp_path / "state", netns).path.exists()


def test_the_loop_with_a_refused_peer_leaves_the_journal_as_it_was(
    netns: str, tmp_path: Path
) -> None:
    """The issue's loop: 4,000 nodes and one peer that is not on-link; every round tries that
    peer's route and the kernel refuses it, and no round rewrites the journal."""
    from watcher import Watcher

    node, a, _ = big_node(netns, tmp_path)
    doc = json.loads(a.read_text())
    doc["nodes"][1]["internalIPs"] = ["192.0.2.99"]
    a.write_text(json.dumps(doc))
    loop = Watcher([*node.args(), "--state-dir", str(tmp_path / "state"), "--interval", "200ms"])
    journal = Journal(tmp_path / "state", netns).path
    try:
        loop.wait_for(r"round 1: applied", timeout=60)
        before, stat, folder = journal.read_bytes(), journal.stat(), journal.parent.stat()
        rounds_before = len(sh("ip", "-n", netns, "route", "show", "proto", "75").splitlines())
        time.sleep(2)  # about ten rounds at a 200 ms interval, each refused the one peer
        # Each round appends the undo of the refused route before sending it, and cuts it off
        # again once the kernel refused: a few hundred bytes, never the 4,000-route generation
        # (a rewrite renames a new file into the folder, which changes the folder's mtime).
        assert journal.read_bytes() == before and journal.stat().st_ino == stat.st_ino
        assert journal.parent.stat().st_mtime_ns == folder.st_mtime_ns
        assert len(our_routes(netns)) == rounds_before
        status, _ = loop.stop()
        assert status == 0
    finally:
        loop.kill()
