"""A root tool on a shared node: what another user can write cannot steer it (#21).

Each case is what a local user without privileges, or a careless operator, can really do: make
the state folder first in a sticky /tmp, make a folder above it writable, swap the journal for a
link to a file of root's, hold a flock on the namespace's world-readable file, leave a lock held
by a child whose parent is gone, name an uplink in the CNI cache.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from nodes import KINDPLAN, Node, build_node, cni_cache_entry, kindplan
from shell import sh

from kindplan.node.locking import LOCK_DIR, apply_lock

pytestmark = pytest.mark.root

NOBODY = 65534


def as_nobody(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", "nobody", "--", *cmd], capture_output=True, text=True, check=True
    )


def sticky_tmp(tmp_path: Path) -> Path:
    """A folder like /tmp: root's, writable by all, sticky."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    folder.chmod(0o1777)
    # pytest's own folders are 0700: let nobody reach this one
    for up in (tmp_path, *tmp_path.parents):
        if up == Path("/"):
            break
        up.chmod(up.stat().st_mode | 0o011)
    return folder


def one_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.splitlines()
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def nothing_applied(node: Node) -> None:
    assert all("proto 75" not in line for line in node.routes()), node.routes()
    assert not node.conflist.exists()


def test_a_state_folder_another_user_made_first_is_refused(seed_worker2: Node) -> None:
    node = seed_worker2
    state = sticky_tmp(node.tmp) / "state"
    as_nobody("mkdir", str(state))
    result = node.apply("--state-dir", str(state))
    line = one_error(result)
    assert line == (
        f"error: {state} (on the way to {state}/netns-{node.ns}) is owned by uid {NOBODY}: "
        f"another user could steer kindplan through its state; chown root {state}, "
        "or choose another"
    )
    nothing_applied(node)
    rollback = kindplan("rollback", "--netns", node.ns, "--state-dir", str(state))
    assert one_error(rollback) == line
    assert os.listdir(state) == [], "nothing written into the other user's folder"


def test_a_writable_folder_above_the_state_is_refused(seed_worker2: Node) -> None:
    node = seed_worker2
    shared = node.tmp / "shared"
    shared.mkdir()
    shared.chmod(0o775)  # a group may write here: it could swap "state" for its own
    state = shared / "state"
    line = one_error(node.apply("--state-dir", str(state)))
    assert line == (
        f"error: {shared} (on the way to {state / ('netns-' + node.ns)}) is writable by group: "
        f"another user could steer kindplan through its state; chmod go-w {shared}"
    )
    nothing_applied(node)
    assert not state.exists()


def test_a_state_folder_in_a_sticky_tmp_is_made_private(seed_worker2: Node) -> None:
    node = seed_worker2
    state = sticky_tmp(node.tmp) / "state"
    result = node.apply("--state-dir", str(state))
    assert result.returncode == 0, result.stderr
    for folder in (state, state / f"netns-{node.ns}"):
        st = folder.stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o700), folder


def test_a_journal_swapped_for_a_link_is_named_and_its_target_kept(seed_worker2: Node) -> None:
    node = seed_worker2
    assert node.apply().returncode == 0
    journal = node.tmp / "state" / f"netns-{node.ns}" / "journal.json"
    foreign = node.tmp / "foreign.json"
    foreign.write_text('{"someone": "else"}\n')
    journal.unlink()
    journal.symlink_to(foreign)
    rollback = kindplan("rollback", "--netns", node.ns, "--state-dir", str(node.tmp / "state"))
    assert "unusable journal (cannot read: not a regular file (a symbolic link))" in (
        one_error(rollback)
    )
    changed = node.tmp / "changed.yaml"
    changed.write_text(node.snapshot.read_text().replace("172.18.0.11", "172.18.0.21"))
    apply = node.apply(snapshot=changed)
    assert apply.returncode == 1 and "unusable journal" in apply.stderr
    assert foreign.read_text() == '{"someone": "else"}\n'
    assert journal.is_symlink()
    assert not any("172.18.0.21" in line for line in node.routes()), "refused before writing"


