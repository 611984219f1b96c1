"""What applies left on the node: show what kindplan owns there, list the journal's generations
(history) and undo the newest (rollback)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kindplan.cli.applyonce import say_if_locked
from kindplan.cli.options import (
    LockTimeoutOpt,
    NetnsOpt,
    RouteProtoOpt,
    StateDirOpt,
    needs_root_here,
)
from kindplan.cli.target import DEFAULT_STATE_DIR, LOCK_TIMEOUT_SECONDS
from kindplan.core.routes import DEFAULT_ROUTE_PROTO
from kindplan.errors import RuntimeFailure
from kindplan.status import ExitStatus

if TYPE_CHECKING:
    from kindplan.core.changes import Change
    from kindplan.core.masq.value import MasqObserved
    from kindplan.core.nexthops import Nexthop
    from kindplan.node.tunnels import TunnelsSeen


def rollback(
    netns: NetnsOpt = None,
    state_dir: StateDirOpt = DEFAULT_STATE_DIR,
    lock_timeout: LockTimeoutOpt = LOCK_TIMEOUT_SECONDS,
) -> int:
    """Undo the newest apply (its journal generation), verify, and drop it from the history.

    Example: kindplan rollback --netns kp-worker2 --state-dir /tmp/state
    """
    from kindplan.core.planview import describe, plural
    from kindplan.node.engine import rollback_node
    from kindplan.node.journal import Journal

    journal = Journal(state_dir, netns)
    journal.check()
    say_if_locked(netns, lock_timeout)
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


# What a rollback did, by the undo's action: removed what the apply added, re-added what it
# deleted, restored what it replaced.
_UNDO_VERBS = {"-": "removed", "+": "re-added", "~": "restored"}


def _undo_verb(change: Change) -> str:
    return _UNDO_VERBS[change.action]


def history(netns: NetnsOpt = None, state_dir: StateDirOpt = DEFAULT_STATE_DIR) -> int:
    """List the generations that rollback can undo, newest last.

    Example: kindplan history --netns kp-worker2 --state-dir /tmp/state
    """
    from kindplan.core.planview import undo_summary
    from kindplan.node.journal import Journal

    journal = Journal(state_dir, netns)
    generations = journal.load()
    if not generations:
        typer.echo(f"no generations in {journal.path}")
    for g in generations:
        what = undo_summary(g.undo)
        state = "" if g.complete else " (apply did not finish)"
        typer.echo(f"{g.number:>4}  {g.time}  node {g.node}  undo: {what}{state}")
    return ExitStatus.OK


def _say_nexthops(objects: list[Nexthop], route_proto: int) -> None:
    """kindplan's nexthop objects (the nexthop style's): said only where there are any."""
    from kindplan.core.nexthops import nexthop_text

    if objects:
        typer.echo(f"nexthop objects with protocol {route_proto}: {len(objects)}")
    for nexthop in objects:
        typer.echo(f"  {nexthop_text(nexthop)}")


def _say_tunnels(seen: TunnelsSeen) -> None:
    """kindplan's VXLAN devices and their entries (--cross-subnet vxlan), and a device of that
    name that is someone else's: said only where there are any."""
    from kindplan.core.tunnel import fdb_text, neighbour_text, vxlan_text

    devices, neighbours, fdb = seen
    for device in devices:
        if not device.owned:
            typer.echo(f"device {device.name}: not kindplan's (no marker); left alone")
            continue
        typer.echo(f"tunnel device {vxlan_text(device)}")
        here = [n for n in neighbours if n.ifname == device.name]
        entries = [e for e in fdb if e.ifname == device.name]
        typer.echo(f"  neighbour entries: {len(here)}; FDB entries: {len(entries)}")
        for line in [*map(neighbour_text, here), *map(fdb_text, entries)]:
            typer.echo(f"    {line}")


