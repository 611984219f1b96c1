"""apply run once (not --watch), without typer: the snapshot read, the node planned, applied,
verified and recorded, and what happened said.

planning.py's apply runs it after typer read the command line; quick.py runs it for a plain
`kindplan apply SNAPSHOT [flags]` that it reads exactly as typer would, before typer is imported
at all: typer's import and its building of apply's options were some 43 ms of CPU of a first
apply at 5,000 nodes, all of it before the first route is sent. What a command prints here goes
out as typer.echo writes it (echo); an error ends as program.main ends it (failed).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from kindplan.cli.target import Target, split
from kindplan.errors import (
    Interrupted,
    InvalidInputError,
    KindplanError,
    Problem,
    UsageError,
    one_line,
)
from kindplan.status import ExitStatus

if TYPE_CHECKING:
    from kindplan.core.changes import Plan
    from kindplan.core.model import Options, Snapshot
    from kindplan.inputs.sources import Input
    from kindplan.node.converged import Remember
    from kindplan.node.saved import SavedPlan


class ApplyArgs(NamedTuple):
    """apply's parameters that both of its modes, once and --watch, take."""

    snapshot: str | None
    plan_file: Path | None
    pod_subnets: tuple[str, ...]
    target: Target
    state_dir: Path
    lock_timeout: float
    kube: bool = False  # the nodes from the Kubernetes API instead of SNAPSHOT
    kubeconfig: str | None = None


def echo(text: str, *, err: bool = False) -> None:
    """A line to stdout (stderr), written and flushed, as typer.echo writes one."""
    stream = sys.stderr if err else sys.stdout
    stream.write(text + "\n")
    stream.flush()


def failed(e: KindplanError) -> ExitStatus:
    """Say what went wrong; the exit status its kind of error stands for."""
    if isinstance(e, InvalidInputError):
        for problem in e.problems:
            echo(f"error: {problem}", err=True)
        return ExitStatus.INVALID_INPUT
    echo(f"error: {one_line(str(e))}", err=True)  # paths from flags may hold newlines
    if isinstance(e, UsageError):
        return ExitStatus.USAGE
    if isinstance(e, Interrupted):
        return ExitStatus.INTERRUPTED
    return ExitStatus.FAILURE


def warnings_text(problems: tuple[Problem, ...] | list[Problem]) -> str:
    return "".join(f"warning: {problem}\n" for problem in problems)


def parse(given: Input, *, strict: bool = False) -> Snapshot:
    """The snapshot read; its warnings go to stderr."""
    from kindplan.inputs.sources import load as load_input

    loaded = load_input(given, strict=strict)
    sys.stderr.write(warnings_text(loaded.warnings))
    return loaded.snapshot


def known_node(snap: Snapshot, name: str, *, host_name: bool = False) -> None:
    """A node named on the command line (or the host name standing in for it) that the snapshot
    has not got is the command line's mistake, a usage error (README: "Exit statuses")."""
    from kindplan.core.compiler import find_node

    try:
        find_node(snap, name, host_name=host_name)
    except InvalidInputError as e:
        raise UsageError(str(e)) from None


def apply_once(args: ApplyArgs) -> int:
    """apply without --watch, its first Ctrl-C a stop between two batches."""
    with sigint_deferred() as stop:
        return _apply_once(args, stop)


def _apply_once(args: ApplyArgs, stop: Callable[[], bool]) -> int:
    saved = None
    remember = None
    if args.plan_file is not None:
        saved = _saved_plan(args.plan_file, args.target)
        from kindplan.inputs.sources import Input

        snap = parse(Input(saved.snapshot, saved.source, split(saved.pod_subnets)))
        options, netns = saved.options, saved.netns
        say_if_locked(netns, args.lock_timeout)
    else:
        options, netns = args.target.options(), args.target.netns
        say_if_locked(netns, args.lock_timeout)
        known = _known_converged(args, options)
        if isinstance(known, str):  # the same inputs, the same node: the same empty plan
            sys.stdout.write(known)
            return ExitStatus.OK
        snap, remember = known
        known_node(snap, options.node, host_name=args.target.node is None)
    # Imported only now: a converged node's apply (above) needs none of it.
    from kindplan.core.planview import format_plan, summary
    from kindplan.node.engine import apply_node
    from kindplan.node.journal import Journal

    planned, report = apply_node(
        snap,
        options,
        netns,
        lock_timeout=args.lock_timeout,
        steps=() if saved is None else (saved.check,),
        journal=Journal(args.state_dir, netns),
        remember=remember,
        stop=stop,
    )
    if report is None:
        sys.stdout.write(format_plan(planned.plan))
        return ExitStatus.FAILURE if planned.plan.conflicts else ExitStatus.OK
    for warning in planned.plan.warnings:
        echo(f"warning: {warning}", err=True)
    say_each("applied", report.applied_texts)
    for failure in report.failures:
        echo(f"error: {failure}", err=True)
    residue = report.residue
    if residue is not None and (not residue.empty or residue.conflicts):
        echo("still different after apply:", err=True)
        sys.stderr.write(format_plan(residue))
        sys.stderr.flush()
        return ExitStatus.FAILURE
    echo(f"Apply complete: {summary(planned.plan).removeprefix('Plan: ')}")
    return ExitStatus.OK if report.ok else ExitStatus.FAILURE


