"""The usage in kindplan's words: the names a usage line and --help give each value (`--node
NAME`, not typer's `<str>`; `SNAPSHOT`, not `{snapshot}`), and click's usage errors as one
`error: WHERE: WHAT` line like every other error, with a `hint:` where the usage is the mistake."""

from __future__ import annotations

from typing import Any

from typer._click.exceptions import BadParameter, ClickException, MissingParameter
from typer.core import TyperArgument, TyperCommand, TyperOption

from kindplan.errors import one_line

# What a value is, by its parameter's name (README: the commands' headings use the same words).
# A parameter that names its own metavar keeps it.
METAVARS = {
    "backoff_max": "DURATION",
    "check": "DIR",
    "cni_cache_dir": "DIR",
    "conf_dir": "DIR",
    "conf_file": "FILE",
    "default_via": "IP",
    "family": "4|6",
    "from_": "POD|NODE|IP",
    "healthz_max_age": "DURATION",
    "hold_rounds": "N",
    "interval": "DURATION",
    "kubeconfig": "FILE",
    "lock_timeout": "SECONDS",
    "log_format": "text|json",
    "max_delete_fraction": "FRACTION",
    "metrics_addr": "HOST:PORT",
    "mtu": "N",
    "name": "NAME",
    "netns": "NS",
    "node": "NAME",
    "node_network": "CIDR",
    "nodes": "N",
    "plan_file": "FILE",
    "pod_subnet": "CIDR",
    "pods_per_node": "N",
    "port": "N",
    "proto": "tcp|udp",
    "route_proto": "N",
    "route_style": "plain|nexthop|auto",
    "state_dir": "DIR",
    "svg": "FILE",
    "to": "POD|NODE|IP",
    "uplink": "IF",
}
# Arguments by name: the command's own words (lab trace FROM TO), else the name in capitals.
ARGUMENT_METAVARS = {"source": "FROM", "target": "TO"}


class Command(TyperCommand):
    """A command whose usage line and help name every value; `usage_tail` ends its usage line
    (lab exec's `-- CMD...`)."""

    usage_tail = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if param.metavar is not None or param.name is None:
                continue
            if isinstance(param, TyperArgument):
                param.metavar = ARGUMENT_METAVARS.get(param.name, param.name.upper())
            elif isinstance(param, TyperOption) and not param.is_flag:
                param.metavar = METAVARS.get(param.name)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        # typer puts a required argument in braces ({SNAPSHOT}); a usage line says SNAPSHOT.
        pieces = [
            p[1:-1] if p.startswith("{") and p.endswith("}") else p
            for p in super().collect_usage_pieces(ctx)
        ]
        return [*pieces, self.usage_tail] if self.usage_tail else pieces


class ExecCommand(Command):
    usage_tail = "-- CMD..."


def usage_lines(e: ClickException) -> list[str]:
    """click's usage error in kindplan's words: one `error: WHERE: WHAT` line, and a `hint:`
    line naming the command's --help where the usage itself is what went wrong."""
    what = e.format_message()
    ctx = getattr(e, "ctx", None)
    where = ctx.command_path if ctx is not None else "kindplan"
    hint = f"hint: {where} --help shows its usage" if ctx is not None else None
    if isinstance(e, BadParameter) and not isinstance(e, MissingParameter):
        # "Invalid value for '--mtu': 10 is not ...": the option is the place, the rest the what.
        param = e.param_hint or (e.param.get_error_hint(ctx) if e.param and ctx else None)
        if isinstance(param, str) and what.startswith("Invalid value for "):
            where, what, hint = param.strip("'\""), e.message, None
    if what[1:2].islower():  # "Missing option" -> "missing option", not "IPv4" -> "iPv4"
        what = what[:1].lower() + what[1:]
    line = f"error: {one_line(where)}: {one_line(what.rstrip('.'))}"
    return [line, hint] if hint else [line]
