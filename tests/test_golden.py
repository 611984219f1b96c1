"""Golden files: every fixture's rendered output for every node, byte for byte.

fixtures/<case>/ holds the input (snapshot.yaml or snapshot.json), optional extra CLI arguments in
`args`, and expected/<node>/<file>. To regenerate after a deliberate change, run
`python -m pytest tests/test_golden.py --update-golden` and review the git diff like code.
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import pytest

from kindplan.cli import main

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CASES = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())


def _snapshot(case: Path) -> Path:
    return next(p for p in sorted(case.iterdir()) if p.stem == "snapshot")


@pytest.mark.parametrize("name", CASES)
def test_golden(
    name: str, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    case = FIXTURES / name
    args_file = case / "args"
    extra = shlex.split(args_file.read_text()) if args_file.exists() else []
    expected = case / "expected"
    base = ["render", str(_snapshot(case)), "--all-nodes", *extra]
    if request.config.getoption("--update-golden"):
        shutil.rmtree(expected, ignore_errors=True)
        assert main([*base, "--out", str(expected)]) == 0
    status = main([*base, "--check", str(expected)])
    assert status == 0, capsys.readouterr().out


def test_every_case_has_expected_output_for_each_node() -> None:
    """A fixture without expected files would pass the check vacuously."""
    for name in CASES:
        expected = FIXTURES / name / "expected"
        assert expected.is_dir(), f"{name}: no expected/ (run with --update-golden)"
        nodes = [p for p in expected.iterdir() if p.is_dir()]
        assert len(nodes) >= 3, f"{name}: expected output for at least 3 nodes"
        for node in nodes:
            assert any(node.glob("*.conflist")), f"{name}/{node.name}: no conflist"
            assert (node / "routes.batch").is_file()