def _saved_plan(plan_file: Path, target: Target) -> SavedPlan:
    """The plan saved in `plan_file`, if it was made for the node and namespace given (if any)."""
    from kindplan.inputs.files import read_source
    from kindplan.node.saved import parse_plan

    saved = parse_plan(*read_source(str(plan_file)))  # bounded like a snapshot
    # The plan names its node and namespace; a command line that names others is a mistake.
    for flag, given, planned_for in (
        ("--netns", target.netns, saved.netns),
        ("--node", target.node, saved.options.node),
    ):
        if given is not None and given != planned_for:
            raise UsageError(
                f"{flag} {given}: {plan_file} was made for {flag} {planned_for or '(none)'}"
            )
    return saved


def say_if_locked(netns: str | None, timeout: float) -> None:
    """Before waiting for another applier: whose lock, and for how long (a namespace that is
    not there has no lock: the apply says so when it opens the node)."""
    from kindplan.errors import RuntimeFailure
    from kindplan.node.locking import apply_lock, lock_holder

    try:
        lock = apply_lock(netns)
    except RuntimeFailure:
        return
    holder = lock_holder(lock)
    if holder is not None and timeout > 0:
        echo(
            f"waiting for {lock}: held by {holder}; up to {timeout:g} s (--lock-timeout)", err=True
        )


@contextmanager
def sigint_deferred() -> Iterator[Callable[[], bool]]:
    """Ctrl-C asks a one-shot apply to stop between two batches, which are then all recorded in
    the journal (a second Ctrl-C stops at once: every batch's undo is on disk before it is sent)."""
    import signal

    asked: list[int] = []

    def handle(signum: int, _frame: object) -> None:
        asked.append(signum)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, handle)
    try:
        yield lambda: bool(asked)
    finally:
        signal.signal(signal.SIGINT, previous)


def say_each(verb: str, texts: Sequence[str]) -> None:
    """One stdout line per change (its applied_text, which the apply wrote while the kernel
    worked), written at once (typer.echo per line took ~0.1 s for the 10,000 routes of a full
    apply)."""
    sys.stdout.write("".join(f"{verb}: {text}\n" for text in texts))
    sys.stdout.flush()


def _known_converged(args: ApplyArgs, options: Options) -> str | tuple[Snapshot, Remember]:
    """What a converged node's apply printed, if inputs and node are as they were then (the
    snapshot is then not even parsed); else the snapshot, and how to remember a convergence."""
    from kindplan.node.converged import Remember, converged_record, inputs_digest
    from kindplan.node.statedir import target_dir

    netns = args.target.netns
    from kindplan.inputs.sources import read_input

    given = read_input(args.snapshot, args.pod_subnets, kube=args.kube, kubeconfig=args.kubeconfig)
    inputs = inputs_digest(given.data, given.pod_subnets, options, netns)
    path = target_dir(args.state_dir, netns) / "converged.json"
    remember = Remember(path, inputs, "", _converged_output)
    record = converged_record(netns, options, remember, lock_timeout=args.lock_timeout)
    if record is not None:
        sys.stderr.write(record.warnings)
        return record.output
    from kindplan.inputs.sources import load

    loaded = load(given)
    warnings = warnings_text(loaded.warnings)
    sys.stderr.write(warnings)
    return loaded.snapshot, Remember(path, inputs, warnings, _converged_output)


def _converged_output(plan: Plan) -> str:
    """What apply prints for a converged node (recorded: the fast path prints it again)."""
    from kindplan.core.planview import format_plan

    return format_plan(plan)
