"""The command line: the only module that reads arguments, prints, and turns errors into exits."""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

# typer carries its own copy of click since 0.26 (pyproject asks for it) and no longer installs
# click: its parse errors are these classes, not click's.
from typer._click.exceptions import ClickException
from typer._click.exceptions import UsageError as ClickUsageError

from kindplan import __version__
from kindplan.core.model import (
    DEFAULT_MTU,
    DEFAULT_ROUTE_PROTO,
    RESERVED_ROUTE_PROTOS,
    HostFacts,
    Snapshot,
)
from kindplan.errors import (
    Interrupted,
    InvalidInputError,
    KindplanError,
    Problem,
    RuntimeFailure,
    UsageError,
    one_line,
)
from kindplan.status import ExitStatus

if TYPE_CHECKING:
    from collections.abc import Sequence

    from kindplan.agent.logs import Log
    from kindplan.agent.sources import Source
    from kindplan.core.model import Change, ObservedState, Options
    from kindplan.core.trace import Uplink
    from kindplan.node.converged import Remember

app = typer.Typer(
    name="kindplan",
    help="Compile a cluster snapshot into one node's kindnet pod networking: routes, veth "
    "addresses, CNI conflist and SNAT rules. Exit status: 0 ok, 1 failure, 2 changes pending "
    "(--detailed-exitcode), 64 usage error, 65 invalid input.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

SnapshotArg = Annotated[
    str,
    typer.Argument(
        help="ClusterSnapshot or Kubernetes node list (kubectl get nodes -o json|yaml), JSON or "
        "YAML; '-' reads stdin.",
        show_default=False,
    ),
]
PodSubnetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--pod-subnet",
        help="The cluster's pod subnet(s) for a node list input, as kindnet's POD_SUBNET; "
        "repeat it or separate with commas.",
        show_default=False,
    ),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kindplan {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """kindplan: read, preview and trust your kindnet pod networking."""


def _split(values: list[str] | None) -> list[str]:
    return [part.strip() for v in values or () for part in v.split(",") if part.strip()]


def _warnings(problems: tuple[Problem, ...] | list[Problem]) -> str:
    return "".join(f"warning: {problem}\n" for problem in problems)


def _warn(problems: tuple[Problem, ...] | list[Problem]) -> None:
    sys.stderr.write(_warnings(problems))


def _read(path: str) -> tuple[bytes, str]:
    from kindplan.agent.sources import read_source

    return read_source(path)


def _parse(
    data: bytes, source: str, pod_subnets: list[str] | None, *, strict: bool = False
) -> Snapshot:
    from kindplan.core.snapshot import freeze_heap, parse_snapshot

    loaded = parse_snapshot(data, source=source, pod_subnets=_split(pod_subnets), strict=strict)
    _warn(loaded.warnings)
    freeze_heap()
    return loaded.snapshot


def _load(path: str, pod_subnets: list[str] | None, *, strict: bool = False) -> Snapshot:
    return _parse(*_read(path), pod_subnets, strict=strict)


@app.command()
def validate(
    snapshot: SnapshotArg,
    pod_subnet: PodSubnetOpt = None,
    node: Annotated[
        str | None, typer.Option(help="Also check that this node is in the snapshot.")
    ] = None,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Check a node list as strictly as a ClusterSnapshot (for CI): a node usable "
            "only in part is an error, or skipped while it has no PodCIDR or InternalIP.",
        ),
    ] = False,
) -> int:
    """Check a snapshot: schema, then meaning (CIDRs, overlaps, duplicates, pods). Exit 65 if bad.

    Example: kindplan validate fixtures/seed-lab/snapshot.yaml
    """
    from kindplan.core.compiler import find_node

    snap = _load(snapshot, pod_subnet, strict=strict)
    if node is not None:
        find_node(snap, node)
    from kindplan.core.planview import plural

    families = "dual-stack" if len(snap.families) == 2 else f"IPv{snap.families[0]}"
    nodes, pods = plural(len(snap.nodes), "node"), plural(len(snap.pods), "pod")
    typer.echo(f"ok: {nodes}, {pods}, {families}")
    return ExitStatus.OK


@app.command()
def render(
    snapshot: SnapshotArg,
    node: Annotated[
        str | None, typer.Option(help="The node to render for.", show_default=False)
    ] = None,
    all_nodes: Annotated[
        bool, typer.Option("--all-nodes", help="Render every node, one subfolder per node.")
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Write the files to this folder (created if missing).", show_default=False
        ),
    ] = None,
    check: Annotated[
        Path | None,
        typer.Option(
            help="Compare with this folder instead of writing; exit 1 and print a unified diff "
            "when it differs (for CI and pre-commit golden-file checks).",
            show_default=False,
        ),
    ] = None,
    uplink: Annotated[str, typer.Option(help="The node's uplink interface.")] = "eth0",
    mtu: Annotated[
        int | None,
        typer.Option(
            min=576,
            max=65535,
            help=f"Pod MTU; default: the snapshot's cluster.mtu, else {DEFAULT_MTU}.",
            show_default=False,
        ),
    ] = None,
    route_proto: RouteProtoOpt = DEFAULT_ROUTE_PROTO,  # the one rule of plan and apply
    pod_subnet: PodSubnetOpt = None,
) -> int:
    """Write a node's conflist, route batch and iptables-restore payloads; no kernel access.

    Files: the conflist (cluster.cni.confFile, default 10-kindnet.conflist), routes.batch
    (for ip -batch), iptables.rules and ip6tables.rules (for iptables-restore --noflush).

    Examples:

      kindplan render fixtures/seed-lab/snapshot.yaml --node k8s-guide-worker2 --out out/

      kindplan render fixtures/seed-lab/snapshot.yaml --all-nodes --check fixtures/seed-lab/expected
    """
    from kindplan.core.compiler import compile_desired
    from kindplan.core.planview import plural
    from kindplan.core.render import render_files
    from kindplan.node.files import diff_tree, write_tree

    if (node is None) == (not all_nodes):
        raise UsageError("give exactly one of --node NAME and --all-nodes")
    if (out is None) == (check is None):
        raise UsageError("give exactly one of --out DIR and --check DIR")
    snap = _load(snapshot, pod_subnet)
    facts = HostFacts(uplink=uplink, mtu=mtu or snap.cluster.mtu or DEFAULT_MTU)
    # Every node that has a PodCIDR: one without (joining) has no conflist; --node renders it.
    names = [n.name for n in snap.nodes if n.pod_cidrs] if all_nodes else [str(node)]
    if not names:  # a live cluster's node list may have no node with a PodCIDR yet
        typer.echo("warning: --all-nodes: no node has a PodCIDR yet: nothing to render", err=True)
    files: dict[str, str] = {}
    for name in names:
        desired = compile_desired(snap, name, facts, route_proto=route_proto)
        prefix = f"{name}/" if all_nodes else ""
        files.update({prefix + f: text for f, text in render_files(desired).items()})
    if check is not None:
        diff = diff_tree(check, files)
        if diff:
            sys.stdout.write(diff)
            typer.echo(f"render: {check} differs from the rendered files", err=True)
            return ExitStatus.FAILURE
        typer.echo(f"render: {check} is up to date ({plural(len(files), 'file')})")
        return ExitStatus.OK
    assert out is not None
    changed = write_tree(out, files)
    typer.echo(f"render: wrote {plural(len(files), 'file')} to {out} ({len(changed)} changed)")
    return ExitStatus.OK


