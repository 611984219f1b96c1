"""One error hierarchy; only the command line (cli/program.py) maps an error to an exit status."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the input: where it is (a JSON path or a node name) and what."""

    where: str
    what: str

    def __str__(self) -> str:
        text = f"{self.where}: {self.what}" if self.where else self.what
        return one_line(text)


def one_line(text: str) -> str:
    """One line, whatever the input held: control characters from a user's names are escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class KindplanError(Exception):
    """Root of every error kindplan raises on purpose."""


class InvalidInputError(KindplanError, ValueError):
    """The input is wrong; carries every problem found, so a user can fix them all at once."""

    def __init__(self, problems: list[Problem] | tuple[Problem, ...]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(p) for p in self.problems))

    @classmethod
    def one(cls, where: str, what: str) -> InvalidInputError:
        return cls([Problem(where, what)])


class UsageError(KindplanError, ValueError):
    """The command line asks for something that cannot be done (exit 64)."""


class RuntimeFailure(KindplanError, RuntimeError):
    """Something outside the input failed: the disk, the kernel, a tool (exit 1)."""


class Interrupted(RuntimeFailure):
    """Asked to stop (SIGINT) between two changes of an apply: exit 130, as a shell's Ctrl-C."""


class SourceError(RuntimeFailure):
    """The cluster could not be read at all (the API unreachable, no snapshot yet): exit 1."""
