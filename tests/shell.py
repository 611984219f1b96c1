"""Running commands in tests, and the names that tests share (imported by conftest and tests)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

NETNS_PREFIX = "kpt-"  # every namespace a test makes starts with this; swept at session start
CNI_BIN = Path("/usr/lib/cni")


def sh(*args: str, ns: str | None = None, stdin: str | None = None) -> str:
    """Run a command (inside namespace `ns` if given); fail the test with its stderr if it fails."""
    cmd = ["ip", "netns", "exec", ns, *args] if ns else list(args)
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout
