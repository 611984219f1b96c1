"""plan, and apply run once: a node's changes shown, or made and verified (apply --watch is
wired in watch.py)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kindplan.cli.inputs import known_node, parse, warnings_text
from kindplan.cli.options import (
    AdoptOpt,
    ApplyArgs,
    CniCacheOpt,
    ConfDirOpt,
    CrossSubnetOpt,
    LockTimeoutOpt,
    MasqBackendOpt,
    MtuOpt,
    NetnsOpt,
    NodeOpt,
    NoMasqueradeOpt,
    PlanArgs,
    PodSubnetOpt,
    RouteProtoOpt,
    RouteStyleOpt,
    SnapshotOptionalArg,
    StateDirOpt,
    UplinkOpt,
    finite,
    needs_root_here,
)
from kindplan.cli.target import DEFAULT_STATE_DIR, LOCK_TIMEOUT_SECONDS, Target, split
from kindplan.core.routes import DEFAULT_ROUTE_PROTO
from kindplan.errors import UsageError, one_line
from kindplan.status import ExitStatus

if TYPE_CHECKING:
    from collections.abc import Sequence

    from kindplan.core.changes import Plan
    from kindplan.core.model import Options, Snapshot
    from kindplan.node.converged import Remember
    from kindplan.node.saved import SavedPlan

IntervalOpt = Annotated[
    str, typer.Option(help="With --watch: time between rounds (10s, 500ms, 1m), with 10% jitter.")
]
KubeOpt = Annotated[
    bool,
    typer.Option(
        "--kube",
        help="Read the nodes from the Kubernetes API (in-cluster config or --kubeconfig) instead "
        "of SNAPSHOT: a list once, or a list and watch with --watch; "
        "needs the kubernetes client: pip install -e '.[kube]' in a checkout (setup.sh's .venv "
        "has it).",
    ),
]
KubeconfigOpt = Annotated[
    str | None, typer.Option(help="Kubeconfig file for --kube.", show_default=False)
]


def plan(  # noqa: PLR0913, PLR0917 - typer: a parameter per option
    snapshot: Annotated[
        str | None,
        typer.Argument(
            help="ClusterSnapshot or Kubernetes node list (kubectl get nodes -o json|yaml), JSON "
            "or YAML; '-' reads stdin. Not with --kube.",
            show_default=False,
        ),
    ] = None,
    node: NodeOpt = None,
    netns: NetnsOpt = None,
    conf_dir: ConfDirOpt = None,
    uplink: UplinkOpt = None,
    mtu: MtuOpt = None,
    route_proto: RouteProtoOpt = DEFAULT_ROUTE_PROTO,
    adopt: AdoptOpt = False,
    cni_cache_dir: CniCacheOpt = None,
    cross_subnet: CrossSubnetOpt = None,
    route_style: RouteStyleOpt = None,
    pod_subnet: PodSubnetOpt = None,
    masq_backend: MasqBackendOpt = None,
    no_masquerade_cidr: NoMasqueradeOpt = None,
    state_dir: Annotated[
        Path, typer.Option(help="As apply takes it; plan neither locks nor writes state there.")
    ] = DEFAULT_STATE_DIR,
    lock_timeout: Annotated[
        float, typer.Option(min=0, help="As apply takes it; plan takes no lock.", callback=finite)
    ] = LOCK_TIMEOUT_SECONDS,
    json_out: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Save the plan (with a fingerprint of the node) for apply --plan.",
            metavar="FILE",
            show_default=False,
        ),
    ] = None,
    detailed_exitcode: Annotated[
        bool,
        typer.Option("--detailed-exitcode", help="Exit 2 when there are changes, 0 when none."),
    ] = False,
    kube: KubeOpt = False,
    kubeconfig: KubeconfigOpt = None,
) -> int:
    """Show what apply would change on this node: + add, ~ change, - delete. Changes nothing.

    Example: kindplan plan cluster.yaml --node worker2 --netns kp-worker2 --conf-dir /tmp/cni

    From the Kubernetes API: kindplan plan --kube --pod-subnet 10.244.0.0/16
    """
    del state_dir, lock_timeout  # taken so that an apply's command line plans as it is
    # Positional: each name is the field's, in the field's order.
    target = Target(node, netns, conf_dir, uplink, mtu, route_proto, adopt, cni_cache_dir)
    target = target._replace(
        masq_backend=masq_backend,
        no_masquerade=split(no_masquerade_cidr),
        cross_subnet=cross_subnet,
        route_style=route_style,
    )
    args = PlanArgs(
        snapshot=snapshot,
        pod_subnets=split(pod_subnet),
        target=target,
        json_out=json_out,
        out=out,
        detailed_exitcode=detailed_exitcode,
        kube=kube,
        kubeconfig=kubeconfig,
    )
    return _plan(args)


def _plan(args: PlanArgs) -> int:
    import json

    from kindplan.core.planview import format_plan, plan_to_json
    from kindplan.inputs.sources import read_input
    from kindplan.node.saved import SavedPlan, save_plan

    given = read_input(args.snapshot, args.pod_subnets, kube=args.kube, kubeconfig=args.kubeconfig)
    snap = parse(given)
    options, netns = args.target.options(), args.target.netns
    known_node(snap, options.node, host_name=args.target.node is None)
    needs_root_here("plan", netns, "to read the node's iptables rules (iptables-save)")
    from kindplan.node.engine import conflist_left_alone, plan_node, policy_facts

    planned = plan_node(snap, options, netns)
    policy = policy_facts(planned, snap)
    if args.out is not None:
        saved = SavedPlan(
            fingerprint=planned.fingerprint,
            options=options,
            netns=netns,
            snapshot=given.data,
            source=given.source,
            pod_subnets=list(given.pod_subnets),
            plan=plan_to_json(planned.plan),
        )
        save_plan(args.out, saved)
    if args.json_out:
        document = plan_to_json(planned.plan, policy=policy, fingerprint=planned.fingerprint)
        typer.echo(json.dumps(document, indent=2))
    else:
        sys.stdout.write(format_plan(planned.plan, color=sys.stdout.isatty(), policy=policy))
    left_alone = conflist_left_alone(planned.observed)
    if left_alone is not None:
        typer.echo(f"error: {one_line(left_alone)}", err=True)
        return ExitStatus.FAILURE
    pending = not planned.plan.empty or bool(planned.plan.conflicts)
    return ExitStatus.CHANGES_PENDING if args.detailed_exitcode and pending else ExitStatus.OK


def apply(  # noqa: PLR0913, PLR0917 - typer: a parameter per option
    snapshot: SnapshotOptionalArg = None,
    plan_file: Annotated[
        Path | None,
        typer.Option(
            "--plan",
            help="Apply a plan saved by plan --out, if the node has not changed.",
            show_default=False,
        ),
    ] = None,
    node: NodeOpt = None,
    netns: NetnsOpt = None,
    conf_dir: ConfDirOpt = None,
    state_dir: StateDirOpt = DEFAULT_STATE_DIR,
    uplink: UplinkOpt = None,
    mtu: MtuOpt = None,
    route_proto: RouteProtoOpt = DEFAULT_ROUTE_PROTO,
    adopt: AdoptOpt = False,
    cni_cache_dir: CniCacheOpt = None,
    cross_subnet: CrossSubnetOpt = None,
    route_style: RouteStyleOpt = None,
    pod_subnet: PodSubnetOpt = None,
    masq_backend: MasqBackendOpt = None,
    no_masquerade_cidr: NoMasqueradeOpt = None,
    lock_timeout: LockTimeoutOpt = LOCK_TIMEOUT_SECONDS,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            help="Keep the node converged: a round every --interval and whenever the source "
            "changes, until SIGTERM/SIGINT (exit 0); SIGHUP re-reads the source.",
        ),
    ] = False,
    interval: IntervalOpt = "10s",
    kube: KubeOpt = False,
    kubeconfig: KubeconfigOpt = None,
    metrics_addr: Annotated[
        str | None,
        typer.Option(
            help="With --watch: serve Prometheus metrics (/metrics) and /healthz on HOST:PORT.",
            show_default=False,
        ),
    ] = None,
    log_format: Annotated[
        str, typer.Option(help="With --watch: log lines as 'text' or 'json'.")
    ] = "text",
    max_delete_fraction: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            callback=finite,
            help="With --watch: hold back a round's route deletions when they would remove more "
            "than this fraction of the routes kindplan owns (1: never hold back).",
        ),
    ] = 0.5,
    hold_rounds: Annotated[
        int,
        typer.Option(
            min=2,
            help="With --watch: apply held-back deletions asked for this many rounds in a row "
            "(and for as many intervals).",
        ),
    ] = 3,
    backoff_max: Annotated[
        str, typer.Option(help="With --watch: longest wait between failing rounds.")
    ] = "60s",
    healthz_max_age: Annotated[
        str | None,
        typer.Option(
            help="With --watch: /healthz fails when no round succeeded for this long "
            "[default: 6 intervals, at least 60s].",
            show_default=False,
        ),
    ] = None,
) -> int:
    """Make the node match the snapshot, changing only what differs; then verify.

    Example: kindplan apply cluster.yaml --node worker2 --netns kp-worker2 --conf-dir /tmp/cni

    From the Kubernetes API: kindplan apply --kube --pod-subnet 10.244.0.0/16
    """
    # Positional: each name is the field's, in the field's order.
    target = Target(node, netns, conf_dir, uplink, mtu, route_proto, adopt, cni_cache_dir)
    target = target._replace(
        masq_backend=masq_backend,
        no_masquerade=split(no_masquerade_cidr),
        cross_subnet=cross_subnet,
        route_style=route_style,
    )
    args = ApplyArgs(
        snapshot=snapshot,
        plan_file=plan_file,
        pod_subnets=split(pod_subnet),
        target=target,
        state_dir=state_dir,
        lock_timeout=lock_timeout,
        kube=kube,
        kubeconfig=kubeconfig,
    )
    if watch:
        from kindplan.cli.watch import WatchArgs, watch_node

        flags = WatchArgs(
            interval=interval,
            metrics_addr=metrics_addr,
            log_format=log_format,
            max_delete_fraction=max_delete_fraction,
            hold_rounds=hold_rounds,
            backoff_max=backoff_max,
            healthz_max_age=healthz_max_age,
        )
        return watch_node(args, flags)
    if plan_file is not None and kube:
        raise UsageError("--plan FILE applies a saved plan: not with --kube")
    if not kube and (snapshot is None) == (plan_file is None):
        raise UsageError("give exactly one of SNAPSHOT and --plan FILE")
    if plan_file is None:
        from kindplan.inputs.sources import check_choice

        check_choice(snapshot, kube, kubeconfig)  # before the node is locked
    with _sigint_deferred() as stop:
        return _apply_once(args, stop)


def _apply_once(args: ApplyArgs, stop: Callable[[], bool]) -> int:
    saved = None
    remember = None
    if args.plan_file is not None:
        saved = _saved_plan(args.plan_file, args.target)
        from kindplan.inputs.sources import Input

        snap = parse(Input(saved.snapshot, saved.source, split(saved.pod_subnets)))
        options, netns = saved.options, saved.netns
        _lock(netns, args.lock_timeout)
    else:
        options, netns = args.target.options(), args.target.netns
        _lock(netns, args.lock_timeout)
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
        typer.echo(f"warning: {warning}", err=True)
    say_each("applied", report.applied_texts)
    for failure in report.failures:
        typer.echo(f"error: {failure}", err=True)
    residue = report.residue
    if residue is not None and (not residue.empty or residue.conflicts):
        typer.echo("still different after apply:", err=True)
        typer.echo(format_plan(residue), err=True, nl=False)
        return ExitStatus.FAILURE
    typer.echo(f"Apply complete: {summary(planned.plan).removeprefix('Plan: ')}")
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


def _lock(netns: str | None, timeout: float) -> None:
    say_if_locked(netns, timeout)


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
        typer.echo(
            f"waiting for {lock}: held by {holder}; up to {timeout:g} s (--lock-timeout)", err=True
        )


@contextmanager
def _sigint_deferred() -> Iterator[Callable[[], bool]]:
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