def test_a_flock_on_the_namespace_file_by_anyone_stops_nothing(seed_worker2: Node) -> None:
    """The namespace's file in /run/netns is world-readable: any user can flock it."""
    node = seed_worker2
    holder = subprocess.Popen(
        ["runuser", "-u", "nobody", "--", "flock", f"/run/netns/{node.ns}", "sleep", "30"]
    )
    try:
        time.sleep(0.3)
        held = subprocess.run(["flock", "-n", f"/run/netns/{node.ns}", "true"], check=False)
        assert holder.poll() is None and held.returncode == 1, "nobody holds the flock"
        result = node.apply("--lock-timeout", "0")
        assert result.returncode == 0, result.stderr
    finally:
        holder.kill()
        holder.wait()
    st = LOCK_DIR.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o700)
    assert apply_lock(node.ns).parent == LOCK_DIR


def test_the_wait_names_the_live_holder_not_the_dead_locker(seed_worker2: Node) -> None:
    """flock's pid in /proc/locks is the process that took the lock; a child that inherited the
    descriptor holds it after that one has exited."""
    node = seed_worker2
    lock = apply_lock(node.ns)
    LOCK_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    script = f'exec 9>>{lock}; flock 9; sleep 10 >/dev/null 2>&1 & echo "$!"'
    started = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    child = int(started.stdout)
    try:
        result = node.apply("--lock-timeout", "30")
        assert result.returncode == 0, result.stderr
        assert result.stderr.startswith(
            f"waiting for {lock}: held by pid {child} (sleep 10); up to 30 s (--lock-timeout)\n"
        ), result.stderr
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, 9)


def test_a_cni_cache_entry_naming_the_uplink_is_skipped(seed_worker2: Node) -> None:
    node = seed_worker2
    cache = node.tmp / "results"
    cache.mkdir()
    good = cni_cache_entry("veth4b2c9d10", "10.244.2.30")
    (cache / "kindnet-c0ffee-eth0").write_text(json.dumps(good))
    bad = {
        **cni_cache_entry("eth0", "10.244.2.31"),
        "containerId": "beef",
        "cniArgs": [["K8S_POD_NAMESPACE", "shop"], ["K8S_POD_NAME", "evil-1"]],
    }
    (cache / "kindnet-beef-eth0").write_text(json.dumps(bad))
    result = node.apply("--cni-cache-dir", str(cache))
    assert result.returncode == 0, result.stderr
    assert "names eth0, the node's uplink, as its host veth; skipped" in result.stderr
    routes = node.routes()
    assert "10.244.2.30 dev veth4b2c9d10 proto 75 scope host " in routes
    assert not any(line.startswith("10.244.2.31") for line in routes)
    assert any("10.244.1.0/24 via 172.18.0.11" in line for line in routes), "peers still routed"


def test_a_relative_conf_dir_is_journaled_absolute(seed_worker2: Node) -> None:
    """Rollback run from another folder removes the conflist the apply wrote, not another."""
    node = seed_worker2
    state = str(node.tmp / "state")
    args = [str(node.snapshot), "--node", node.name, "--netns", node.ns, "--state-dir", state]
    applied = subprocess.run(
        [*KINDPLAN, "apply", *args, "--conf-dir", "cni-rel"],
        cwd=node.tmp,
        capture_output=True,
        text=True,
        check=False,
    )
    assert applied.returncode == 0, applied.stderr
    conflist = node.tmp / "cni-rel" / "10-kindnet.conflist"
    assert f"file {conflist} (new)" in applied.stdout
    back = subprocess.run(
        [*KINDPLAN, "rollback", "--netns", node.ns, "--state-dir", state],
        cwd="/",
        capture_output=True,
        text=True,
        check=False,
    )
    assert back.returncode == 0, back.stderr
    assert f"removed: file {conflist}" in back.stdout
    assert not conflist.exists()


