"""The console examples of README.md and docs/*.md, and how a test compares one with a real run.

An example is a ```console block: lines starting with `$ ` are commands, the lines after one are
what it prints (stdout and stderr, as a terminal shows them). In the printed lines, a line `...`
stands for any number of lines and `...` inside a line for any text; timestamps, durations and
veth names (random in the lab) are compared as their shape only. tests/unit/test_docs.py runs
the examples that need no root and shows that a kernel test runs each of the others.
"""

from __future__ import annotations

import difflib
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))


@dataclass(frozen=True)
class Step:
    command: str
    output: tuple[str, ...]


@dataclass(frozen=True)
class Example:
    where: str  # README.md:245, the line of the block's first command
    steps: tuple[Step, ...]


def console_examples() -> list[Example]:
    """Every ```console block of the README and docs/*.md, in document order."""
    found = []
    for doc in DOCUMENTS:
        lines = doc.read_text().splitlines()
        start = None
        for n, line in enumerate(lines):
            if line == "```console":
                start = n + 1
            elif line.startswith("```") and start is not None:
                found.append(_example(f"{doc.relative_to(ROOT)}:{start + 1}", lines[start:n]))
                start = None
    return found


def _example(where: str, block: list[str]) -> Example:
    assert block and block[0].startswith("$ "), f"{where}: a console block starts with a command"
    steps: list[Step] = []
    for line in block:
        if line.startswith("$ "):
            steps.append(Step(line[2:], ()))
        else:
            steps[-1] = Step(steps[-1].command, (*steps[-1].output, line))
    return Example(where, tuple(steps))


def example(first_command: str) -> Example:
    """The one example whose first command starts with `first_command`."""
    matching = [e for e in console_examples() if e.steps[0].command.startswith(first_command)]
    assert len(matching) == 1, f"{len(matching)} console examples start with {first_command!r}"
    return matching[0]


_SHAPES = (
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"), "<time>"),
    (re.compile(r"duration_ms=[\d.]+"), "duration_ms=<n>"),
    (re.compile(r"\bveth[0-9a-f]{8}\b"), "veth<id>"),
)


def _shape(text: str) -> str:
    for pattern, shape in _SHAPES:
        text = pattern.sub(shape, text)
    return text


def _pattern(expected: Sequence[str]) -> re.Pattern[str]:
    parts = []
    for line in expected:
        if line == "...":
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            wild = [re.escape(_shape(piece)) for piece in line.split("...")]
            parts.append(r"[^\n]*?".join(wild) + r"\n")
    return re.compile("".join(parts))


def assert_prints(step: Step, printed: str, names: Mapping[str, str] | None = None) -> None:
    """`printed` is what `step` shows, once each key of `names` (a path or a namespace of the
    test) is written as the example's name for it."""
    for name, shown in (names or {}).items():
        printed = printed.replace(name, shown)
    if printed and not printed.endswith("\n"):
        printed += "\n"
    if _pattern(step.output).fullmatch(_shape(printed)):
        return
    diff = difflib.unified_diff(
        list(step.output), printed.splitlines(), "the example", "the run", lineterm=""
    )
    raise AssertionError(f"$ {step.command}\n" + "\n".join(diff))


def shell(command: str, cwd: Path, timeout: float = 120) -> str:
    """Run one example command with bash in `cwd`, `kindplan` being this interpreter's; what it
    prints on stdout and stderr together."""
    # unbuffered, so that stdout and stderr interleave as on a terminal
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env = dict(os.environ, PATH=path, PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    return proc.stdout