NodeOpt = Annotated[
    str | None,
    typer.Option(
        help="The node to plan for. Default: this machine's host name.", show_default=False
    ),
]


def _netns_name(value: str | None) -> str | None:
    """A --netns is a plain name, refused before anything is opened or created."""
    from kindplan.node.netns import check_name

    try:
        check_name(value)
    except UsageError as e:
        raise typer.BadParameter(str(e).removeprefix("--netns: ")) from None
    return value


NetnsOpt = Annotated[
    str | None,
    typer.Option(
        help="Work inside this named network namespace (ip netns).",
        show_default=False,
        callback=_netns_name,
    ),
]


def _path_value(value: str | Path | None) -> str | Path | None:
    """A path the kernel can take: no component over NAME_MAX bytes, none over PATH_MAX."""
    from kindplan.core.model import path_problem

    problem = path_problem(str(value)) if value is not None else None
    if problem:
        raise typer.BadParameter(problem)
    return value


def _state_dir(value: Path) -> Path:
    _path_value(value)
    if value.exists() and not value.is_dir():
        raise typer.BadParameter(f"{value} is not a directory")
    return value


ConfDirOpt = Annotated[
    str | None,
    typer.Option(
        help="Folder of the conflist. Default: the snapshot's cluster.cni.confDir; with --netns "
        "NAME, /etc/netns/NAME/cni/net.d (what ip netns exec NAME shows as /etc/cni/net.d).",
        show_default=False,
        callback=_path_value,
    ),
]
UplinkOpt = Annotated[
    str | None,
    typer.Option(
        help="Uplink interface. Default: the one holding the node's InternalIP.", show_default=False
    ),
]
MtuOpt = Annotated[
    int | None,
    typer.Option(
        min=576,
        max=65535,
        help="Pod MTU. Default: cluster.mtu, else the uplink's MTU.",
        show_default=False,
    ),
]


def _route_proto(value: int) -> int:
    if value in RESERVED_ROUTE_PROTOS:
        raise typer.BadParameter(
            f"{value} is used by the kernel or other routing software; kindplan deletes stale "
            "routes of its own number, so pick another (default 75)"
        )
    return value


RouteProtoOpt = Annotated[
    int,
    typer.Option(
        min=1,
        max=255,
        callback=_route_proto,
        help="Route protocol number that marks kindplan's routes.",
    ),
]
AdoptOpt = Annotated[
    bool,
    typer.Option(
        "--adopt",
        help="Replace foreign routes that stand where kindplan needs its own "
        "(taking a node over from classic kindnetd).",
    ),
]
StateDirOpt = Annotated[
    Path,
    typer.Option(
        help="Where kindplan keeps its journal (the lock belongs to the namespace).",
        callback=_state_dir,
    ),
]
SnapshotOptionalArg = Annotated[
    str | None,
    typer.Argument(
        help="ClusterSnapshot or node list ('-': stdin). Not with --plan.", show_default=False
    ),
]
CniCacheOpt = Annotated[
    str | None,
    typer.Option(
        help="Read this node's pods from libcni's result cache here "
        "[default: /var/lib/cni/results, if it exists].",
        show_default=False,
        callback=_path_value,
    ),
]
IntervalOpt = Annotated[
    str, typer.Option(help="With --watch: time between rounds (10s, 500ms, 1m), with 10% jitter.")
]
KubeOpt = Annotated[
    bool,
    typer.Option(
        "--kube",
        help="Read nodes from the Kubernetes API (in-cluster config or --kubeconfig); "
        "needs the kubernetes client: pip install -e '.[kube]' in a checkout (setup.sh's .venv "
        "has it).",
    ),
]
KubeconfigOpt = Annotated[
    str | None, typer.Option(help="Kubeconfig file for --kube.", show_default=False)
]
KUBE_FIRST_LIST_SECONDS = 5.0
DEFAULT_STATE_DIR = Path("/var/lib/kindplan")
LOCK_TIMEOUT_SECONDS = 30.0


def netns_conf_dir(netns: str) -> str:
    """Where the conflist of network namespace `netns` lives unless --conf-dir says otherwise."""
    return f"/etc/netns/{netns}/cni/net.d"


