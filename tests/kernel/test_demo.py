"""scripts/demo.sh next to a lab of the same name: it refuses before anything, and leaves it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from shell import NETNS_PREFIX, sh

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]


def test_demo_refuses_a_lab_of_its_name_and_leaves_it() -> None:
    lab = f"{NETNS_PREFIX}{os.getpid()}-demo"
    sh("ip", "netns", "add", f"{lab}-bridge")  # a lab of that name is up
    try:
        result = subprocess.run(
            ["bash", str(ROOT / "scripts" / "demo.sh")],
            env={**os.environ, "DEMO_LAB": lab},
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 1, (result.stdout, result.stderr)
        assert result.stdout == ""  # not even the set-up ran
        assert result.stderr == (
            f"demo: a lab named {lab} is already up; it is left as it is. Take it down with "
            f".venv/bin/kindplan lab down --name {lab}, or run the demo as "
            "DEMO_LAB=other bash scripts/demo.sh\n"
        )
        assert f"{lab}-bridge" in sh("ip", "netns", "list").split()
    finally:
        subprocess.run(["ip", "netns", "del", f"{lab}-bridge"], check=False)