def show(
    netns: NetnsOpt = None,
    route_proto: RouteProtoOpt = DEFAULT_ROUTE_PROTO,
    conf_file: Annotated[
        Path | None, typer.Option(help="Also show this conflist.", show_default=False)
    ] = None,
    snapshot: Annotated[
        str | None,
        typer.Option(
            help="A snapshot ('-': stdin) naming the pods behind the policy table's addresses.",
            metavar="FILE",
            show_default=False,
        ),
    ] = None,
) -> int:
    """Print what kindplan owns on this node: its routes and nexthop objects, SNAT chains and
    jumps, its tunnel devices with their neighbour and FDB entries, and its NetworkPolicy
    table (the policies it enforces, on which pods).

    Example: kindplan show --netns kp-worker2
    """
    from kindplan.core.masq.dialects import dialect
    from kindplan.core.planview import plural, route_text
    from kindplan.core.routes import owned_routes
    from kindplan.node.iptables import read_masq
    from kindplan.node.opener import open_node

    named = None
    if snapshot is not None:  # bad input before anything is read
        from kindplan.cli.inputs import load

        named = load(snapshot, ())
    needs_root_here("show", netns, "to read the node's iptables rules (iptables-save)")
    with open_node(netns, None) as node:  # a read: no lock
        node.kernel.read_links()
        routes = owned_routes(node.kernel.read_routes(), route_proto)
        objects = [n for n in node.kernel.read_nexthops() or () if n.owned_by(route_proto)]
        tunnels = node.kernel.read_tunnels()  # after the links: it names them
        chains = [
            c
            for c in read_masq(node.iptables)
            if c.variant == node.iptables.backend or c.hooks or c.masq is not None
        ]
        in_use = node.iptables.backend
        nft = node.iptables.nftables
        policy = nft.read_policy() if nft is not None else None
    typer.echo(f"routes with protocol {route_proto}: {len(routes)}")
    for route in routes:
        typer.echo(f"  {route_text(route)}")
    _say_nexthops(objects, route_proto)
    _say_tunnels(tunnels)
    for chain in chains:
        if chain.backend != "iptables":
            _show_table(chain)
            continue
        table = "ip6tables" if chain.version == 6 else "iptables"
        if chain.masq is None:
            typer.echo(f"{table} nat: no KIND-MASQ-AGENT chain; {plural(chain.hooks, 'jump')}")
            continue
        # the rules as the backend holds them: the value in its dialect's words, then the rest
        rules = [*map(dialect(chain.backend).rule_text, chain.masq.rules), *chain.unread]
        typer.echo(
            f"{table} nat: KIND-MASQ-AGENT ({plural(len(rules), 'rule')}), "
            f"{plural(chain.hooks, 'jump')} "
            f"[{chain.variant or 'default'} backend"
            + ("]" if chain.variant == in_use else ", not in use]")
        )
        for rule in rules:
            typer.echo(f"  {rule}")
    if policy is not None:
        from kindplan.core.policy.shown import policy_table_lines

        typer.echo("\n".join(policy_table_lines(policy, named)))
    if conf_file is not None:
        _say_conf_file(conf_file)
    return ExitStatus.OK


def _say_conf_file(conf_file: Path) -> None:
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


def _show_table(found: MasqObserved) -> None:
    """An nftables table that masquerades (kindplan's, or kindnet's), in show's words."""
    from kindplan.core.masq.dialects import dialect
    from kindplan.core.masq.nftables import shape
    from kindplan.core.planview import plural

    where = shape(found.version, found.variant)
    whose = " (kindnet's)" if found.variant else ""
    head = f"nftables: table {where.family} {where.table}{whose}, IPv{found.version}"
    if found.masq is None:
        return
    rules = [*map(dialect(found.backend).rule_text, found.masq.rules), *found.unread]
    hooked = "hooked at nat postrouting" if found.hooks else "not hooked"
    typer.echo(f"{head} ({plural(len(rules), 'rule')}), chain postrouting {hooked}")
    for rule in rules:
        typer.echo(f"  {rule}")
