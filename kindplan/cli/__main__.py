"""`python -m kindplan.cli`: the same as the `kindplan` command."""

from kindplan.cli import console

console()
