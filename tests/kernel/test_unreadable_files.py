"""What stands at the conflist path, or in the CNI cache, is not always a file kindplan can read.

An unreadable conflist (a directory, bytes that are not UTF-8, a FIFO) is left alone and named,
and the rest of the plan is applied; a FIFO is never opened for a writer that does not come
(which would hang the apply while it holds the node lock).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from nodes import Node
from shell import sh
from test_watch import PEERS, POD_ROUTES
from test_watch_agent import URL, agent
from watcher import has_route, http_get, metric, replace_file, wait_until

pytestmark = pytest.mark.root


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """kindplan, given 60 s: a hang (a FIFO opened for reading) fails the test instead."""
    return subprocess.run(
        [sys.executable, "-m", "kindplan.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def apply_args(node: Node, *extra: str) -> list[str]:
    return ["apply", *node.args(), "--state-dir", str(node.tmp / "state"), *extra]


def directory(path: Path) -> None:
    path.mkdir(parents=True)


def not_utf8(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"name": "kindnet\xff\xfe"}\n')


def fifo(path: Path) -> None:
    path.parent.mkdir(parents=True)
    os.mkfifo(path)


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (directory, "not a regular file (a directory)"),
        (not_utf8, "not UTF-8 text (byte 17)"),
        (fifo, "not a regular file (a FIFO)"),
    ],
)
def test_an_unreadable_conflist_is_named_and_the_rest_applied(
    seed_worker2: Node, make: Callable[[Path], None], kind: str
) -> None:
    make(seed_worker2.conflist)
    before = os.lstat(seed_worker2.conflist)
    content = None if seed_worker2.conflist.is_dir() else _bytes(seed_worker2.conflist)
    proc = run(*apply_args(seed_worker2))
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {seed_worker2.conflist}: cannot read: {kind}; kindplan leaves it alone and "
        "applies the rest: remove it and apply again"
    ], proc.stderr
    assert "Traceback" not in proc.stderr
    ns = seed_worker2.ns
    assert all(has_route(ns, dst) for dst in (*PEERS, *POD_ROUTES))
    assert "KIND-MASQ-AGENT" in seed_worker2.nat()
    after = os.lstat(seed_worker2.conflist)  # left alone: the same inode, the same bytes
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)
    if content is not None:
        assert _bytes(seed_worker2.conflist) == content

    again = run(*apply_args(seed_worker2))  # the node is converged but for the conflist
    assert again.returncode == 1 and "applied:" not in again.stdout, again.stdout
    plan = run("plan", *seed_worker2.args(), "--detailed-exitcode")
    assert plan.returncode == 1 and "kindplan leaves it alone" in plan.stderr

    if seed_worker2.conflist.is_dir():
        seed_worker2.conflist.rmdir()
    else:
        seed_worker2.conflist.unlink()
    fixed = run(*apply_args(seed_worker2))
    assert fixed.returncode == 0, fixed.stderr
    assert json.loads(seed_worker2.conflist.read_text())["name"] == "kindnet"


def _bytes(path: Path) -> bytes | None:
    if os.path.isfile(path):  # a FIFO is not read: it would wait for a writer
        return path.read_bytes()
    return None


def test_a_fifo_in_the_cni_cache_is_skipped_not_waited_on(seed_worker2: Node) -> None:
    cache = seed_worker2.tmp / "cni-cache"
    cache.mkdir()
    os.mkfifo(cache / "kindnet-0123456789ab-eth0")
    (cache / "kindnet-link").symlink_to(cache / "kindnet-0123456789ab-eth0")
    proc = run(*apply_args(seed_worker2, "--cni-cache-dir", str(cache)))
    assert proc.returncode == 0, proc.stderr
    assert f"{cache}/kindnet-0123456789ab-eth0: unreadable CNI cache entry (not a regular " in (
        proc.stderr
    )
    assert f"{cache}/kindnet-link: unreadable CNI cache entry" in proc.stderr
    assert all(has_route(seed_worker2.ns, dst) for dst in PEERS)


def test_the_loop_names_an_unreadable_conflist_once_and_applies_the_rest(
    seed_worker2: Node,
) -> None:
    snapshot = seed_worker2.tmp / "snapshot.yaml"
    snapshot.write_text(Path(seed_worker2.snapshot).read_text())
    fifo(seed_worker2.conflist)
    loop = agent(seed_worker2, snapshot, "--interval", "200ms")
    try:
        line = loop.wait_for(r"round 1: applied")
        first = loop.wait_for(r"error round 1: .*not a regular file \(a FIFO\); kindplan leaves")
        text = http_get(seed_worker2.ns, f"{URL}/metrics")[1]
        assert metric(text, "kindplan_errors_total", 'kind="conflist"') >= 1
        assert metric(text, "kindplan_rounds_total", 'result="failed"') >= 1
        assert metric(text, "kindplan_rounds_total", 'result="converged"') == 0
        assert all(has_route(seed_worker2.ns, dst) for dst in (*PEERS, *POD_ROUTES))
        sh("ip", "-n", seed_worker2.ns, "route", "del", PEERS[0])  # drift is still repaired
        wait_until(lambda: has_route(seed_worker2.ns, PEERS[0]))
        replace_file(snapshot, snapshot.read_text())  # an event: one more round at once
        seed_worker2.conflist.unlink()
        wait_until(seed_worker2.conflist.is_file)
        line = loop.wait_for(
            r"applied 1 change\(s\): added file .*10-kindnet.conflist \(new\)", after=line
        )
        said = [entry for entry in loop.lines if "kindplan leaves it alone" in entry]
        assert len(said) == 1 and first < line, loop.lines
        status, _ = loop.stop()
        assert status == 0
    finally:
        loop.kill()
