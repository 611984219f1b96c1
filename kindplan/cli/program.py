"""The kindplan program: the typer app with its --version and its commands, and main(), which
maps every outcome of a command to an exit status (status.py)."""

from __future__ import annotations

import functools
import gc
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer

# typer carries its own copy of click since 0.26 (pyproject asks for it) and no longer installs
# click: its parse errors are these classes, not click's.
from typer._click.exceptions import (
    ClickException,
    NoArgsIsHelpError,
)
from typer._click.exceptions import UsageError as ClickUsageError

from kindplan import __version__
from kindplan.cli import inputs, inspect, lab, planning, trace
from kindplan.cli.applyonce import failed
from kindplan.cli.usage import Command, usage_lines
from kindplan.errors import Interrupted, KindplanError
from kindplan.status import ExitStatus


def _typer() -> typer.Typer:
    """The program with no command yet: its name, help and settings."""
    return typer.Typer(
        name="kindplan",
        help="Compile a cluster snapshot into one node's kindnet pod networking: routes, veth "
        "addresses, CNI conflist and SNAT rules. Exit status: 0 ok, 1 failure, 2 changes "
        "pending or a walk dropped, 3 drift (--detailed-exitcode), 64 usage error, 65 invalid "
        "input.",
        add_completion=False,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"]},
    )


app = _typer()


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


# In the order --help lists them.
for _command in (
    inputs.validate,
    inputs.render,
    planning.plan,
    planning.apply,
    inspect.rollback,
    inspect.history,
    inspect.show,
    trace.trace,
):
    app.command(cls=Command)(_command)
app.add_typer(lab.lab_app, name="lab")


def _interruptible(command: Callable[..., Any]) -> Callable[..., Any]:
    """`command`, its Ctrl-C as kindplan's Interrupted: typer would turn the KeyboardInterrupt
    into a silent exit 130 before main sees it (a one-shot apply's second Ctrl-C, a read of
    stdin)."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except KeyboardInterrupt:
            raise Interrupted(
                "interrupted; kindplan history shows what the journal holds"
            ) from None

    return run


for _info in (*app.registered_commands, *lab.lab_app.registered_commands):
    assert _info.callback is not None
    _info.callback = _interruptible(_info.callback)


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


def program_for(argv: list[str]) -> typer.Typer:
    """The program to run `argv`: with the one command it names first, else (--help, --version,
    no command, a misspelt one, shell completion) with all of them.

    Typer builds click's command, with every option, for each command of the program it runs
    (a fifth of a converged apply's time with 15 commands): one command's help, usage errors
    and behaviour are the same in a program that holds it alone."""
    if not argv or os.environ.get("_KINDPLAN_COMPLETE"):
        return app
    commands = [c for c in app.registered_commands if c.callback and c.callback.__name__ == argv[0]]
    groups = [g for g in app.registered_groups if g.name == argv[0]]
    if not commands and not groups:
        return app
    program = _typer()
    program.registered_callback = app.registered_callback
    program.registered_commands, program.registered_groups = commands, groups
    return program


def _run(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        result = program_for(argv)(args=argv, prog_name="kindplan", standalone_mode=False)
    except NoArgsIsHelpError as e:  # the help is the hint
        e.show()
        return ExitStatus.USAGE
    except ClickException as e:
        for line in usage_lines(e):
            typer.echo(line, err=True)
        return ExitStatus.USAGE if isinstance(e, ClickUsageError) else ExitStatus.FAILURE
    except typer.Abort:
        typer.echo("aborted", err=True)
        return ExitStatus.FAILURE
    except KindplanError as e:
        return failed(e)
    except KeyboardInterrupt:  # a second Ctrl-C: every undo sent is on disk already
        typer.echo("error: interrupted; kindplan history shows what the journal holds", err=True)
        return ExitStatus.INTERRUPTED
    return int(result) if isinstance(result, int) else ExitStatus.OK
