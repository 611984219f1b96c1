"""The command line: the only package that reads arguments, prints, and turns errors into exits.

program.py holds the typer app, the list of its commands and main(); the commands live by group
in inputs.py (validate, render), planning.py (plan, apply), inspect.py (rollback, history, show),
trace.py and lab.py, their shared options in options.py. watch.py (apply --watch) is imported only
by the command that needs it, like every module below the command line.
"""

from kindplan.cli.program import app, main

__all__ = ["app", "main"]