def _options(
    node: str | None,
    conf_dir: str | None,
    uplink: str | None,
    mtu: int | None,
    route_proto: int,
    adopt: bool,
    cni_cache_dir: str | None,
    netns: str | None,
) -> Options:
    import socket

    from kindplan.core.model import Options
    from kindplan.node.cnicache import DEFAULT_CACHE_DIR

    # The host's libcni cache describes the host's pods: not a --netns target's.
    if cni_cache_dir is None and netns is None and DEFAULT_CACHE_DIR.is_dir():
        cni_cache_dir = str(DEFAULT_CACHE_DIR)
    if conf_dir is None and netns is not None:
        # Never the host's /etc/cni/net.d for a namespace: iproute2's convention, which
        # `ip netns exec NAME` shows as /etc/cni/net.d.
        conf_dir = netns_conf_dir(netns)
    return Options(
        node or socket.gethostname(), conf_dir, uplink, mtu, route_proto, adopt, cni_cache_dir
    )


@app.command()
def plan(
    snapshot: SnapshotArg,
    node: NodeOpt = None,
    netns: NetnsOpt = None,
    conf_dir: ConfDirOpt = None,
    uplink: UplinkOpt = None,
    mtu: MtuOpt = None,
    route_proto: RouteProtoOpt = DEFAULT_ROUTE_PROTO,
    adopt: AdoptOpt = False,
    cni_cache_dir: CniCacheOpt = None,
    pod_subnet: PodSubnetOpt = None,
    state_dir: Annotated[
        Path, typer.Option(help="As apply takes it; plan neither locks nor writes state there.")
    ] = DEFAULT_STATE_DIR,
    lock_timeout: Annotated[
        float, typer.Option(min=0, help="As apply takes it; plan takes no lock.")
    ] = LOCK_TIMEOUT_SECONDS,
    json_out: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Save the plan (with a fingerprint of the node) for apply --plan.",
            show_default=False,
        ),
    ] = None,
    detailed_exitcode: Annotated[
        bool,
        typer.Option("--detailed-exitcode", help="Exit 2 when there are changes, 0 when none."),
    ] = False,
) -> int:
    """Show what apply would change on this node: + add, ~ change, - delete. Changes nothing.

    Example: kindplan plan cluster.yaml --node worker2 --netns kp-worker2 --conf-dir /tmp/cni
    """
    import json

    from kindplan.core.planview import format_plan, plan_to_json
    from kindplan.node.saved import SavedPlan, save_plan

    data, source = _read(snapshot)
    snap = _parse(data, source, pod_subnet)
    options = _options(node, conf_dir, uplink, mtu, route_proto, adopt, cni_cache_dir, netns)
    if node is None:
        _host_node(snap, options.node)
    from kindplan.node.engine import conflist_left_alone, plan_node

    planned = plan_node(snap, options, netns)
    if out is not None:
        saved = SavedPlan(
            fingerprint=planned.fingerprint,
            options=options,
            netns=netns,
            snapshot=data,
            source=source,
            pod_subnets=_split(pod_subnet),
            plan=plan_to_json(planned.plan),
        )
        save_plan(out, saved)
    if json_out:
        typer.echo(
            json.dumps(plan_to_json(planned.plan, fingerprint=planned.fingerprint), indent=2)
        )
    else:
        sys.stdout.write(format_plan(planned.plan, color=sys.stdout.isatty()))
    left_alone = conflist_left_alone(planned.observed)
    if left_alone is not None:
        typer.echo(f"error: {one_line(left_alone)}", err=True)
        return ExitStatus.FAILURE
    pending = not planned.plan.empty or bool(planned.plan.conflicts)
    return ExitStatus.CHANGES_PENDING if detailed_exitcode and pending else ExitStatus.OK


