"""The fakes of tests/fakes.py are held to the protocols of kindplan/node/ports.py by mypy.

mypy checks tests/fakes.py with the package ([tool.mypy] files in pyproject.toml). A copy of it
in which each fake drifts from its protocol in one signature must fail mypy at that fake's
protocol assignment: the fakes cannot quietly stop being what the engine and the loop are given.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FAKES = ROOT / "tests" / "fakes.py"

# (what the fake's source says, what the drifted copy says instead, the protocol it breaks)
DRIFTS = (
    (
        "    def read_routes(self) -> tuple[Route, ...]:\n"
        '        self._dump("routes")\n'
        "        return tuple(self._path(self.routes[key]) for key in sorted(self.routes))\n",
        "    def read_routes(self) -> list[Route]:\n"
        '        self._dump("routes")\n'
        "        return [self._path(self.routes[key]) for key in sorted(self.routes)]\n",
        "KernelPort",
    ),
    (
        "    def save_nat(self, version: int) -> str:\n",
        "    def save_nat(self, version: str) -> str:\n",
        "IptablesPort",
    ),
    ("        kept: HandleKeeper | None = None,\n", "", "NodeOpener"),
)


def test_mypy_covers_the_fakes() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "tests/fakes.py" in config["tool"]["mypy"]["files"]


def test_a_fake_that_drifts_from_its_protocol_fails_mypy(tmp_path: Path) -> None:
    text = FAKES.read_text()
    for source, drifted, _ in DRIFTS:
        assert text.count(source) == 1, f"fakes.py changed: update this test ({source!r})"
        text = text.replace(source, drifted)
    (tmp_path / "fakes.py").write_text(text)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--cache-dir",
            str(tmp_path / "cache"),
            "fakes.py",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "MYPYPATH": str(ROOT)},
    )
    assert result.returncode == 1, result.stdout + result.stderr
    broken = set(re.findall(r'variable has type "(\w+)"', result.stdout))
    assert broken == {protocol for _, _, protocol in DRIFTS}, result.stdout
