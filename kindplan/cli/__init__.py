"""The command line: the only package that reads arguments, prints, and turns errors into exits.

program.py holds the typer app, the list of its commands and main(); the commands live by group
in inputs.py (validate, render), planning.py (plan, apply), inspect.py (rollback, history, show),
trace.py and lab.py, their shared options in options.py, the node they work on in target.py.
watch.py (apply --watch) is imported only by the command that needs it, like every module below
the command line. quick.py answers a converged node's apply before any of it is imported.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    import typer

__all__ = ["app", "console", "main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point: a converged node's apply answered from its record (quick.py), anything else
    run by the typer program (program.main)."""
    from kindplan.cli.quick import converged_apply

    answered = converged_apply(sys.argv[1:] if argv is None else argv)
    if answered is not None:
        return answered
    from kindplan.cli.program import main as run

    return run(argv)


def console() -> NoReturn:
    """The `kindplan` command and `python -m kindplan.cli`: main(), then the process ends.

    Without the interpreter's teardown when nothing needs it: freeing every object one by one
    and a last collection of them all, a sixteenth of a converged apply's instructions (24M of
    391M at 5,000 nodes) for memory the kernel takes back at once. What the teardown does that
    matters happens first: the atexit handlers (logging's flush, temporary folders'
    finalizers) and the flush of stdout and stderr. A thread still running, or a flush that
    fails (a closed pipe), and the process ends the usual way, as it would have without this.
    """
    status = main()
    if threading.active_count() == 1 and _flushed():
        atexit._run_exitfuncs()
        if _flushed():
            os._exit(status)
    sys.exit(status)


def _flushed() -> bool:
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe or stream: the usual exit says so, as ever
        return False
    return True


def __getattr__(name: str) -> typer.Typer:
    """`app`, the typer program, imported when asked for (main does not need it to answer)."""
    if name == "app":
        from kindplan.cli.program import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