@app.command()
def apply(
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
    pod_subnet: PodSubnetOpt = None,
    lock_timeout: Annotated[
        float, typer.Option(min=0, help="Seconds to wait for another apply on this node.")
    ] = LOCK_TIMEOUT_SECONDS,
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
    """
    if watch:
        if plan_file is not None:
            raise UsageError("--watch makes its own plans: not with --plan")
        if log_format not in ("text", "json"):
            raise UsageError(f"--log-format: {log_format!r} is not 'text' or 'json'")
        every = _duration("--interval", interval)
        options = _options(node, conf_dir, uplink, mtu, route_proto, adopt, cni_cache_dir, netns)
        return _watch(
            lambda log: _source(snapshot, kube, kubeconfig, options.node, pod_subnet, log),
            options,
            netns,
            state_dir,
            every,
            metrics_addr,
            log_format,
            max_delete_fraction,
            hold_rounds,
            _duration("--backoff-max", backoff_max),
            _duration("--healthz-max-age", healthz_max_age)
            if healthz_max_age
            else max(6 * every, 60.0),
            lock_timeout,
        )
    if kube:
        raise UsageError("--kube needs --watch (or use kubectl get nodes -o json | kindplan ...)")
    if (snapshot is None) == (plan_file is None):
        raise UsageError("give exactly one of SNAPSHOT and --plan FILE")
    with _sigint_deferred() as stop:
        return _apply_once(
            snapshot=snapshot,
            plan_file=plan_file,
            node=node,
            netns=netns,
            conf_dir=conf_dir,
            state_dir=state_dir,
            uplink=uplink,
            mtu=mtu,
            route_proto=route_proto,
            adopt=adopt,
            cni_cache_dir=cni_cache_dir,
            pod_subnet=pod_subnet,
            lock_timeout=lock_timeout,
            stop=stop,
        )


def _apply_once(
    *,
    snapshot: str | None,
    plan_file: Path | None,
    node: str | None,
    netns: str | None,
    conf_dir: str | None,
    state_dir: Path,
    uplink: str | None,
    mtu: int | None,
    route_proto: int,
    adopt: bool,
    cni_cache_dir: str | None,
    pod_subnet: list[str] | None,
    lock_timeout: float,
    stop: Callable[[], bool],
) -> int:
    from kindplan.node.locking import apply_lock

    saved = None
    remember = None
    if plan_file is not None:
        from kindplan.agent.sources import read_source
        from kindplan.node.saved import parse_plan

        saved = parse_plan(*read_source(str(plan_file)))  # bounded like a snapshot
        # The plan names its node and namespace; a command line that names others is a mistake.
        for flag, given, planned_for in (
            ("--netns", netns, saved.netns),
            ("--node", node, saved.options.node),
        ):
            if given is not None and given != planned_for:
                raise UsageError(
                    f"{flag} {given}: {plan_file} was made for {flag} {planned_for or '(none)'}"
                )
        snap = _parse(saved.snapshot, saved.source, saved.pod_subnets)
        options, netns = saved.options, saved.netns
        _say_if_locked(apply_lock(netns), lock_timeout)
    else:
        assert snapshot is not None
        options = _options(node, conf_dir, uplink, mtu, route_proto, adopt, cni_cache_dir, netns)
        _say_if_locked(apply_lock(netns), lock_timeout)
        known = _known_converged(snapshot, pod_subnet, options, netns, state_dir, lock_timeout)
        if isinstance(known, str):  # the same inputs, the same node: the same empty plan
            sys.stdout.write(known)
            return ExitStatus.OK
        snap, remember = known
        if node is None:
            _host_node(snap, options.node)
    # Imported only now: a converged node's apply (above) needs none of it.
    from kindplan.core.planview import format_plan, summary
    from kindplan.node.engine import apply_node
    from kindplan.node.journal import Journal

    planned, report = apply_node(
        snap,
        options,
        netns,
        lock_timeout=lock_timeout,
        saved=saved,
        journal=Journal(state_dir, netns),
        remember=remember,
        stop=stop,
    )
    if report is None:
        sys.stdout.write(format_plan(planned.plan))
        return ExitStatus.FAILURE if planned.plan.conflicts else ExitStatus.OK
    for warning in planned.plan.warnings:
        typer.echo(f"warning: {warning}", err=True)
    _say_each("applied", report.applied)
    for failure in report.failures:
        typer.echo(f"error: {failure}", err=True)
    residue = report.residue
    if residue is not None and (not residue.empty or residue.conflicts):
        typer.echo("still different after apply:", err=True)
        typer.echo(format_plan(residue), err=True, nl=False)
        return ExitStatus.FAILURE
    typer.echo(f"Apply complete: {summary(planned.plan).removeprefix('Plan: ')}")
    return ExitStatus.OK if report.ok else ExitStatus.FAILURE


def _host_node(snap: Snapshot, name: str) -> None:
    """Without --node the host name is the node: say so when the snapshot has no such node."""
    from kindplan.core.compiler import find_node

    find_node(snap, name, host_name=True)


def _say_if_locked(lock: Path, timeout: float) -> None:
    """Before waiting for another applier: whose lock, and for how long."""
    from kindplan.node.locking import lock_holder

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


def _say_each(verb: str, changes: Sequence[Change]) -> None:
    """One stdout line per change, written at once (typer.echo per line took ~0.1 s for the
    10,000 routes of a full apply)."""
    from kindplan.core.planview import describe

    sys.stdout.write("".join(f"{verb}: {describe(change)}\n" for change in changes))
    sys.stdout.flush()


def _known_converged(
    snapshot: str,
    pod_subnet: list[str] | None,
    options: Options,
    netns: str | None,
    state_dir: Path,
    lock_timeout: float,
) -> str | tuple[Snapshot, Remember]:
    """What a converged node's apply printed, if inputs and node are as they were then (the
    snapshot is then not even parsed); else the snapshot, and how to remember a convergence."""
    from kindplan.node.converged import Remember, converged_record, inputs_digest
    from kindplan.node.statedir import target_dir

    data, source = _read(snapshot)
    inputs = inputs_digest(data, tuple(_split(pod_subnet)), options, netns)
    path = target_dir(state_dir, netns) / "converged.json"
    record = converged_record(netns, options, Remember(path, inputs, ""), lock_timeout=lock_timeout)
    if record is not None:
        sys.stderr.write(record.warnings)
        return record.output
    from kindplan.core.snapshot import freeze_heap, parse_snapshot

    loaded = parse_snapshot(data, source=source, pod_subnets=_split(pod_subnet))
    freeze_heap()
    warnings = _warnings(loaded.warnings)
    sys.stderr.write(warnings)
    return loaded.snapshot, Remember(path, inputs, warnings)


def _duration(flag: str, text: str) -> float:
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


def _source(
    snapshot: str | None,
    kube: bool,
    kubeconfig: str | None,
    node: str,
    pod_subnet: list[str] | None,
    log: Log,
) -> Source:
    if kube == (snapshot is not None):
        raise UsageError("give exactly one of SNAPSHOT (a file, a directory or -) and --kube")
    if kube:
        from kindplan.agent.kube import KubeSource

        source = KubeSource(node, _split(pod_subnet), kubeconfig, log=log.warning)
        source.wait_listed(KUBE_FIRST_LIST_SECONDS)  # else the first round has nothing yet
        return source
    if kubeconfig is not None:
        raise UsageError("--kubeconfig goes with --kube")
    assert snapshot is not None
    from kindplan.agent.sources import FileSource, StdinSource

    if snapshot == "-":
        return StdinSource(_split(pod_subnet))
    return FileSource(snapshot, _split(pod_subnet), log=log.warning)


def _watch(
    make_source: Callable[[Log], Source],
    options: Options,
    netns: str | None,
    state_dir: Path,
    interval: float,
    metrics_addr: str | None,
    log_format: str,
    max_delete_fraction: float,
    hold_rounds: int,
    backoff_max: float,
    healthz_max_age: float,
    lock_timeout: float,
) -> int:
    from kindplan.agent.logs import Log
    from kindplan.agent.metrics import Health, Metrics, serve
    from kindplan.agent.watch import Loop, LoopSettings, Signals

    gc.enable()  # a process that lives on must collect (see main)
    signals = Signals()  # from the start: a SIGTERM while connecting still ends with 0
    log = Log(log_format)
    try:
        source = make_source(log)  # before the loop enters --netns: the API is reached from here
    except BaseException:
        signals.restore()
        raise
    metrics, health = Metrics(), Health(healthz_max_age)
    try:
        server = serve(metrics_addr, metrics, health) if metrics_addr else None
    except BaseException:
        source.close()
        signals.restore()
        raise
    settings = LoopSettings(
        interval=interval,
        backoff_max=backoff_max,
        max_delete_fraction=max_delete_fraction,
        hold_rounds=hold_rounds,
        lock_timeout=lock_timeout,
    )
    loop = Loop(source, options, netns, state_dir, settings, log, metrics, health)
    try:
        if signals.stop is not None:  # asked to stop while starting: no round at all
            signals.restore()
            log.info("stopped", signal=signals.stop, rounds=0)
            return ExitStatus.OK
        return loop.run(signals)
    finally:
        source.close()
        if server is not None:
            server.close()


@app.command()
def rollback(
    netns: NetnsOpt = None,
    state_dir: StateDirOpt = DEFAULT_STATE_DIR,
    lock_timeout: Annotated[
        float, typer.Option(min=0, help="Seconds to wait for another apply on this node.")
    ] = LOCK_TIMEOUT_SECONDS,
) -> int:
    """Undo the newest apply (its journal generation), verify, and drop it from the history.

    Example: kindplan rollback --netns kp-worker2 --state-dir /tmp/state
    """
    from kindplan.core.planview import describe, plural
    from kindplan.node.engine import rollback_node
    from kindplan.node.journal import Journal
    from kindplan.node.locking import apply_lock

    journal = Journal(state_dir, netns)
    _say_if_locked(apply_lock(netns), lock_timeout)
    done = rollback_node(netns, journal, lock_timeout=lock_timeout)
    if done is None:
        typer.echo(f"Nothing to roll back: {journal.path} holds no generation.")
        return ExitStatus.OK
    generation = done.generation
    sys.stdout.write("".join(f"{_undo_verb(c)}: {describe(c)}\n" for c in done.report.applied))
    for change, how in done.left_alone:
        typer.echo(
            f"left alone: {describe(change)}: changed since generation {generation.number} "
            f"wrote it; to finish by hand, {how}",
            err=True,
        )
    for failure in done.report.failures:
        typer.echo(f"error: {failure}", err=True)
    if done.residue or done.report.failures:
        for change in done.residue:
            typer.echo(f"still different: {describe(change)}", err=True)
        typer.echo(
            f"rollback of generation {generation.number} incomplete; it stays in the journal",
            err=True,
        )
        return ExitStatus.FAILURE
    alone = f"; {len(done.left_alone)} left alone (see above)" if done.left_alone else ""
    typer.echo(
        f"Rolled back generation {generation.number} ({generation.time}, node "
        f"{generation.node}): {plural(len(done.report.applied), 'change')}, verified{alone}."
    )
    return ExitStatus.OK


def _undo_verb(change: Change) -> str:
    """What a rollback did: removed what the apply added, re-added what it deleted, restored
    what it replaced."""
    from kindplan.core.model import (
        AddAddress,
        AddRoute,
        DelAddress,
        DeleteConflist,
        DelRoute,
        RemoveChain,
        WriteChain,
    )

    if isinstance(change, DelRoute | DelAddress | RemoveChain | DeleteConflist):
        return "removed"
    if isinstance(change, AddRoute | AddAddress):
        return "re-added"
    if isinstance(change, WriteChain) and change.old_rules is None and change.rules is not None:
        return "re-added"  # a chain the apply removed
    return "restored"


@app.command()
def history(netns: NetnsOpt = None, state_dir: StateDirOpt = DEFAULT_STATE_DIR) -> int:
    """List the generations that rollback can undo, newest last.

    Example: kindplan history --netns kp-worker2 --state-dir /tmp/state
    """
    from collections import Counter

    from kindplan.node.journal import Journal

    journal = Journal(state_dir, netns)
    generations = journal.load()
    if not generations:
        typer.echo(f"no generations in {journal.path}")
    for g in generations:
        kinds = Counter(type(c).__name__ for c in g.undo)
        what = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        state = "" if g.complete else " (apply did not finish)"
        typer.echo(f"{g.number:>4}  {g.time}  node {g.node}  undo: {what}{state}")
    return ExitStatus.OK


@app.command()
def show(
    netns: NetnsOpt = None,
    route_proto: RouteProtoOpt = DEFAULT_ROUTE_PROTO,
    conf_file: Annotated[
        Path | None, typer.Option(help="Also show this conflist.", show_default=False)
    ] = None,
) -> int:
    """Print what kindplan owns on this node: its routes, SNAT chains and jumps.

    Example: kindplan show --netns kp-worker2
    """
    from kindplan.core.planview import route_text
    from kindplan.node.iptables import Iptables, detect_backend, read_masq
    from kindplan.node.kernel import Kernel
    from kindplan.node.netns import enter_netns

    with enter_netns(netns):
        kernel = Kernel()
        try:
            kernel.read_links()
            routes = [r for r in kernel.read_routes() if r.proto == route_proto]
        finally:
            kernel.close()
        iptables = Iptables(detect_backend())
        chains = [
            c
            for c in read_masq(iptables)
            if c.backend == iptables.backend or c.jumps or c.rules is not None
        ]
    typer.echo(f"routes with protocol {route_proto}: {len(routes)}")
    for route in routes:
        typer.echo(f"  {route_text(route)}")
    for chain in chains:
        table = "ip6tables" if chain.version == 6 else "iptables"
        if chain.rules is None:
            typer.echo(f"{table} nat: no KIND-MASQ-AGENT chain; {chain.jumps} jump(s)")
            continue
        typer.echo(
            f"{table} nat: KIND-MASQ-AGENT ({len(chain.rules)} rules), {chain.jumps} jump(s) "
            f"[{chain.backend or 'default'} backend"
            + ("]" if chain.backend == iptables.backend else ", not in use]")
        )
        for rule in chain.rules:
            typer.echo(f"  {rule}")
    if conf_file is not None:
        if conf_file.exists() and not conf_file.is_file():  # a FIFO would block the read
            raise RuntimeFailure(f"{conf_file}: cannot read: not a regular file")
        try:
            text = conf_file.read_bytes().decode("utf-8") if conf_file.exists() else None
        except OSError as e:
            raise RuntimeFailure(f"{conf_file}: cannot read: {e.strerror}") from e
        except UnicodeDecodeError as e:
            raise RuntimeFailure(f"{conf_file}: not UTF-8 text (byte {e.start})") from e
        typer.echo(f"{conf_file}: missing" if text is None else f"{conf_file}:")
        typer.echo(text or "", nl=False)
    return ExitStatus.OK


@app.command()
def trace(
    snapshot: SnapshotArg,
    from_: Annotated[
        str,
        typer.Option(
            "--from",
            help="Where the packet starts: a pod, a node, or an IP address.",
            show_default=False,
        ),
    ],
    to: Annotated[
        str,
        typer.Option(
            help="Where it goes: a pod (namespace/name or name), a node, or an IP.",
            show_default=False,
        ),
    ],
    port: Annotated[
        int | None,
        typer.Option(
            min=1, max=65535, help="Destination port (hostPorts match on it).", show_default=False
        ),
    ] = None,
    proto: Annotated[str, typer.Option(help="tcp or udp.")] = "tcp",
    family: Annotated[
        int | None,
        typer.Option(
            help="Only this IP family (4 or 6); default: every family both ends have.",
            show_default=False,
        ),
    ] = None,
    node_network: Annotated[
        list[str] | None,
        typer.Option(
            help="The nodes' own network (one per family), e.g. 172.18.0.0/16. "
            "Default: assumed, the smallest prefix holding every InternalIP.",
            show_default=False,
        ),
    ] = None,
    default_via: Annotated[
        list[str] | None,
        typer.Option(
            help="The nodes' default gateway (one per family). Default: unknown.",
            show_default=False,
        ),
    ] = None,
    uplink: Annotated[str, typer.Option(help="The nodes' uplink interface.")] = "eth0",
    node: Annotated[
        str | None,
        typer.Option(
            help="With --netns: this node's routes, addresses and SNAT chain as "
            "observed there, instead of desired.",
            show_default=False,
        ),
    ] = None,
    netns: NetnsOpt = None,
    cni_cache_dir: Annotated[
        str | None,
        typer.Option(
            help="With --node: that node's pods from libcni's result cache here.",
            show_default=False,
        ),
    ] = None,
    pod_subnet: PodSubnetOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the walk as JSON.")] = False,
    svg: Annotated[
        Path | None,
        typer.Option(
            help="Also draw nodes, pods and the path as SVG in this file.", show_default=False
        ),
    ] = None,
) -> int:
    """Walk a packet through the cluster hop by hop: routes, SNAT, hostPort DNAT, its end.

    Built on the compiled desired state, with no kernel access unless --node/--netns.

    Example: kindplan trace fixtures/seed-lab/snapshot.yaml --from web-1 --to web-0
    """
    import json

    from kindplan.core.trace import build_world, families, resolve, trace_packet
    from kindplan.core.traceview import format_trace, trace_to_json

    if proto not in ("tcp", "udp"):
        raise UsageError(f"--proto: {proto!r} is not tcp or udp")
    if family not in (None, 4, 6):
        raise UsageError(f"--family: {family} is not 4 or 6")
    if (node is None) != (netns is None):
        raise UsageError("--node and --netns go together (the node whose state --netns holds)")
    snap = _load(snapshot, pod_subnet)
    uplink_facts = _trace_uplink(uplink, node_network, default_via)
    observed: dict[str, ObservedState] = {}
    if node is not None:
        snap, observed = _trace_observed(snap, node, netns, cni_cache_dir)
    world = build_world(snap, uplink_facts, observed)
    source, target = resolve(snap, from_, "--from"), resolve(snap, to, "--to")
    traces = [
        trace_packet(world, source, target, v, port=port, proto=proto)
        for v in families(source, target, family)
    ]
    if json_out:
        typer.echo(json.dumps(trace_to_json(traces), indent=2))
    else:
        sys.stdout.write("\n".join(format_trace(t) for t in traces))
    if svg is not None:
        from kindplan.core.tracesvg import render_svg
        from kindplan.node.files import write_atomic

        write_atomic(svg, render_svg(snap, traces))
    return ExitStatus.OK


def _trace_uplink(name: str, networks: list[str] | None, gateways: list[str] | None) -> Uplink:
    from kindplan.core.model import parse_cidr, parse_ip
    from kindplan.core.trace import Uplink

    try:
        nets = tuple(parse_cidr(text) for text in _split(networks))
    except ValueError as e:
        raise InvalidInputError.one("--node-network", f"not a network: {e}") from None
    try:
        via = tuple(parse_ip(text) for text in _split(gateways))
    except ValueError as e:
        raise InvalidInputError.one("--default-via", f"not an address: {e}") from None
    return Uplink(name, nets, via)


def _trace_observed(
    snap: Snapshot, node: str, netns: str | None, cni_cache_dir: str | None
) -> tuple[Snapshot, dict[str, ObservedState]]:
    from kindplan.core.compiler import find_node
    from kindplan.node.iptables import Iptables, detect_backend
    from kindplan.node.kernel import Kernel
    from kindplan.node.netns import enter_netns
    from kindplan.node.observe import read_routing

    find_node(snap, node)
    if cni_cache_dir is not None:
        from kindplan.node.cnicache import read_cni_cache, with_local_pods

        pods, problems = read_cni_cache(Path(cni_cache_dir), node, snap.cluster.cni.network_name)
        snap, skipped = with_local_pods(snap, node, pods)
        for warning in [*problems, *skipped]:
            typer.echo(f"warning: {warning}", err=True)
    with enter_netns(netns):
        kernel = Kernel()
        try:
            state = read_routing(kernel, Iptables(detect_backend()), snap.families)
        finally:
            kernel.close()
    return snap, {node: state}


lab_app = typer.Typer(
    help="The kindnet guide's 3-node lab, built from network namespaces with the real CNI plugins.",
    no_args_is_help=True,
)
app.add_typer(lab_app, name="lab")
LabNameOpt = Annotated[
    str,
    typer.Option("--name", help="Prefix of everything this lab creates (several labs coexist)."),
]
LabStateOpt = Annotated[Path, typer.Option("--state-dir", help="Where labs keep their files.")]
DEFAULT_LAB_STATE = Path("/run/kindplan-lab")


def _lab_needs_root(command: str, what: str) -> None:
    from kindplan.node.netns import CAP_NET_ADMIN, CAP_SYS_ADMIN, require_caps

    needs = {CAP_SYS_ADMIN: f"to {what}"}
    if command != "lab down":
        needs[CAP_NET_ADMIN] = "to read and change their routes, addresses and iptables"
    require_caps(command, needs)


@lab_app.command("up")
def lab_up(
    name: LabNameOpt = "kp",
    nodes: Annotated[int, typer.Option(min=1, max=200, help="Number of nodes.")] = 3,
    pods_per_node: Annotated[int, typer.Option(min=0, max=50, help="Pods per node.")] = 2,
    dual_stack: Annotated[bool, typer.Option("--dual-stack", help="IPv4 and IPv6.")] = False,
    kindnetd: Annotated[
        bool,
        typer.Option(
            "--kindnetd",
            help="Leave the nodes as classic kindnetd does (its routes, stale ones included) "
            "instead of applying kindplan: the take-over scenario, for lab apply NODE --adopt.",
        ),
    ] = False,
    state_dir: LabStateOpt = DEFAULT_LAB_STATE,
) -> int:
    """Build the lab, apply kindplan on every node, create pods with ptp + portmap.

    Example: kindplan lab up && kindplan lab check && kindplan lab down
    """
    _lab_needs_root("lab up", "create and enter the lab's network namespaces")
    import time

    from kindplan.core.planview import plural
    from kindplan.lab.run import up

    started = time.monotonic()
    lab = up(name, state_dir, nodes, pods_per_node, dual_stack, say=typer.echo, kindnetd=kindnetd)
    typer.echo(
        f"lab {lab.name} is up in {time.monotonic() - started:.1f} s: "
        f"{plural(len(lab.nodes), 'node')}, {plural(len(lab.pods), 'pod')}"
        + (", dual-stack" if lab.dual_stack else "")
        + f"; snapshot {lab.snapshot_path}"
    )
    for node in lab.nodes:
        typer.echo(
            f"  {node.name:<26} ns {node.ns:<10} {', '.join(node.ips):<40} "
            f"pods {', '.join(node.pod_cidrs)}"
        )
    return ExitStatus.OK


@lab_app.command("check")
def lab_check(name: LabNameOpt = "kp", state_dir: LabStateOpt = DEFAULT_LAB_STATE) -> int:
    """Prove it works: pod to pod, the hops between, SNAT to the outside host, hostPorts."""
    _lab_needs_root("lab check", "enter the lab's network namespaces")
    from kindplan.lab.check import check
    from kindplan.lab.topology import load

    results = check(load(name, state_dir))
    for result in results:
        typer.echo(f"{'pass' if result.ok else 'FAIL'}  {result.what}")
    failed = sum(not r.ok for r in results)
    typer.echo(f"{len(results) - failed} passed, {failed} failed")
    return ExitStatus.FAILURE if failed else ExitStatus.OK


@lab_app.command("down")
def lab_down(name: LabNameOpt = "kp", state_dir: LabStateOpt = DEFAULT_LAB_STATE) -> int:
    """Remove every namespace and file of the lab."""
    _lab_needs_root("lab down", "delete the lab's network namespaces")
    from kindplan.core.planview import plural
    from kindplan.lab.run import down

    removed = down(name, state_dir)
    typer.echo(f"lab {name}: removed {plural(len(removed), 'namespace')}")
    return ExitStatus.OK


@lab_app.command("plan")
def lab_plan(
    node: Annotated[str, typer.Argument(help="A lab node, e.g. k8s-guide-worker2.")],
    name: LabNameOpt = "kp",
    state_dir: LabStateOpt = DEFAULT_LAB_STATE,
    detailed_exitcode: Annotated[
        bool, typer.Option("--detailed-exitcode", help="Exit 2 when there are changes.")
    ] = False,
) -> int:
    """kindplan plan on a lab node, with its pods from the node's CNI cache."""
    _lab_needs_root("lab plan", "enter the lab's network namespaces")
    from kindplan.core.planview import format_plan
    from kindplan.lab.run import plan_lab_node
    from kindplan.lab.topology import load

    lab = load(name, state_dir)
    planned = plan_lab_node(lab, lab.node(node))
    sys.stdout.write(format_plan(planned.plan, color=sys.stdout.isatty()))
    pending = not planned.plan.empty or bool(planned.plan.conflicts)
    return ExitStatus.CHANGES_PENDING if detailed_exitcode and pending else ExitStatus.OK


