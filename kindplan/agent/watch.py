"""The reconcile loop (`apply --watch`): keep one node converged on what its source says.

Each round reads the source, observes the node, diffs and applies only the difference, through
the same engine.reconcile as a one-shot apply (given the deletion guard as a step). Between rounds
it sleeps for the interval (with jitter, so a DaemonSet's pods do not hit the API server in step),
wakes at once when the source changes, and backs off exponentially while rounds fail. What it
never does: act on a snapshot that failed its checks (the last good one stays in force), or obey a
source that suddenly drops most of the routes kindplan owns (guard.py). SIGTERM and SIGINT end it
after the round in progress, SIGHUP re-reads the source.
"""

from __future__ import annotations

import random
import selectors
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from kindplan.agent.logs import Log
from kindplan.agent.metrics import Health, Metrics
from kindplan.core.changes import Change, Plan
from kindplan.core.guard import DeletionGuard, Guarded, owned_routes_delta
from kindplan.core.model import Options
from kindplan.core.planview import action_word, applied_text, describe, route_text
from kindplan.core.routes import owned_routes
from kindplan.core.snapshot import Loaded
from kindplan.errors import InvalidInputError, KindplanError, SourceError
from kindplan.inputs.sources import Source, freeze_heap
from kindplan.node.engine import Memo, Planned, conflist_left_alone, reconcile
from kindplan.node.journal import Journal
from kindplan.node.opener import KeptHandles, open_node
from kindplan.node.ports import NodeOpener

DEBOUNCE_SECONDS = 0.02  # a burst of file events (write, rename) makes one round
MIN_EVENT_GAP_SECONDS = 0.25
FIRST_BACKOFF_SECONDS = 1.0
SHOWN_CHANGES = 3  # changes named in a round's log line; the rest are counted


@dataclass(frozen=True, slots=True)
class LoopSettings:
    interval: float = 10.0
    jitter: float = 0.1  # +- this fraction of the interval
    backoff_max: float = 60.0
    max_delete_fraction: float = 0.5
    hold_rounds: int = 3
    lock_timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class Telemetry:
    """Where the loop tells what it does: its log, its metrics, its health for /healthz."""

    log: Log
    metrics: Metrics
    health: Health


@dataclass
class RoundOutcome:
    ok: bool
    applied: list[Change] = field(default_factory=list)
    held: int = 0


def next_delay(
    settings: LoopSettings, failures: int, uniform: Callable[[float, float], float]
) -> float:
    """Seconds until the next round: the interval, or 1 s, 2 s, 4 s... up to backoff_max after
    failures; either way +- jitter, so that a DaemonSet's pods do not act in step."""
    base = settings.interval
    if failures:
        first = min(FIRST_BACKOFF_SECONDS, settings.interval)
        base = min(settings.backoff_max, first * 2.0 ** min(failures - 1, 30))
    return base * uniform(1 - settings.jitter, 1 + settings.jitter)


class HoldBack:
    """The deletion guard (core/guard.py) as a step of engine.reconcile: the plan without the
    removals it holds back this round. Its verdict is kept for the round's log line and gauge."""

    def __init__(self, guard: DeletionGuard, route_proto: int) -> None:
        self.guard = guard
        self.route_proto = route_proto
        self.guarded = Guarded(Plan("", ()), (), 0)

    def __call__(self, planned: Planned) -> Plan:
        self.guarded = self.guard.check(planned.plan, planned.observed, self.route_proto)
        return self.guarded.plan


def change_kind(change: Change) -> str:
    """AddRoute -> add_route: the label of kindplan_changes_applied_total."""
    name = type(change).__name__
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


