"""The program that runs a command line: typer builds only the command it names (program_for),
and that command behaves, helps and fails exactly as in the whole program."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from kindplan.cli import program, quick
from kindplan.cli.program import app, program_for

COMMANDS = ["validate", "render", "plan", "apply", "rollback", "history", "show", "trace", "lab"]


def built(argv: list[str]) -> set[str]:
    group = typer.main.get_command(program_for(argv))
    assert isinstance(group, typer.core.TyperGroup)
    return set(group.commands)


@pytest.mark.parametrize("name", COMMANDS)
def test_a_command_is_built_alone(name: str) -> None:
    assert built([name, "--help"]) == {name}


@pytest.mark.parametrize("argv", [[], ["--help"], ["--version"], ["aply"], ["-h", "apply"]])
def test_anything_else_gets_the_whole_program(argv: list[str]) -> None:
    assert program_for(argv) is app
    assert built(argv) == set(COMMANDS)


def test_shell_completion_gets_the_whole_program(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_KINDPLAN_COMPLETE", "bash_complete")
    assert program_for(["apply"]) is app


@pytest.mark.parametrize(
    "argv",
    [
        *([name, "--help"] for name in COMMANDS),
        ["lab", "trace", "--help"],
        ["apply"],
        ["apply", "--bogus"],
        ["apply", "--node"],
        ["plan", "a.yaml", "b.yaml"],
        ["lab", "bogus"],
        ["trace"],
    ],
    ids=" ".join,
)
def test_a_command_alone_says_what_the_whole_program_says(argv: list[str]) -> None:
    runner = CliRunner()
    alone = runner.invoke(program_for(argv), argv, prog_name="kindplan")
    whole = runner.invoke(app, argv, prog_name="kindplan")
    assert program_for(argv) is not app
    assert (alone.exit_code, alone.output) == (whole.exit_code, whole.output)


def test_main_runs_the_command_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """main() goes through program_for: what it built holds the one command."""
    seen: list[typer.Typer] = []
    real = program.program_for

    def spy(argv: list[str]) -> typer.Typer:
        seen.append(real(argv))
        return seen[-1]

    monkeypatch.setattr(program, "program_for", spy)
    assert program.main(["history", "--help"]) == 0
    assert [len(p.registered_commands) for p in seen] == [1]


# -- quick.py: which command lines the converged check reads before typer ------------------------

READ = [
    ["apply", "s.yaml"],
    ["apply", "s.yaml", "--node", "n", "--netns", "ns", "--conf-dir", "c", "--adopt"],
    ["apply", "--mtu=1400", "s.yaml", "--route-proto", "76", "--pod-subnet", "a,b"],
    ["apply", "s.yaml", "--pod-subnet", "a", "--pod-subnet", "b", "--lock-timeout", "0.5"],
]
NOT_READ = [
    [],
    ["plan", "s.yaml"],
    ["apply"],  # no snapshot: typer's usage error
    ["apply", "-"],  # stdin: read once, by the usual way
    ["apply", "a.yaml", "b.yaml"],
    ["apply", "s.yaml", "--watch"],
    ["apply", "--plan", "p.json"],
    ["apply", "--kube"],
    ["apply", "s.yaml", "--help"],
    ["apply", "s.yaml", "-h"],
    ["apply", "s.yaml", "--node"],  # a flag without its value
    ["apply", "s.yaml", "--node", "--adopt"],
    ["apply", "s.yaml", "--node", "a", "--node", "b"],  # given twice
    ["apply", "s.yaml", "--adopt=yes"],
    ["apply", "s.yaml", "--mtu", "big"],
    ["apply", "s.yaml", "--lock-timeout", "nan"],
    ["apply", "s.yaml", "--lock-timeout", "-1"],
    ["apply", "s.yaml", "--nod", "n"],  # click takes no abbreviations
    ["apply", "s.yaml", "--", "x"],
]


@pytest.mark.parametrize("argv", READ, ids=" ".join)
def test_the_converged_check_reads_apply_command_lines(argv: list[str]) -> None:
    flags = quick._apply_flags(argv)
    assert flags is not None and flags[""] == ["s.yaml"]


@pytest.mark.parametrize("argv", NOT_READ, ids=lambda argv: " ".join(argv) or "nothing")
def test_anything_else_is_left_to_the_typer_program(argv: list[str]) -> None:
    assert quick._apply_flags(argv) is None
    assert quick.converged_apply(argv) is None


def test_flags_are_typed_as_typer_types_them() -> None:
    argv = ["apply", "s.yaml", "--mtu", "1400", "--lock-timeout", "2", "--pod-subnet=a,b"]
    flags = quick._apply_flags(argv)
    assert flags == {
        "": ["s.yaml"],
        "--mtu": [1400],
        "--lock-timeout": [2.0],
        "--pod-subnet": ["a,b"],
    }


def test_shell_completion_of_an_apply_is_typers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_KINDPLAN_COMPLETE", "bash_complete")
    monkeypatch.setattr(quick, "_answer", lambda flags: pytest.fail("answered"))
    assert quick.converged_apply(["apply", "s.yaml"]) is None
