"""CI installs into a fresh virtual environment made by scripts/setup.sh, never into packages that
happen to be on the machine: this checks, in CI, that the tests run from it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(os.environ.get("CI") != "true", reason="what .ci/run sets up")
def test_ci_runs_from_the_venv_of_the_set_up() -> None:
    venv = ROOT / ".venv"
    assert Path(sys.prefix) == venv, f"the tests run from {sys.prefix}, not {venv}"
    config = dict(
        line.split(" = ", 1)
        for line in (venv / "pyvenv.cfg").read_text().splitlines()
        if " = " in line
    )
    assert config["include-system-site-packages"] == "false"
    assert (venv / ".kindplan-setup").read_text() == (ROOT / "pyproject.toml").read_text().rstrip(
        "\n"
    ) + "\n"
