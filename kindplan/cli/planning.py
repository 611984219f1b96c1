"""plan, and apply run once: a node's changes shown, or made and verified (apply --watch is
wired in watch.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kindplan.cli.applyonce import ApplyArgs, apply_once, known_node, parse
from kindplan.cli.options import (
    AdoptOpt,
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
    pass

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
    return apply_once(args)
