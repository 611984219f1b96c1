"""The snapshot in: reading and parsing it for every command, and the two commands that need
nothing else (validate, render)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kindplan.cli.applyonce import known_node, parse
from kindplan.cli.options import (
    CrossSubnetOpt,
    MasqBackendOpt,
    NoMasqueradeOpt,
    PodSubnetOpt,
    RenderArgs,
    RouteProtoOpt,
    SnapshotArg,
)
from kindplan.cli.target import split
from kindplan.core.routes import DEFAULT_MTU, DEFAULT_ROUTE_PROTO
from kindplan.errors import UsageError
from kindplan.status import ExitStatus

if TYPE_CHECKING:
    from kindplan.core.addresses import IPNetwork
    from kindplan.core.model import HostFacts, Snapshot


def load(path: str, pod_subnets: tuple[str, ...], *, strict: bool = False) -> Snapshot:
    from kindplan.inputs.sources import read_input

    return parse(read_input(path, pod_subnets), strict=strict)


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
    snap = load(snapshot, split(pod_subnet), strict=strict)
    if node is not None:
        known_node(snap, node)
    from kindplan.core.planview import plural

    families = "dual-stack" if len(snap.families) == 2 else f"IPv{snap.families[0]}"
    nodes, pods = plural(len(snap.nodes), "node"), plural(len(snap.pods), "pod")
    typer.echo(f"ok: {nodes}, {pods}, {families}")
    return ExitStatus.OK


def render(  # noqa: PLR0913, PLR0917 - typer: a parameter per option
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
            help="Write the files to this folder (created if missing).",
            show_default=False,
            metavar="DIR",
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
    cross_subnet: CrossSubnetOpt = None,
    node_network: Annotated[
        list[str] | None,
        typer.Option(
            help="The nodes' networks (CIDR; repeat or separate with commas): a node's uplink "
            "is the one holding its InternalIP, and a peer on none of its networks is off-link "
            "(with --cross-subnet vxlan: tunneled). Default: every peer on-link.",
            show_default=False,
        ),
    ] = None,
    pod_subnet: PodSubnetOpt = None,
    masq_backend: MasqBackendOpt = None,
    no_masquerade_cidr: NoMasqueradeOpt = None,
) -> int:
    """Write a node's conflist, route batch and iptables-restore payloads; no kernel access.

    Files: the conflist (cluster.cni.confFile, default 10-kindnet.conflist), routes.batch
    (for ip -batch), iptables.rules and ip6tables.rules (for iptables-restore --noflush), or
    with --masq-backend nftables ip-kindplan-masq.nft and ip6-kindplan-masq.nft (for nft -f),
    and policy.nft (for nft -f) when the snapshot has NetworkPolicies.

    Examples:

      kindplan render fixtures/seed-lab/snapshot.yaml --node k8s-guide-worker2 --out out/

      kindplan render fixtures/seed-lab/snapshot.yaml --all-nodes --check fixtures/seed-lab/expected
    """
    args = RenderArgs(
        snapshot=snapshot,
        pod_subnets=split(pod_subnet),
        node=node,
        all_nodes=all_nodes,
        out=out,
        check=check,
        uplink=uplink,
        mtu=mtu,
        route_proto=route_proto,
        masq_backend=masq_backend,
        no_masquerade=split(no_masquerade_cidr),
        cross_subnet=cross_subnet,
        node_networks=split(node_network),
    )
    return _render(args)


def _render(args: RenderArgs) -> int:
    from kindplan.core.planview import plural
    from kindplan.node.files import diff_tree, write_tree

    if (args.node is None) == (not args.all_nodes):
        raise UsageError("give exactly one of --node NAME and --all-nodes")
    if (args.out is None) == (args.check is None):
        raise UsageError("give exactly one of --out DIR and --check DIR")
    files = _rendered(args)
    if args.check is not None:
        diff = diff_tree(args.check, files)
        if diff:
            sys.stdout.write(diff)
            typer.echo(f"render: {args.check} differs from the rendered files", err=True)
            typer.echo(f"hint: to render them again: {_render_again(args)}", err=True)
            return ExitStatus.FAILURE
        typer.echo(f"render: {args.check} is up to date ({plural(len(files), 'file')})")
        return ExitStatus.OK
    assert args.out is not None
    changed = write_tree(args.out, files, "--out")
    typer.echo(f"render: wrote {plural(len(files), 'file')} to {args.out} ({len(changed)} changed)")
    return ExitStatus.OK


def _render_again(args: RenderArgs) -> str:
    """The command that writes what --check expected (a pre-commit hook's refusal says it)."""
    import shlex

    words = ["kindplan", "render", args.snapshot]
    words += ["--all-nodes"] if args.all_nodes else ["--node", str(args.node)]
    words += [w for subnet in args.pod_subnets for w in ("--pod-subnet", subnet)]
    if args.uplink != "eth0":
        words += ["--uplink", args.uplink]
    if args.mtu is not None:
        words += ["--mtu", str(args.mtu)]
    if args.route_proto != DEFAULT_ROUTE_PROTO:
        words += ["--route-proto", str(args.route_proto)]
    if args.masq_backend is not None:
        words += ["--masq-backend", args.masq_backend]
    words += [w for net in args.no_masquerade for w in ("--no-masquerade-cidr", net)]
    if args.cross_subnet is not None:
        words += ["--cross-subnet", args.cross_subnet]
    words += [w for net in args.node_networks for w in ("--node-network", net)]
    return shlex.join([*words, "--out", str(args.check)])


def _rendered(args: RenderArgs) -> dict[str, str]:
    """The files of the node, or of every node (one folder each), by their relative paths."""
    from kindplan.core.addresses import parse_cidr
    from kindplan.core.compiler import (
        compile_desired,
        find_node,
        masq_backend,
        route_style_families,
    )
    from kindplan.core.model import HostFacts
    from kindplan.core.render import render_files

    snap = load(args.snapshot, args.pod_subnets)
    facts = HostFacts(uplink=args.uplink, mtu=args.mtu or snap.cluster.mtu or DEFAULT_MTU)
    # Every node that has a PodCIDR: one without (joining) has no conflist; --node renders it.
    names = [n.name for n in snap.nodes if n.pod_cidrs] if args.all_nodes else [str(args.node)]
    if not names:  # a live cluster's node list may have no node with a PodCIDR yet
        typer.echo("warning: --all-nodes: no node has a PodCIDR yet: nothing to render", err=True)
    if not args.all_nodes:
        known_node(snap, names[0])
    files: dict[str, str] = {}
    backend = masq_backend(args.masq_backend or snap.cluster.masq_backend, None)
    extra = tuple(map(parse_cidr, args.no_masquerade))
    networks = _node_networks(args.node_networks)
    for name in names:
        # A node's kernel is not asked: nexthop objects are taken to be there (Linux 5.3+).
        families = route_style_families(snap, find_node(snap, name), None, True)
        desired = compile_desired(
            snap,
            name,
            _facts_of(snap, name, facts, networks),
            route_proto=args.route_proto,
            masq_backend=backend,
            no_masquerade=extra,
            cross_subnet=args.cross_subnet,
            nexthop_families=families,
        )
        prefix = f"{name}/" if args.all_nodes else ""
        files.update({prefix + f: text for f, text in render_files(desired).items()})
    return files


def _node_networks(texts: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    from kindplan.core.addresses import parse_cidr

    networks = []
    for text in texts:
        try:
            networks.append(parse_cidr(text))
        except ValueError as e:
            raise UsageError(f"--node-network: {text!r}: {e}") from None
    return tuple(networks)


def _facts_of(
    snap: Snapshot, name: str, facts: HostFacts, networks: tuple[IPNetwork, ...]
) -> HostFacts:
    """`facts` with the node's own networks: those of --node-network holding its InternalIPs."""
    from dataclasses import replace

    node = snap.node(name)
    if node is None or not networks:
        return facts
    own = tuple(n for n in networks for ip in node.internal_ips if ip in n)
    return replace(facts, networks=own)
