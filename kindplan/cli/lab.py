"""kindplan lab: the kindnet guide's lab built from network namespaces, and kindplan's commands run
on its nodes (up, check, down, plan, apply, exec, trace)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from kindplan.cli.applyonce import say_each
from kindplan.cli.options import AdoptOpt, CrossSubnetOpt, MasqBackendOpt, RouteStyleOpt
from kindplan.cli.usage import Command, ExecCommand
from kindplan.errors import UsageError
from kindplan.status import ExitStatus

lab_app = typer.Typer(
    help="The kindnet guide's 3-node lab, built from network namespaces with the real CNI plugins.",
    no_args_is_help=True,
)
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


@lab_app.command("up", cls=Command)
def lab_up(  # noqa: PLR0913, PLR0917 - typer: a parameter per option
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
    masq_backend: MasqBackendOpt = None,
    segments: Annotated[
        int,
        typer.Option(
            min=1,
            max=2,
            help="L2 segments (subnets) joined by a router; nodes spread over them.",
            metavar="N",
        ),
    ] = 1,
    cross_subnet: CrossSubnetOpt = None,
    route_style: RouteStyleOpt = None,
    cluster: Annotated[
        Path | None,
        typer.Option(
            "--cluster",
            help="A kubectl List of Nodes, Namespaces and Pods (JSON or YAML): the lab's nodes "
            "and labelled pods, for lab policy and lab probe (--nodes, --pods-per-node unused).",
            metavar="FILE",
            show_default=False,
        ),
    ] = None,
) -> int:
    """Build the lab, apply kindplan on every node, create pods with ptp + portmap.

    Example: kindplan lab up && kindplan lab check && kindplan lab down
    """
    import time

    from kindplan.core.planview import plural
    from kindplan.lab.cluster import load_cluster
    from kindplan.lab.run import up, up_cluster
    from kindplan.lab.topology import Dataplane

    model = load_cluster(cluster) if cluster is not None else None  # bad input: before root
    if model is not None and kindnetd:
        raise UsageError("--cluster and --kindnetd: choose one")
    _lab_needs_root("lab up", "create and enter the lab's network namespaces")
    started = time.monotonic()
    dataplane = Dataplane(segments, cross_subnet or "none", masq_backend, route_style)
    if model is not None:
        lab = up_cluster(name, state_dir, model, dual_stack, say=typer.echo, segments=dataplane)
    else:
        lab = up(
            name,
            state_dir,
            nodes,
            pods_per_node,
            dual_stack,
            say=typer.echo,
            kindnetd=kindnetd,
            segments=dataplane,
        )
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


@lab_app.command("check", cls=Command)
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


@lab_app.command("policy", cls=Command)
def lab_policy(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="NetworkPolicy files: a List or one object each, JSON or YAML.",
            metavar="FILE...",
        ),
    ],
    name: LabNameOpt = "kp",
    state_dir: LabStateOpt = DEFAULT_LAB_STATE,
) -> int:
    """Replace the lab's NetworkPolicies with those in the files (a List with no items clears
    them) and apply kindplan on every node.

    Example: kindplan lab policy --name np deny-all.yaml
    """
    from kindplan.lab.cluster import load_policies
    from kindplan.lab.run import set_policies
    from kindplan.lab.topology import load

    policies = load_policies(files)
    _lab_needs_root("lab policy", "enter the lab's network namespaces")
    set_policies(load(name, state_dir), policies, typer.echo)
    return ExitStatus.OK


@lab_app.command("label", cls=Command)
def lab_label(
    target: Annotated[str, typer.Argument(help="A pod (ns/name) or a namespace (name).")],
    changes: Annotated[
        list[str],
        typer.Argument(help="KEY=VALUE sets a label, KEY- removes it.", metavar="KEY=VALUE..."),
    ],
    name: LabNameOpt = "kp",
    state_dir: LabStateOpt = DEFAULT_LAB_STATE,
) -> int:
    """Change a pod's or a namespace's labels in the lab (as kubectl label does) and apply
    kindplan on every node.

    Example: kindplan lab label --name np x/b pod2=updated
    """
    from kindplan.lab.run import set_labels
    from kindplan.lab.topology import load

    _lab_needs_root("lab label", "enter the lab's network namespaces")
    set_labels(load(name, state_dir), target, changes, typer.echo)
    return ExitStatus.OK


@lab_app.command("probe", cls=Command)
def lab_probe(
    port: Annotated[int, typer.Option(min=1, max=65535, help="The port probed on every pod.")],
    protocol: Annotated[str, typer.Option(help="TCP or UDP.", metavar="TCP|UDP")] = "TCP",
    as_json: Annotated[bool, typer.Option("--json", help="The matrix as JSON.")] = False,
    name: LabNameOpt = "kp",
    state_dir: LabStateOpt = DEFAULT_LAB_STATE,
) -> int:
    """Every pod to every pod with real connections; the matrix as the upstream e2e suite
    prints it (rows from, columns to, . reachable, X not).

    Example: kindplan lab probe --name np --port 80 --protocol UDP
    """
    import json

    from kindplan.lab.matrix import as_json as matrix_json
    from kindplan.lab.matrix import format_text, probe
    from kindplan.lab.policy import probe_pods
    from kindplan.lab.topology import load

    if protocol.upper() not in ("TCP", "UDP"):
        raise UsageError(f"--protocol: {protocol!r} is not TCP or UDP")
    _lab_needs_root("lab probe", "enter the lab's network namespaces")
    result = probe(probe_pods(load(name, state_dir)), port, protocol.upper())
    if as_json:
        typer.echo(json.dumps(matrix_json(result), indent=2))
    else:
        sys.stdout.write(format_text(result))
    return ExitStatus.OK


@lab_app.command("down", cls=Command)
def lab_down(name: LabNameOpt = "kp", state_dir: LabStateOpt = DEFAULT_LAB_STATE) -> int:
    """Remove every namespace and file of the lab."""
    _lab_needs_root("lab down", "delete the lab's network namespaces")
    from kindplan.core.planview import plural
    from kindplan.lab.run import down

    removed = down(name, state_dir)
    typer.echo(f"lab {name}: removed {plural(len(removed), 'namespace')}")
    return ExitStatus.OK


@lab_app.command("plan", cls=Command)
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
    from kindplan.lab.run import lab_snapshot, plan_lab_node
    from kindplan.lab.topology import load
    from kindplan.node.engine import policy_facts

    lab = load(name, state_dir)
    planned = plan_lab_node(lab, lab.node(node))
    policy = policy_facts(planned, lab_snapshot(lab))
    sys.stdout.write(format_plan(planned.plan, color=sys.stdout.isatty(), policy=policy))
    pending = not planned.plan.empty or bool(planned.plan.conflicts)
    return ExitStatus.CHANGES_PENDING if detailed_exitcode and pending else ExitStatus.OK


@lab_app.command("apply", cls=Command)
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
    say_each("applied", report.applied_texts)
    for failure in report.failures:
        typer.echo(f"error: {failure}", err=True)
    return ExitStatus.OK if report.ok else ExitStatus.FAILURE


@lab_app.command("snapshot", cls=Command)
def lab_snapshot(name: LabNameOpt = "kp", state_dir: LabStateOpt = DEFAULT_LAB_STATE) -> int:
    """Print the lab's snapshot with every pod and hostPort (from the nodes' CNI caches), as
    JSON: a file kindplan trace walks as lab trace does.

    Example: kindplan lab snapshot > lab-with-pods.json
    """
    import json

    from kindplan.lab.run import snapshot_with_pods
    from kindplan.lab.topology import load

    typer.echo(json.dumps(snapshot_with_pods(load(name, state_dir)), indent=2))
    return ExitStatus.OK


@lab_app.command(
    "exec",
    cls=ExecCommand,
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def lab_exec(
    ctx: typer.Context,
    node: Annotated[
        str,
        typer.Argument(help="A lab node, a pod (web-I-K, or ns/name), 'bridge' or 'outside'."),
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
    namespaces |= {n.name: n.ns for n in lab.nodes} | {p.label: p.ns for p in lab.pods}
    if node not in namespaces:
        raise UsageError(f"lab {name} has no node or pod {node!r}")
    if not ctx.args:
        raise UsageError("give a command after --")
    return subprocess.run(
        ["ip", "netns", "exec", namespaces[node], *ctx.args], check=False
    ).returncode


@lab_app.command("trace", cls=Command)
def lab_trace(  # noqa: PLR0917 - typer: a parameter per option
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
    """kindplan's walk compared hop by hop with the kernel (ip route get) and a real connection
    to a listener at the end (which also judges a NetworkPolicy verdict: the policy line); exit 1
    where they part.

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
            parted += not verdict.same
            typer.echo(f"  {'same' if verdict.same else 'DIFF'}  {verdict.text()}")
    if parted:
        typer.echo(f"plan and kernel part at {parted} point(s)")
        return ExitStatus.FAILURE
    typer.echo("plan and kernel agree at every hop")
    return ExitStatus.OK