def test_rollback_acts_only_in_the_namespace_the_apply_changed(
    seed_worker2: Node, make_netns: Callable[[], str]
) -> None:
    """Applied through `ip netns exec A` and rolled back through `ip netns exec B` (both without
    --netns: the journal's target is `host` either way), the rollback refuses and B is untouched."""
    node, other = seed_worker2, make_netns()
    build_node(other, ["172.18.0.12/16"], ["vetha1079faf", "veth4b2c9d10"])
    sh("ip", "-n", other, "route", "add", "10.244.1.0/24", "via", "172.18.0.11", "proto", "75")
    state = str(node.tmp / "state")
    conf = ["--conf-dir", str(node.tmp / "cni")]
    args = [str(node.snapshot), "--node", node.name, *conf, "--state-dir", state]
    inside = ["ip", "netns", "exec"]
    applied = subprocess.run(
        [*inside, node.ns, *KINDPLAN, "apply", *args], capture_output=True, text=True, check=False
    )
    assert applied.returncode == 0, applied.stderr
    before = sh("ip", "-n", other, "route", "show")
    refused = subprocess.run(
        [*inside, other, *KINDPLAN, "rollback", "--state-dir", state],
        capture_output=True,
        text=True,
        check=False,
    )
    line = one_error(refused)
    assert "changed another network namespace" in line and "rollback acts only where" in line
    assert sh("ip", "-n", other, "route", "show") == before
    assert node.conflist.exists(), "A's conflist stays"
    back = subprocess.run(
        [*inside, node.ns, *KINDPLAN, "rollback", "--state-dir", state],
        capture_output=True,
        text=True,
        check=False,
    )
    assert back.returncode == 0, back.stderr
    assert not node.conflist.exists()
    assert all("proto 75" not in r for r in node.routes())


def test_rollback_leaves_alone_a_route_someone_put_there_since(seed_worker2: Node) -> None:
    """Compare-and-swap: the apply replaced a foreign route (--adopt) and deleted a stale one of
    its own; a routing daemon has since put its routes at both destinations. Rollback restores
    neither over the daemon's, says so with the command that would, and rolls back the rest."""
    node = seed_worker2
    state = ["--netns", node.ns, "--state-dir", str(node.tmp / "state")]
    sh("ip", "-n", node.ns, "route", "add", "10.244.1.0/24", "via", "172.18.0.77", "proto", "3")
    sh("ip", "-n", node.ns, "route", "add", "10.244.9.0/24", "via", "172.18.0.19", "proto", "75")
    assert node.apply("--adopt").returncode == 0
    for dst, gateway in (("10.244.1.0/24", "172.18.0.99"), ("10.244.9.0/24", "172.18.0.98")):
        sh("ip", "-n", node.ns, "route", "replace", dst, "via", gateway, "proto", "186")
    back = kindplan("rollback", *state)
    assert back.returncode == 0, back.stderr
    left = [line for line in back.stderr.splitlines() if line.startswith("left alone: route ")]
    assert len(left) == 2, back.stderr
    assert any(
        "10.244.1.0/24 via 172.18.0.77" in line
        and "ip route replace 10.244.1.0/24 via 172.18.0.77 dev eth0 proto 3" in line
        for line in left
    )
    assert any("10.244.9.0/24 via 172.18.0.19" in line for line in left)
    routes = node.routes()
    assert "10.244.1.0/24 via 172.18.0.99 dev eth0 proto bgp " in routes
    assert "10.244.9.0/24 via 172.18.0.98 dev eth0 proto bgp " in routes
    assert not any("proto 75" in r for r in routes), "the rest is rolled back"
    assert "2 left alone" in back.stdout


def test_a_conflist_that_is_a_link_is_left_alone_and_never_read(seed_worker2: Node) -> None:
    """A link at the conflist path is someone's: kindplan neither follows it (a root-only
    file's bytes would land in the journal) nor replaces it with a regular file."""
    node = seed_worker2
    secret = node.tmp / "secret"
    secret.write_text("SECRET\n")
    secret.chmod(0o600)
    node.conflist.parent.mkdir(parents=True)
    node.conflist.symlink_to(secret)
    result = node.apply()
    assert "not a regular file (a symbolic link)" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert node.conflist.is_symlink() and secret.read_text() == "SECRET\n"
    assert any("proto 75" in r for r in node.routes()), "the rest of the node is routed"
    journal = node.tmp / "state" / f"netns-{node.ns}" / "journal.json"
    assert "SECRET" not in journal.read_text()