@lab_app.command("apply")
def lab_apply(
    node: Annotated[str, typer.Argument(help="A lab node.")],
    name: LabNameOpt = "kp",
    state_dir: LabStateOpt = DEFAULT_LAB_STATE,
    adopt: AdoptOpt = False,
) -> int:
    """kindplan apply on a lab node (the same code as kindplan apply --netns)."""
    _lab_needs_root("lab apply", "enter the lab's network namespaces")
    from kindplan.core.planview import format_plan
    from kindplan.lab.run import apply_lab_node
    from kindplan.lab.topology import load

    lab = load(name, state_dir)
    planned, report = apply_lab_node(lab, lab.node(node), adopt=adopt)
    if report is None:
        sys.stdout.write(format_plan(planned.plan))
        return ExitStatus.OK
    _say_each("applied", report.applied)
    for failure in report.failures:
        typer.echo(f"error: {failure}", err=True)
    return ExitStatus.OK if report.ok else ExitStatus.FAILURE


@lab_app.command(
    "exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
def lab_exec(
    ctx: typer.Context,
    node: Annotated[
        str, typer.Argument(help="A lab node, a pod (web-I-K), 'bridge' or 'outside'.")
    ],
    name: LabNameOpt = "kp",
    state_dir: LabStateOpt = DEFAULT_LAB_STATE,
) -> int:
    """Run a command in a lab namespace: kindplan lab exec k8s-guide-worker -- ip route"""
    _lab_needs_root("lab exec", "enter the lab's network namespaces")
    import subprocess

    from kindplan.lab.topology import load

    lab = load(name, state_dir)
    namespaces = {"bridge": lab.bridge_ns, "outside": lab.outside_ns}
    namespaces |= {n.name: n.ns for n in lab.nodes} | {p.name: p.ns for p in lab.pods}
    if node not in namespaces:
        raise UsageError(f"lab {name} has no node or pod {node!r}")
    if not ctx.args:
        raise UsageError("give a command after --")
    return subprocess.run(
        ["ip", "netns", "exec", namespaces[node], *ctx.args], check=False
    ).returncode


@lab_app.command("trace")
def lab_trace(
    source: Annotated[str, typer.Argument(help="A lab pod (web-I-K) or node, or an IP.")],
    target: Annotated[
        str, typer.Argument(help="A lab pod or node, 'outside' (the outside host), or an IP.")
    ],
    port: Annotated[int, typer.Option(min=1, max=65535, help="Destination port.")] = 7000,
    proto: Annotated[str, typer.Option(help="tcp or udp (the listener's protocol).")] = "tcp",
    family: Annotated[
        int | None, typer.Option(help="Only IPv4 (4) or IPv6 (6).", show_default=False)
    ] = None,
    name: LabNameOpt = "kp",
    state_dir: LabStateOpt = DEFAULT_LAB_STATE,
) -> int:
    """kindplan's walk compared hop by hop with the kernel (ip route get) and a listener at the
    end; exit 1 at the first hop where they part.

    Example: kindplan lab trace web-2-0 web-0-0
    """
    from kindplan.lab.topology import load
    from kindplan.lab.trace import compare, lab_traces

    if family not in (None, 4, 6):
        raise UsageError(f"--family: {family} is not 4 or 6")
    if proto not in ("tcp", "udp"):
        raise UsageError(f"--proto: {proto!r} is not tcp or udp")
    lab = load(name, state_dir)
    parted = 0
    for t in lab_traces(lab, source, target, port, family=family, proto=proto):
        typer.echo(
            f"IPv{t.version} {t.proto}/{t.port}: {t.source.label} -> {t.target.label}: "
            f"{t.end.kind} at {t.end.at}"
        )
        for verdict in compare(lab, t):
            detail = f" ({verdict.detail})" if verdict.detail else ""
            if verdict.same:
                typer.echo(f"  same  {verdict.where}: {verdict.plan}{detail}")
            else:
                parted += 1
                typer.echo(
                    f"  DIFF  {verdict.where}: plan {verdict.plan}; kernel {verdict.kernel}{detail}"
                )
    if parted:
        typer.echo(f"plan and kernel part at {parted} point(s)")
        return ExitStatus.FAILURE
    typer.echo("plan and kernel agree at every hop")
    return ExitStatus.OK


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app and map every outcome to an exit status (status.py)."""
    # A one-shot command keeps what it allocates until it ends (a 5,000-node snapshot and its
    # plan are some 200,000 objects without reference cycles): the cyclic collector would walk
    # them again and again for nothing, about a tenth of a full apply's time, measured. The
    # watch loop, which lives on, collects again (and freezes each snapshot instead).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _run(argv)
    finally:
        if collecting:  # main() may run inside a longer-lived process (the tests)
            gc.enable()


def _run(argv: list[str] | None) -> int:
    try:
        result = app(args=argv, prog_name="kindplan", standalone_mode=False)
    except ClickUsageError as e:
        e.show()
        return ExitStatus.USAGE
    except ClickException as e:
        e.show()
        return ExitStatus.FAILURE
    except typer.Abort:
        typer.echo("aborted", err=True)
        return ExitStatus.FAILURE
    except InvalidInputError as e:
        for problem in e.problems:
            typer.echo(f"error: {problem}", err=True)
        return ExitStatus.INVALID_INPUT
    except UsageError as e:
        typer.echo(f"error: {one_line(str(e))}", err=True)  # paths from flags may hold newlines
        return ExitStatus.USAGE
    except Interrupted as e:
        typer.echo(f"error: {one_line(str(e))}", err=True)
        return ExitStatus.INTERRUPTED
    except KeyboardInterrupt:  # a second Ctrl-C: every undo sent is on disk already
        typer.echo("error: interrupted; kindplan history shows what the journal holds", err=True)
        return ExitStatus.INTERRUPTED
    except KindplanError as e:
        typer.echo(f"error: {one_line(str(e))}", err=True)
        return ExitStatus.FAILURE
    return int(result) if isinstance(result, int) else ExitStatus.OK

