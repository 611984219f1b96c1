"""Running commands in tests, and the names that tests share (imported by conftest and tests)."""

from __future__ import annotations

import shutil
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


def host_network_state() -> dict[str, str]:
    """What a kernel write by kindplan would change: its routes, its chains, the namespaces."""
    commands = {
        "ip route proto 75": (["ip", "route", "show", "table", "all", "proto", "75"], None),
        "ip -6 route proto 75": (
            ["ip", "-6", "route", "show", "table", "all", "proto", "75"],
            None,
        ),
        "iptables nat": (["iptables-save", "-t", "nat"], "KIND-MASQ-AGENT"),
        "ip6tables nat": (["ip6tables-save", "-t", "nat"], "KIND-MASQ-AGENT"),
        # only the namespaces the saved plans name: other sessions make and remove their own
        "netns kpt-fuzz-*": (["ip", "netns", "list"], "kpt-fuzz"),
    }
    state = {}
    for name, (cmd, grep) in commands.items():
        if shutil.which(cmd[0]) is None:
            state[name] = "(tool missing)"
            continue
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        lines = proc.stdout.splitlines()
        if grep:
            lines = [line for line in lines if grep in line]
        state[name] = "\n".join(lines) + (f" (exit {proc.returncode})" if proc.returncode else "")
    return state
