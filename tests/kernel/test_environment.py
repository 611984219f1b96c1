"""A hostile environment: the xtables lock held, iptables-restore failing, a read-only or full
conf dir, a missing uplink. Each ends in a clear one-line error, nothing half-written, and the next
apply converges. Mounts happen in a private mount namespace (unshare -m) that dies with the test.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from nodes import Node
from shell import sh

pytestmark = pytest.mark.root


def kindplan_env(
    node: Node, *extra: str, env: dict[str, str] | None = None, wrap: str = ""
) -> subprocess.CompletedProcess[str]:
    """kindplan apply on the node, optionally inside a shell snippet that prepares the mounts."""
    cmd = [
        sys.executable,
        "-m",
        "kindplan.cli",
        "apply",
        *node.args(),
        "--state-dir",
        str(node.tmp / "state"),
        *extra,
    ]
    if wrap:
        script = f"{wrap} && exec {shlex.join(cmd)}"
        cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
    return subprocess.run(
        cmd, capture_output=True, text=True, check=False, env={**os.environ, **(env or {})}
    )


def chain(node: Node, tool: str = "iptables-save") -> list[str]:
    return [line for line in node.nat(tool).splitlines() if "KIND-MASQ-AGENT" in line]


def test_held_xtables_lock_waits_then_fails_clearly(seed_worker2: Node, tmp_path: Path) -> None:
    """On a legacy-iptables node another program holds the xtables lock (flock, like iptables)."""
    node = seed_worker2
    # A rule in the legacy tables makes kindplan pick the legacy backend, which uses the lock.
    sh("iptables-legacy", "-t", "nat", "-N", "DOCKER", ns=node.ns)
    sh("iptables-legacy", "-t", "nat", "-A", "DOCKER", "-i", "docker0", "-j", "RETURN", ns=node.ns)
    lock = tmp_path / "xtables.lock"
    env = {"XTABLES_LOCKFILE": str(lock)}  # iptables' own override of /run/xtables.lock
    holder = subprocess.Popen(["flock", str(lock), "sleep", "30"], start_new_session=True)
    try:
        time.sleep(0.2)
        started = time.monotonic()
        blocked = kindplan_env(node, env=env)
        waited = time.monotonic() - started
    finally:
        os.killpg(holder.pid, signal.SIGTERM)  # flock and the sleep that holds the lock
        holder.wait()
    assert blocked.returncode == 1
    assert "xtables lock" in blocked.stderr, blocked.stderr
    assert waited >= 4.5, f"apply must wait for the lock (--wait 5), waited {waited:.1f} s"
    assert chain(node, "iptables-legacy-save") == [], "the chain is not half-written"
    assert not node.conflist.exists(), "no ready conflist while SNAT is missing"
    done = kindplan_env(node, env=env)
    assert done.returncode == 0, done.stderr
    assert len(chain(node, "iptables-legacy-save")) == 4  # declaration, 2 rules, the jump
    assert chain(node) == [], "the nft tables were left alone: the node uses legacy"


def test_failing_iptables_restore_leaves_the_chain_unchanged(
    seed_worker2: Node, tmp_path: Path
) -> None:
    node = seed_worker2
    assert node.apply().returncode == 0
    sh("iptables", "-t", "nat", "-D", "KIND-MASQ-AGENT", "1", ns=node.ns)
    before = chain(node)
    shims = tmp_path / "bin"
    shims.mkdir()
    for name in ("iptables-nft-restore", "iptables-restore"):
        shim = shims / name
        shim.write_text("#!/bin/sh\necho 'iptables-restore: line 3 failed' >&2\nexit 2\n")
        shim.chmod(0o755)
    failed = kindplan_env(node, env={"PATH": f"{shims}:{os.environ['PATH']}"})
    assert failed.returncode == 1
    assert (
        "iptables-nft-restore --noflush exited 2: iptables-restore: line 3 failed" in failed.stderr
    )
    assert chain(node) == before
    assert node.apply().returncode == 0
    assert len(chain(node)) == len(before) + 1


@pytest.mark.parametrize("fault", ["read-only", "full"])
def test_conf_dir_fault_keeps_the_old_conflist(seed_worker2: Node, fault: str) -> None:
    node = seed_worker2
    conf = node.tmp / "cni"
    conf.mkdir()
    old = '{"cniVersion": "0.3.1", "name": "old"}\n'
    prepare = [
        f"mount -t tmpfs -o size=64k tmpfs {conf}",
        f"printf '%s' {shlex.quote(old)} > {conf}/10-kindnet.conflist",
    ]
    if fault == "read-only":
        prepare.append(f"mount -o remount,ro {conf}")
    else:  # fill what is left, so the temporary file cannot be written
        prepare.append(f"(dd if=/dev/zero of={conf}/filler bs=4k 2>/dev/null; true)")
    # Check inside the same mount namespace that the old file is intact afterwards.
    result = kindplan_env(node, wrap=" && ".join(prepare))
    assert result.returncode == 1
    reason = "Read-only file system" if fault == "read-only" else "No space left on device"
    assert f"{conf}/10-kindnet.conflist: cannot write: {reason}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert "proto 75" in " ".join(node.routes()), "the rest of the plan went in"
    # Out of that mount namespace the folder is the empty one beneath: the next try converges.
    again = node.apply()
    assert again.returncode == 0, again.stderr
    assert node.plan("--detailed-exitcode").returncode == 0


def test_uplink_missing_or_renamed(seed_worker2: Node) -> None:
    node = seed_worker2
    named = kindplan_env(node, "--uplink", "ens5")
    assert named.returncode == 1
    assert "error: uplink ens5 does not exist on node k8s-guide-worker2" in named.stderr
    # Renamed: the interface holding the InternalIP is the uplink, whatever its name.
    sh("ip", "-n", node.ns, "link", "set", "eth0", "down")
    sh("ip", "-n", node.ns, "link", "set", "eth0", "name", "uplink0")
    sh("ip", "-n", node.ns, "link", "set", "uplink0", "up")
    renamed = node.apply()
    assert renamed.returncode == 0, renamed.stderr
    assert "10.244.0.0/24 via 172.18.0.10 dev uplink0 proto 75 " in node.routes()
    sh("ip", "-n", node.ns, "link", "del", "uplink0")
    gone = node.apply()
    assert gone.returncode == 1
    assert gone.stderr.strip() == (
        "error: no interface of node k8s-guide-worker2 holds its InternalIP 172.18.0.12"
    )
