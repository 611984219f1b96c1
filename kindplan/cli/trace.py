"""trace: a packet's walk through the cluster, built on the compiled desired state (or a node's
observed state, with --node and --netns)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kindplan.cli.applyonce import known_node
from kindplan.cli.inputs import load
from kindplan.cli.options import MasqBackendOpt, NetnsOpt, PodSubnetOpt, SnapshotArg, TraceArgs
from kindplan.cli.target import split
from kindplan.errors import UsageError
from kindplan.status import ExitStatus

if TYPE_CHECKING:
    from kindplan.core.model import ObservedState, Snapshot
    from kindplan.core.trace import Trace
    from kindplan.core.traceworld import Uplink


def trace(  # noqa: PLR0913, PLR0917 - typer: a parameter per option
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
    masq_backend: MasqBackendOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the walk as JSON.")] = False,
    svg: Annotated[
        Path | None,
        typer.Option(
            help="Also draw nodes, pods and the path as SVG in this file.", show_default=False
        ),
    ] = None,
    detailed_exitcode: Annotated[
        bool,
        typer.Option(
            "--detailed-exitcode",
            help="Exit 0 delivered (or leaves the cluster), 2 dropped, 3 drift (a node with "
            "--node/--netns chose otherwise than desired).",
        ),
    ] = False,
) -> int:
    """Walk a packet through the cluster hop by hop: routes, SNAT, hostPort DNAT, its end.

    Built on the compiled desired state, with no kernel access unless --node/--netns.

    Example: kindplan trace fixtures/seed-lab/snapshot.yaml --from web-1 --to web-0
    """
    args = TraceArgs(
        snapshot=snapshot,
        pod_subnets=split(pod_subnet),
        from_=from_,
        to=to,
        port=port,
        proto=proto,
        family=family,
        node_networks=split(node_network),
        default_via=split(default_via),
        uplink=uplink,
        node=node,
        netns=netns,
        cni_cache_dir=cni_cache_dir,
        json_out=json_out,
        svg=svg,
        detailed_exitcode=detailed_exitcode,
        masq_backend=masq_backend,
    )
    return _trace(args)


def _trace(args: TraceArgs) -> int:
    import json

    from kindplan.core.trace import trace_packet
    from kindplan.core.traceview import format_trace, trace_to_json
    from kindplan.core.traceworld import build_world, families, resolve

    if args.proto not in ("tcp", "udp"):
        raise UsageError(f"--proto: {args.proto!r} is not tcp or udp")
    if args.family not in (None, 4, 6):
        raise UsageError(f"--family: {args.family} is not 4 or 6")
    if (args.node is None) != (args.netns is None):
        raise UsageError("--node and --netns go together (the node whose state --netns holds)")
    snap = load(args.snapshot, args.pod_subnets)
    if args.masq_backend is not None:  # the desired nodes' masquerade: in the backend asked
        from dataclasses import replace

        snap = replace(snap, cluster=replace(snap.cluster, masq_backend=args.masq_backend))
    uplink_facts = _trace_uplink(args)
    observed: dict[str, ObservedState] = {}
    if args.node is not None:
        snap, observed = _trace_observed(snap, args.node, args.netns, args.cni_cache_dir)
    world = build_world(snap, uplink_facts, observed)
    source, target = resolve(snap, args.from_, "--from"), resolve(snap, args.to, "--to")
    traces = [
        trace_packet(world, source, target, v, port=args.port, proto=args.proto)
        for v in families(source, target, args.family)
    ]
    if args.json_out:
        typer.echo(json.dumps(trace_to_json(traces), indent=2))
    else:
        sys.stdout.write("\n".join(format_trace(t) for t in traces))
    if args.svg is not None:
        from kindplan.core.tracesvg import render_svg
        from kindplan.node.files import write_output

        write_output(args.svg, render_svg(snap, traces), "--svg")
    return outcome(traces) if args.detailed_exitcode else ExitStatus.OK


def outcome(traces: list[Trace]) -> ExitStatus:
    """trace --detailed-exitcode: drift (3) before a drop (2), as the drift may be its cause."""
    if any(hop.drift for t in traces for hop in t.hops):
        return ExitStatus.DRIFT
    if any(t.end.kind == "dropped" for t in traces):
        return ExitStatus.DROPPED
    return ExitStatus.OK


def _trace_uplink(args: TraceArgs) -> Uplink:
    """The nodes' uplink as --uplink, --node-network and --default-via describe it."""
    from kindplan.core.addresses import parse_cidr, parse_ip
    from kindplan.core.snapshot import why_not_cidr
    from kindplan.core.traceworld import Uplink

    nets = []
    for text in args.node_networks:
        try:
            nets.append(parse_cidr(text))
        except ValueError:
            raise UsageError(
                f"--node-network: {text!r} is no network ({why_not_cidr(text)})"
            ) from None
    try:
        via = tuple(parse_ip(text) for text in args.default_via)
    except ValueError as e:
        raise UsageError(f"--default-via: not an address: {e}") from None
    return Uplink(args.uplink, tuple(nets), via)


def _trace_observed(
    snap: Snapshot, node: str, netns: str | None, cni_cache_dir: str | None
) -> tuple[Snapshot, dict[str, ObservedState]]:
    from kindplan.node.observe import read_routing
    from kindplan.node.opener import open_node

    known_node(snap, node)
    if cni_cache_dir is not None:
        from kindplan.node.cnicache import read_cni_cache, with_local_pods

        pods, problems = read_cni_cache(Path(cni_cache_dir), node, snap.cluster.cni.network_name)
        snap, skipped = with_local_pods(snap, node, pods)
        for warning in [*problems, *skipped]:
            typer.echo(f"warning: {warning}", err=True)
    with open_node(netns, None) as handles:  # a read: no lock
        state = read_routing(handles.kernel, handles.iptables, snap.families)
    return snap, {node: state}
