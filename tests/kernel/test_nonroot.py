"""What needs root says so, as a real unprivileged user (nobody) sees it: which capability and what
for, a non-zero exit, no traceback, and no claim of what was not done."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from shell import NETNS_PREFIX, sh

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]
SEED = "fixtures/seed-lab/snapshot.yaml"
Nobody = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def as_nobody() -> Iterator[Nobody]:
    """kindplan run by the user nobody from this checkout and its interpreter (the venv of
    scripts/setup.sh). The checkout is bind-mounted, in a mount namespace of its own, onto a folder
    anyone can traverse, since the clone may sit under a private folder (root's home, a 0700 temp
    folder); nothing else is made readable."""
    top = Path(tempfile.mkdtemp(prefix="kp-nonroot-", dir="/tmp"))
    top.chmod(0o755)
    mount = top / "checkout"
    mount.mkdir()
    executable = Path(sys.executable)  # not resolved: a venv's python finds its venv by this path
    if executable.is_relative_to(ROOT):
        executable = mount / executable.relative_to(ROOT)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        script = 'mount --bind "$1" "$2" && cd "$2" && shift 2 && exec runuser -u nobody -- "$@"'
        unshare = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"]
        return subprocess.run(
            [*unshare, str(ROOT), str(mount), str(executable), *args],
            capture_output=True,
            text=True,
            check=False,
        )

    try:
        probe = run("-c", "import os, kindplan.cli; print(os.geteuid())")
        if probe.returncode != 0 or probe.stdout.strip() != "65534":
            reason = (
                f"the user nobody cannot run {sys.executable}: {probe.stderr.strip()[-300:]} "
                "(make the venv with an interpreter anyone can run: "
                "KINDPLAN_PYTHON=/usr/bin/python3)"
            )
            if os.environ.get("CI") == "true":
                pytest.fail(reason, pytrace=False)
            pytest.skip(reason)
        yield lambda *args: run("-m", "kindplan.cli", *args)
    finally:  # the bind mount lived only in the mount namespace of each run
        mount.rmdir()
        top.rmdir()


def refused(result: subprocess.CompletedProcess[str], *words: str) -> str:
    """A plain refusal: exit 1, one error line that names what it needs, no traceback."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0]
    return lines[0]


@pytest.mark.parametrize("command", ["plan", "show"])
def test_netns_without_root(as_nobody: Nobody, netns: str, command: str) -> None:
    args = [command, SEED, "--node", "k8s-guide-worker2"] if command == "plan" else [command]
    line = refused(as_nobody(*args, "--netns", netns), "needs root", "CAP_SYS_ADMIN")
    assert line == (
        f"error: --netns {netns}: entering a network namespace needs root (CAP_SYS_ADMIN); "
        "run it with sudo"
    )


@pytest.fixture
def fake_lab() -> Iterator[str]:
    """A namespace named as a lab's bridge (removed at the end, and swept by its kpt- prefix)."""
    name = f"{NETNS_PREFIX}{os.getpid()}-lab"
    sh("ip", "netns", "add", f"{name}-bridge")
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", f"{name}-bridge"], check=False)


def test_lab_down_without_root_claims_nothing(as_nobody: Nobody, fake_lab: str) -> None:
    result = as_nobody("lab", "down", "--name", fake_lab)
    line = refused(result, "CAP_SYS_ADMIN")
    assert line == (
        "error: lab down needs root: CAP_SYS_ADMIN to delete the lab's network namespaces; "
        "run it with sudo"
    )
    assert result.stdout == ""  # no "removed N namespaces"
    assert f"{fake_lab}-bridge" in sh("ip", "netns", "list")


@pytest.mark.parametrize(
    ("command", "what"),
    [
        ("up", "create and enter the lab's network namespaces"),
        ("check", "enter the lab's network namespaces"),
        ("plan k8s-guide-worker", "enter the lab's network namespaces"),
        ("apply k8s-guide-worker", "enter the lab's network namespaces"),
        ("exec k8s-guide-worker -- ip route", "enter the lab's network namespaces"),
    ],
)
def test_lab_without_root(as_nobody: Nobody, tmp_path: Path, command: str, what: str) -> None:
    state = tmp_path / "state"
    name = f"{NETNS_PREFIX}{os.getpid()}-up"
    verb, *args = command.split()
    line = refused(as_nobody("lab", verb, "--name", name, "--state-dir", str(state), *args))
    assert line == (
        f"error: lab {verb} needs root: CAP_SYS_ADMIN to {what}; CAP_NET_ADMIN to read and "
        "change their routes, addresses and iptables; run it with sudo"
    )
    assert not state.exists()
    assert not [n for n in sh("ip", "netns", "list").split() if n.startswith(name)]


@pytest.mark.parametrize("command", ["plan", "show"])
def test_the_hosts_own_node_without_root(as_nobody: Nobody, command: str) -> None:
    """The migration guide's first step (plan on the node itself, no --netns) as a normal user:
    the same refusal as every root-only path, not iptables-save's bare exit status."""
    args = [command, SEED, "--node", "k8s-guide-worker2"] if command == "plan" else [command]
    line = refused(as_nobody(*args), "needs root")
    assert line == (
        f"error: {command} needs root: CAP_NET_ADMIN to read the node's iptables rules "
        "(iptables-save); run it with sudo"
    )


def test_bad_input_is_said_before_root_is_asked_for(as_nobody: Nobody) -> None:
    """A node the snapshot has not got is the command line's mistake, whoever runs it."""
    result = as_nobody("plan", SEED, "--node", "ghost")
    assert result.returncode == 64 and result.stderr.startswith("error: --node: no node named")
