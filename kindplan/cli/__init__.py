"""The command line: the only package that reads arguments, prints, and turns errors into exits.

program.py holds the typer app, the list of its commands and main(); the commands live by group
in inputs.py (validate, render), planning.py (plan, apply), inspect.py (rollback, history, show),
trace.py and lab.py, their shared options in options.py, the node they work on in target.py.
watch.py (apply --watch) is imported only by the command that needs it, like every module below
the command line. quick.py answers a converged node's apply before any of it is imported.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import typer

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point: a converged node's apply answered from its record (quick.py), anything else
    run by the typer program (program.main)."""
    from kindplan.cli.quick import converged_apply

    answered = converged_apply(sys.argv[1:] if argv is None else argv)
    if answered is not None:
        return answered
    from kindplan.cli.program import main as run

    return run(argv)


def __getattr__(name: str) -> typer.Typer:
    """`app`, the typer program, imported when asked for (main does not need it to answer)."""
    if name == "app":
        from kindplan.cli.program import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
