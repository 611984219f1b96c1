"""apply --watch: its flags checked, its source, metrics server and reconcile loop wired, and each
of them closed again however the loop ends. Imported only by apply --watch."""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING, NamedTuple

from kindplan.cli.applyonce import ApplyArgs
from kindplan.errors import UsageError
from kindplan.status import ExitStatus

if TYPE_CHECKING:
    from kindplan.core.model import Options


class WatchArgs(NamedTuple):
    """apply's parameters for --watch alone, as given (durations still text)."""

    interval: str
    metrics_addr: str | None
    log_format: str
    max_delete_fraction: float
    hold_rounds: int
    backoff_max: str
    healthz_max_age: str | None


def watch_node(args: ApplyArgs, flags: WatchArgs) -> int:
    """Check the flags of apply --watch, then keep the node converged until a signal says stop."""
    if args.plan_file is not None:
        raise UsageError("--watch makes its own plans: not with --plan")
    if flags.log_format not in ("text", "json"):
        raise UsageError(f"--log-format: {flags.log_format!r} is not 'text' or 'json'")
    every = duration("--interval", flags.interval)
    options = args.target.options()
    return _run_loop(
        args,
        flags,
        options,
        interval=every,
        backoff_max=duration("--backoff-max", flags.backoff_max),
        healthz_max_age=duration("--healthz-max-age", flags.healthz_max_age)
        if flags.healthz_max_age
        else max(6 * every, 60.0),
    )


def duration(flag: str, text: str) -> float:
    """'10s', '500ms', '2m', '1h' or plain seconds -> seconds (more than 0)."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    number, unit = text.strip(), "s"
    for suffix in ("ms", "s", "m", "h"):
        if number.endswith(suffix):
            number, unit = number[: -len(suffix)], suffix
            break
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < 1e7:  # also refuses nan and inf
        raise UsageError(f"{flag}: {text!r} is not a duration such as 10s, 500ms or 2m")
    return seconds


def _run_loop(
    args: ApplyArgs,
    flags: WatchArgs,
    options: Options,
    *,
    interval: float,
    backoff_max: float,
    healthz_max_age: float,
) -> int:
    """The loop with its source and metrics server, each closed again however it ends."""
    from kindplan.agent.logs import Log
    from kindplan.agent.metrics import Health, Metrics, serve
    from kindplan.agent.watch import Loop, LoopSettings, Signals, Telemetry
    from kindplan.inputs.sources import open_source

    gc.enable()  # a process that lives on must collect (see main)
    signals = Signals()  # from the start: a SIGTERM while connecting still ends with 0
    log = Log(flags.log_format)
    try:  # before the loop enters --netns: the API is reached from here
        source = open_source(
            args.snapshot,
            args.pod_subnets,
            node=options.node,
            kube=args.kube,
            kubeconfig=args.kubeconfig,
            log=log.warning,
        )
    except BaseException:
        signals.restore()
        raise
    metrics, health = Metrics(), Health(healthz_max_age)
    try:
        server = serve(flags.metrics_addr, metrics, health) if flags.metrics_addr else None
    except BaseException:
        source.close()
        signals.restore()
        raise
    settings = LoopSettings(
        interval=interval,
        backoff_max=backoff_max,
        max_delete_fraction=flags.max_delete_fraction,
        hold_rounds=flags.hold_rounds,
        lock_timeout=args.lock_timeout,
    )
    netns, state_dir = args.target.netns, args.state_dir
    telemetry = Telemetry(log, metrics, health)
    loop = Loop(source, options, netns, state_dir, settings=settings, telemetry=telemetry)
    try:
        loop.journal.check()  # a state folder another user could write: refused before a round
        if signals.stop is not None:  # asked to stop while starting: no round at all
            signals.restore()
            log.info("stopped", signal=signals.stop, rounds=0)
            return ExitStatus.OK
        return loop.run(signals)
    finally:
        source.close()
        if server is not None:
            server.close()
