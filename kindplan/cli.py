"""The command line: the only module that reads arguments, prints, and turns errors into exits."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

try:  # recent typer carries its own copy of click
    from typer._click.exceptions import ClickException
    from typer._click.exceptions import UsageError as ClickUsageError
except ImportError:  # pragma: no cover - older typer on real click
    from click.exceptions import ClickException  # type: ignore[assignment]
    from click.exceptions import UsageError as ClickUsageError  # type: ignore[assignment]

from kindplan import __version__
from kindplan.errors import InvalidInputError, KindplanError, Problem, UsageError
from kindplan.model import DEFAULT_MTU, DEFAULT_ROUTE_PROTO, HostFacts
from kindplan.status import ExitStatus

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


def _warn(problems: tuple[Problem, ...] | list[Problem]) -> None:
    for problem in problems:
        typer.echo(f"warning: {problem}", err=True)


def _load(path: str, pod_subnets: list[str] | None):  # type: ignore[no-untyped-def]
    from kindplan.sources import load_snapshot

    loaded = load_snapshot(path, pod_subnets=_split(pod_subnets))
    _warn(loaded.warnings)
    return loaded.snapshot


@app.command()
def validate(
    snapshot: SnapshotArg,
    pod_subnet: PodSubnetOpt = None,
    node: Annotated[
        str | None, typer.Option(help="Also check that this node is in the snapshot.")
    ] = None,
) -> int:
    """Check a snapshot: schema, then meaning (CIDRs, overlaps, duplicates, pods). Exit 65 if bad.

    Example: kindplan validate fixtures/seed-lab/snapshot.yaml
    """
    from kindplan.compiler import find_node

    snap = _load(snapshot, pod_subnet)
    if node is not None:
        find_node(snap, node)
    families = "dual-stack" if len(snap.families) == 2 else f"IPv{snap.families[0]}"
    typer.echo(f"ok: {len(snap.nodes)} nodes, {len(snap.pods)} pods, {families}")
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
    route_proto: Annotated[
        int,
        typer.Option(min=1, max=255, help="Route protocol number that marks kindplan's routes."),
    ] = DEFAULT_ROUTE_PROTO,
    pod_subnet: PodSubnetOpt = None,
) -> int:
    """Write a node's conflist, route batch and iptables-restore payloads; no kernel access.

    Files: the conflist (cluster.cni.confFile, default 10-kindnet.conflist), routes.batch
    (for ip -batch), iptables.rules and ip6tables.rules (for iptables-restore --noflush).

    Examples:

      kindplan render fixtures/seed-lab/snapshot.yaml --node k8s-guide-worker2 --out out/

      kindplan render fixtures/seed-lab/snapshot.yaml --all-nodes --check fixtures/seed-lab/expected
    """
    from kindplan.compiler import compile_desired
    from kindplan.files import diff_tree, write_tree
    from kindplan.render import render_files

    if (node is None) == (not all_nodes):
        raise UsageError("give exactly one of --node NAME and --all-nodes")
    if (out is None) == (check is None):
        raise UsageError("give exactly one of --out DIR and --check DIR")
    snap = _load(snapshot, pod_subnet)
    facts = HostFacts(uplink=uplink, mtu=mtu or snap.cluster.mtu or DEFAULT_MTU)
    names = [n.name for n in snap.nodes] if all_nodes else [str(node)]
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
        typer.echo(f"render: {check} is up to date ({len(files)} files)")
        return ExitStatus.OK
    assert out is not None
    changed = write_tree(out, files)
    typer.echo(f"render: wrote {len(files)} files to {out} ({len(changed)} changed)")
    return ExitStatus.OK


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app and map every outcome to an exit status (DESIGN.md)."""
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
        typer.echo(f"error: {e}", err=True)
        return ExitStatus.USAGE
    except KindplanError as e:
        typer.echo(f"error: {e}", err=True)
        return ExitStatus.FAILURE
    return int(result) if isinstance(result, int) else ExitStatus.OK


if __name__ == "__main__":
    sys.exit(main())
