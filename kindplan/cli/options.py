"""The options several commands share: their typer declarations and checks, their defaults, and the
frozen values a command packs its parameters into before passing them on.

Those values are named tuples, not frozen dataclasses: every command line defines all of them
before it runs, and a dataclass compiles its generated methods when it is defined, which costs
several times a named tuple's share of the start-up.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NamedTuple

import typer

from kindplan.cli.target import split
from kindplan.core.routes import RESERVED_ROUTE_PROTOS
from kindplan.errors import UsageError

if TYPE_CHECKING:
    from kindplan.cli.target import Target


def _netns_name(value: str | None) -> str | None:
    """A --netns is a plain name, refused before anything is opened or created."""
    from kindplan.node.netns import check_name

    try:
        check_name(value)
    except UsageError as e:
        raise typer.BadParameter(str(e).removeprefix("--netns: ")) from None
    return value


def _path_value(value: str | Path | None) -> str | Path | None:
    """A path the kernel can take: no component over NAME_MAX bytes, none over PATH_MAX."""
    from kindplan.core.model import path_problem

    problem = path_problem(str(value)) if value is not None else None
    if problem:
        raise typer.BadParameter(problem)
    return value


def finite(value: float) -> float:
    """A number that compares: nan passes every bound (a guard off, a wait without end)."""
    if not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


def _conf_dir(value: str | None) -> str | None:
    """--conf-dir as an absolute path: the journal records where the conflist is, and a rollback
    run from another folder must find the same file (a relative path would name another)."""
    _path_value(value)
    return None if value is None else os.path.abspath(value)


def _state_dir(value: Path) -> Path:
    _path_value(value)
    if value.exists() and not value.is_dir():
        raise typer.BadParameter(f"{value} is not a directory")
    return value


def _cross_subnet(value: str | None) -> str | None:
    if value is not None and value not in ("none", "vxlan"):
        raise typer.BadParameter(f"{value!r} is not one of 'none', 'vxlan'")
    return value


def _route_proto(value: int) -> int:
    if value in RESERVED_ROUTE_PROTOS:
        raise typer.BadParameter(
            f"{value} is used by the kernel or other routing software; kindplan deletes stale "
            "routes of its own number, so pick another (default 75)"
        )
    return value


MASQ_BACKENDS = ("auto", "iptables", "nftables")


def _masq_backend(value: str | None) -> str | None:
    if value is not None and value not in MASQ_BACKENDS:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(MASQ_BACKENDS)}")
    return value


def _no_masquerade(values: list[str] | None) -> list[str] | None:
    """Each CIDR of --no-masquerade-cidr, in its canonical form (host bits refused)."""
    from kindplan.core.addresses import format_net, parse_cidr

    out = []
    for text in split(values):
        try:
            out.append(format_net(parse_cidr(text)))
        except ValueError:
            raise typer.BadParameter(f"{text!r} is not a network in CIDR form") from None
    return out


def needs_root_here(command: str, netns: str | None, what: str) -> None:
    """Without --netns a command reads this machine's own node, whose iptables rules only root
    can read: say so up front, as for every root-only path (iptables-save's own answer is a
    bare exit status 4). With --netns, entering the namespace says it (CAP_SYS_ADMIN)."""
    if netns is None:
        from kindplan.node.netns import CAP_NET_ADMIN, require_caps

        require_caps(command, {CAP_NET_ADMIN: what})


SnapshotArg = Annotated[
    str,
    typer.Argument(
        help="ClusterSnapshot or Kubernetes node list (kubectl get nodes -o json|yaml), JSON or "
        "YAML; '-' reads stdin.",
        show_default=False,
    ),
]
SnapshotOptionalArg = Annotated[
    str | None,
    typer.Argument(
        help="ClusterSnapshot or node list ('-': stdin). Not with --plan or --kube.",
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
NodeOpt = Annotated[
    str | None,
    typer.Option(
        help="This node's name in the snapshot. Default: this machine's host name.",
        show_default=False,
    ),
]
NetnsOpt = Annotated[
    str | None,
    typer.Option(
        help="Work inside this named network namespace (ip netns).",
        show_default=False,
        callback=_netns_name,
    ),
]
ConfDirOpt = Annotated[
    str | None,
    typer.Option(
        help="Folder of the conflist. Default: the snapshot's cluster.cni.confDir; with --netns "
        "NAME, /etc/netns/NAME/cni/net.d (what ip netns exec NAME shows as /etc/cni/net.d).",
        show_default=False,
        callback=_conf_dir,
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
RouteProtoOpt = Annotated[
    int,
    typer.Option(
        min=1,
        max=255,
        callback=_route_proto,
        help="Route protocol number that marks kindplan's routes.",
    ),
]


def _route_style(value: str | None) -> str | None:
    from kindplan.core.nexthops import ROUTE_STYLES

    if value is not None and value not in ROUTE_STYLES:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(ROUTE_STYLES)}")
    return value


RouteStyleOpt = Annotated[
    str | None,
    typer.Option(
        help="Peer routes plain (PodCIDR via IP), through nexthop objects (PodCIDR nhid N), or "
        "auto: IPv4 ones through objects from 1,000 IPv4 peers on, if the kernel has them. "
        "Default: the snapshot's cluster.routeStyle, else auto.",
        show_default=False,
        callback=_route_style,
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
MasqBackendOpt = Annotated[
    str | None,
    typer.Option(
        help="What holds the masquerade: iptables (chain KIND-MASQ-AGENT), nftables (table "
        "kindplan-masq), or auto (nftables where kindplan's or kindnet's table is, or the node "
        "has no iptables; else iptables). Default: the snapshot's cluster.masqBackend, else auto.",
        show_default=False,
        metavar="auto|iptables|nftables",
        callback=_masq_backend,
    ),
]
NoMasqueradeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--no-masquerade-cidr",
        help="Destinations never masqueraded besides the pod subnets and the snapshot's "
        "cluster.nonMasqueradeCIDRs; repeat it or separate with commas.",
        show_default=False,
        metavar="CIDR[,CIDR...]",
        callback=_no_masquerade,
    ),
]
CrossSubnetOpt = Annotated[
    str | None,
    typer.Option(
        help="Peers off the node's L2: 'none' (not routed, named in a warning) or 'vxlan' "
        "(through kindplan's VXLAN devices). Default: the snapshot's cluster.crossSubnet, "
        "else none.",
        metavar="none|vxlan",
        show_default=False,
        callback=_cross_subnet,
    ),
]
StateDirOpt = Annotated[
    Path,
    typer.Option(
        help="Where kindplan keeps its journal (the lock belongs to the namespace).",
        callback=_state_dir,
    ),
]
LockTimeoutOpt = Annotated[
    float,
    typer.Option(min=0, help="Seconds to wait for another apply on this node.", callback=finite),
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


class RenderArgs(NamedTuple):
    """render's parameters."""

    snapshot: str
    pod_subnets: tuple[str, ...]
    node: str | None
    all_nodes: bool
    out: Path | None
    check: Path | None
    uplink: str
    mtu: int | None
    route_proto: int
    masq_backend: str | None = None
    no_masquerade: tuple[str, ...] = ()
    cross_subnet: str | None = None
    node_networks: tuple[str, ...] = ()  # where each node's uplink is: which peers are off-link


class PlanArgs(NamedTuple):
    """plan's parameters (its --state-dir and --lock-timeout are only accepted, as apply's)."""

    snapshot: str | None
    pod_subnets: tuple[str, ...]
    target: Target
    json_out: bool
    out: Path | None
    detailed_exitcode: bool
    kube: bool = False
    kubeconfig: str | None = None


class TraceArgs(NamedTuple):
    """trace's parameters."""

    snapshot: str
    pod_subnets: tuple[str, ...]
    from_: str
    to: str
    port: int | None
    proto: str
    family: int | None
    node_networks: tuple[str, ...]
    default_via: tuple[str, ...]
    uplink: str
    node: str | None
    netns: str | None
    cni_cache_dir: str | None
    json_out: bool
    svg: Path | None
    detailed_exitcode: bool = False
    masq_backend: str | None = None