class Signals:
    """SIGTERM/SIGINT ask to stop after the round, SIGHUP to reload; all wake the wait.

    Installed first thing (before the API source's first list and the metrics server), so a
    SIGTERM at any time ends the loop with 0 and a SIGHUP never kills it.
    """

    def __init__(self) -> None:
        self.stop: str | None = None
        self.reload = False
        self.reader, writer = socket.socketpair()
        self._writer = writer
        for end in (self.reader, writer):
            end.setblocking(False)
        self._old_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        self._old = {
            sig: signal.signal(sig, self._handle)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        }

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self.reload = True
        else:
            self.stop = signal.Signals(signum).name

    def drain(self) -> None:
        try:
            while self.reader.recv(4096):
                pass
        except BlockingIOError:
            pass

    def restore(self) -> None:
        if self.reader.fileno() < 0:  # restored already
            return
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(self._old_fd)
        self.reader.close()
        self._writer.close()


class Loop:
    """One node's reconcile loop; `run()` returns the exit status (0 after SIGTERM/SIGINT)."""

    def __init__(
        self,
        source: Source,
        options: Options,
        netns: str | None,
        state_dir: Path,
        *,
        settings: LoopSettings,
        telemetry: Telemetry,
        opener: NodeOpener = open_node,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`opener` reaches the node (tests: fakes), `clock` times the deletion guard."""
        self.source = source
        self.options = options
        self.netns = netns
        self.settings = settings
        self.log = telemetry.log
        self.metrics = telemetry.metrics
        self.health = telemetry.health
        self.guard = DeletionGuard(
            settings.max_delete_fraction,
            settings.hold_rounds,
            clock,
            min_seconds=(settings.hold_rounds - 1) * settings.interval,
        )
        self.hold_back = HoldBack(self.guard, options.route_proto)
        self.journal = Journal(state_dir, netns)
        self.opener = opener
        self.loaded: Loaded | None = None  # the last good snapshot
        self.rounds = 0
        self.failures = 0  # consecutive failed rounds, for the backoff
        self.memo = Memo()  # pure results of the last round, reused while inputs are equal
        # Kept across rounds (sockets, the backend found); dropped after any failure.
        self._handles = KeptHandles()
        self._signals: Signals | None = None
        self._selector: selectors.BaseSelector | None = None
        self._round_ended = 0.0
        self._said: dict[str, object] = {}  # what was last logged per topic, to stay quiet
        self._left_alone: str | None = None  # this round's unreadable conflist, named

    def run(self, signals: Signals | None = None, max_rounds: int | None = None) -> int:
        signals = signals or Signals()
        self._signals = signals
        # Made once, before the first round: a wait never needs a free descriptor, so clients of
        # the metrics endpoint (or anything else) using them up cannot end the loop.
        self._selector = selectors.DefaultSelector()
        try:
            self.log.info(
                "watching",
                node=self.options.node,
                source=self.source.name,
                interval=self.settings.interval,
            )
            while signals.stop is None:
                if signals.reload:
                    signals.reload = False
                    self.source.reload()
                    self._handles.drop()
                    self.log.info("reload: reading the source again")
                self.round()
                if signals.stop is not None or self.rounds == max_rounds:
                    break
                self._wait(self.next_delay(), signals)
        finally:
            self._selector.close()
            signals.restore()
            self._handles.drop()
        self.log.info("stopped", signal=signals.stop or "none", rounds=self.rounds)
        return 0

    def next_delay(self) -> float:
        return next_delay(self.settings, self.failures, random.uniform)

    def _wait(self, delay: float, signals: Signals) -> None:
        """Sleep up to `delay` seconds; return early when the source changes or a signal comes."""
        deadline = time.monotonic() + delay
        selector = self._selector
        assert selector is not None
        selector.register(signals.reader, selectors.EVENT_READ, "signal")
        fd = self.source.fileno()
        if fd is not None:
            selector.register(fd, selectors.EVENT_READ, "source")
        try:
            while (left := deadline - time.monotonic()) > 0:
                for key, _ in selector.select(left):
                    if key.data == "signal":
                        signals.drain()
                    else:
                        # A burst of events makes one round, and at most a few rounds a second
                        # (pods flapping on the node, a file rewritten in a loop).
                        gap = self._round_ended + MIN_EVENT_GAP_SECONDS - time.monotonic()
                        time.sleep(max(DEBOUNCE_SECONDS, gap))
                        if self.source.poll():
                            return
                if signals.stop is not None or signals.reload:
                    return
        finally:
            for fileobj in list(selector.get_map().values()):
                selector.unregister(fileobj.fileobj)

    def round(self) -> RoundOutcome:
        """Read, observe, diff, apply; metrics and one log line if anything happened."""
        started = time.perf_counter()
        self.rounds += 1
        outcome = RoundOutcome(ok=False)
        try:
            source_ok = self._read_source()
            if self.loaded is not None:
                self._left_alone = None
                outcome = self._reconcile(self.loaded)
                if self._left_alone is not None:  # the rest of the round went in; not healthy
                    self.metrics.errors.labels("conflist").inc()
                    outcome.ok = False
                self._say_once(
                    "conflist",
                    () if self._left_alone is None else (self._left_alone,),
                    lambda line: self.log.error(f"round {self.rounds}: {line}", kind="conflist"),
                )
        except Exception as e:  # a bug must not end the agent: report it, back off, go on
            source_ok = False
            self.metrics.errors.labels("internal").inc()
            self.log.error(f"round {self.rounds}: internal error: {e!r}", kind="internal")
            self._handles.drop()
        self._round_ended = time.monotonic()
        ok = outcome.ok and source_ok
        elapsed = time.perf_counter() - started
        m = self.metrics
        m.round_duration.observe(elapsed)
        m.rounds.labels("failed" if not ok else "changed" if outcome.applied else "converged").inc()
        if ok:
            self.failures = 0
            m.last_success.set(time.time())
            self.health.succeeded()
        else:
            self.failures += 1
        if outcome.applied:
            kinds = Counter(change_kind(c) for c in outcome.applied)
            for kind, n in kinds.items():
                m.changes.labels(kind).inc(n)
            shown = [applied_text(c) for c in outcome.applied[:SHOWN_CHANGES]]
            more = len(outcome.applied) - len(shown)
            self.log.info(
                f"round {self.rounds}: applied {len(outcome.applied)} change(s): "
                + "; ".join(shown)
                + (f"; and {more} more" if more > 0 else ""),
                round=self.rounds,
                changes=dict(sorted(kinds.items())),
                actions=dict(sorted(Counter(map(action_word, outcome.applied)).items())),
                held_back=outcome.held,
                duration_ms=round(elapsed * 1000, 1),
            )
        return outcome

    def _read_source(self) -> bool:
        """Take the source's snapshot if it is good; keep the last good one if not."""
        try:
            loaded = self.source.read()
        except (InvalidInputError, SourceError) as e:
            kind = "invalid_snapshot" if isinstance(e, InvalidInputError) else "source"
            self.metrics.errors.labels(kind).inc()
            problems = (
                [str(p) for p in e.problems] if isinstance(e, InvalidInputError) else [str(e)]
            )
            keeping = "keeping the last good snapshot" if self.loaded else "nothing applied yet"
            first = problems[0]  # a SourceError names its source; a problem may not
            if kind == "invalid_snapshot" and not first.startswith(self.source.name):
                first = f"{self.source.name}: {first}"
            self.log.error(
                first
                + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
                + f"; {keeping}",
                kind=kind,
                **({"problems": problems[:20]} if len(problems) > 1 else {}),
            )
            return False
        if loaded is not self.loaded:
            self.loaded = loaded
            freeze_heap()
            self.metrics.nodes.set(len(loaded.snapshot.nodes))
            for problem in loaded.warnings:
                self.log.warning(f"{self.source.name}: {problem}")
        return True

    def _reconcile(self, loaded: Loaded) -> RoundOutcome:
        snapshot = loaded.snapshot
        signals = self._signals
        try:
            # The namespace is entered per round: one deleted (or made again under its name)
            # while the loop runs is then an error, or is picked up, instead of an orphan
            # kept alive by this thread.
            with self.opener(
                self.netns,
                self.settings.lock_timeout,
                cancelled=lambda: signals is not None and signals.stop is not None,
                kept=self._handles,
            ) as node:
                done = reconcile(
                    snapshot,
                    self.options,
                    node,
                    steps=(self.hold_back, self._say_planned),
                    memo=self.memo,
                    journal=self.journal,
                )
        except KindplanError as e:
            self.metrics.errors.labels("node").inc()
            self.log.error(f"round {self.rounds}: {e}", kind="node")
            self._handles.drop()
            return RoundOutcome(ok=False)
        planned, report, held = done.planned, done.report, len(done.held)
        applied = report.applied if report else []
        proto = self.options.route_proto
        self.guard.applied(applied)
        owned = len(owned_routes(planned.observed.routes, proto))
        self.metrics.owned_routes.set(owned + owned_routes_delta(applied, proto))
        pending = held + len(planned.plan.conflicts)
        if report is None or report.ok:
            self.metrics.pending.set(pending)
            return RoundOutcome(True, applied, held)
        residue = report.residue.changes if report.residue is not None else ()
        refused = report.refused_peers
        self.metrics.pending.set(pending + (len(residue) if residue else len(report.failures)))
        if len(refused) == len(report.failures) and set(residue) <= set(refused):
            # Only peers the kernel refuses (an InternalIP not on-link): the cluster's problem,
            # said once; the round is not a failure, or one odd node would fail every node.
            self._say_once(
                "refused", tuple(report.failures), lambda line: self.log.warning(f"refused: {line}")
            )
            return RoundOutcome(True, applied, held)
        self.metrics.errors.labels("apply").inc()
        for failure in report.failures:
            self.log.error(f"round {self.rounds}: {failure}", kind="apply")
        if residue:
            self.log.error(
                f"round {self.rounds}: still different after apply: "
                + "; ".join(describe(c) for c in residue[:SHOWN_CHANGES]),
                kind="verify",
            )
        self._handles.drop()
        return RoundOutcome(False, applied, held)

    def _say_planned(self, planned: Planned) -> Plan:
        """The round's last step before it applies: what it found is said first (so an apply that
        stops half way has said it); the plan goes on as it is."""
        self._left_alone = conflist_left_alone(planned.observed)
        guarded = self.hold_back.guarded
        self._say_once("warnings", planned.plan.warnings, self.log.warning)
        self._say_once(
            "conflicts",
            tuple(
                f"conflict: route {route_text(c.observed)} is foreign and stands where "
                f"{route_text(c.desired)} should be; left alone (--adopt takes it over)"
                for c in planned.plan.conflicts
            ),
            self.log.warning,
        )
        self._say_held(guarded)
        self.metrics.held.set(len(guarded.held))
        return planned.plan

    def _say_once(self, topic: str, lines: tuple[str, ...], say: Callable[[str], None]) -> None:
        if self._said.get(topic) != lines:
            self._said[topic] = lines
            for line in lines:
                say(line)

    def _say_held(self, guarded: Guarded) -> None:
        if not guarded.held:
            if self._said.pop("held", None) is not None:
                self.log.warning(
                    f"deletion guard: asked for {self.settings.hold_rounds} rounds in a row; "
                    "applying the deletions"
                    if self.guard.released
                    else "deletion guard: nothing held back any more"
                )
            return
        self._said["held"] = True
        self.log.warning(
            "deletion guard: holding back the removal of "
            + ", ".join(f"{held} of {owned} {kind}" for kind, held, owned in guarded.kinds)
            + f" (more than {self.settings.max_delete_fraction:g} of them); removed if asked "
            f"for {self.settings.hold_rounds} rounds in a row (asked {self.guard.streak} "
            f"{'time' if self.guard.streak == 1 else 'times'} so far), or allow it with "
            "--max-delete-fraction",
            held=len(guarded.held),
            owned=guarded.owned,
        )
