"""The reconcile loop as a real process against a node namespace: file events, bad input, the
deletion guard, signals, stdin, a ConfigMap-style directory, an idle minute, metrics and /healthz.

Route changes are expected within seconds while the interval is a minute: only the file event can
have caused them. Latencies are printed (pytest -s), not asserted: these machines are noisy.
"""

from __future__ import annotations

import copy
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from nodes import SEED, Node, build_node, kernel_events
from shell import sh
from watcher import (
    Watcher,
    has_route,
    http_get,
    json_lines,
    metric,
    replace_file,
    wait_until,
)

pytestmark = pytest.mark.root

PEERS = ("10.244.0.0/24", "10.244.1.0/24")  # worker2's peers in the seed lab
POD_ROUTES = ("10.244.2.8", "10.244.2.9")  # its pods' host routes
EXTRA = {"name": "extra", "internalIPs": ["172.18.0.20"], "podCIDRs": ["10.244.9.0/24"]}


def seed() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(SEED.read_text())
    return doc


def with_nodes(doc: dict[str, Any], nodes: list[dict[str, Any]]) -> str:
    doc = copy.deepcopy(doc)
    doc["nodes"] = nodes
    names = {n.get("name") for n in nodes}
    doc["pods"] = [p for p in doc["pods"] if p["node"] in names]
    return yaml.safe_dump(doc)


def watch_args(node: Node, snapshot: Path | str, *extra: str) -> list[str]:
    return [
        str(snapshot),
        "--node",
        node.name,
        "--netns",
        node.ns,
        "--conf-dir",
        str(node.tmp / "cni"),
        "--state-dir",
        str(node.tmp / "state"),
        "--cni-cache-dir",
        str(node.tmp / "no-cni-cache"),
        *extra,
    ]


def converged(node: Node) -> bool:
    """The one-shot plan on the same snapshot finds nothing to do."""
    plan = node.plan("--cni-cache-dir", str(node.tmp / "no-cni-cache"), "--detailed-exitcode")
    return plan.returncode == 0


@pytest.fixture
def snapshot_file(seed_worker2: Node) -> Path:
    path = seed_worker2.tmp / "snapshot.yaml"
    path.write_text(SEED.read_text())
    return path


def test_file_events_drive_the_loop_and_bad_input_changes_nothing(
    seed_worker2: Node, snapshot_file: Path
) -> None:
    ns = seed_worker2.ns
    loop = Watcher(watch_args(seed_worker2, snapshot_file, "--interval", "60s"))
    try:
        first = loop.wait_for(r"round 1: applied")
        assert all(has_route(ns, dst) for dst in PEERS)
        assert converged(seed_worker2)

        doc = seed()
        replace_file(snapshot_file, with_nodes(doc, [*doc["nodes"], EXTRA]))
        added = wait_until(lambda: has_route(ns, "10.244.9.0/24"))
        line = loop.wait_for(
            r"round 2: applied 1 change\(s\): added route 10\.244\.9\.0/24", after=first
        )

        snapshot_file.write_text(SEED.read_text())  # edited in place this time
        removed = wait_until(lambda: not has_route(ns, "10.244.9.0/24"))
        line = loop.wait_for(  # a deletion says so: it must not read like an addition
            r"round 3: applied 1 change\(s\): removed route 10\.244\.9\.0/24 .*"
            r"\(stale: no longer in the snapshot\) .*actions=removed:1",
            after=line,
        )
        print(f"\nfile event -> route added in {added:.3f} s, removed in {removed:.3f} s")

        before = sh("ip", "-n", ns, "route")
        snapshot_file.write_text("nodes: [\n")  # broken YAML
        line = loop.wait_for(r"error .*invalid YAML.*keeping the last good snapshot", after=line)
        replace_file(snapshot_file, with_nodes(doc, [{"name": "x"}]))  # fails the schema
        line = loop.wait_for(r"error .*nodes\[0\].*keeping the last good snapshot", after=line)
        snapshot_file.unlink()
        line = loop.wait_for(r"error .*cannot read.*keeping the last good snapshot", after=line)
        assert sh("ip", "-n", ns, "route") == before

        status, elapsed = loop.stop(signal.SIGTERM)
        assert status == 0
        assert elapsed < 60  # the 60 s interval was not waited out
        loop.wait_for(r"stopped signal=SIGTERM", after=line)
        print(f"SIGTERM -> exit 0 in {elapsed:.3f} s")
    finally:
        loop.kill()


def without_pods(doc: dict[str, Any]) -> str:
    doc = copy.deepcopy(doc)
    del doc["pods"]
    return yaml.safe_dump(doc)


@dataclass(frozen=True)
class Cut:
    """A shrunken snapshot: what it lost, the guard's word for those routes, the routes that
    go once the guard gives way and those that stay."""

    lost: str
    kind: str
    gone: tuple[str, ...]
    kept: tuple[str, ...]


@pytest.mark.parametrize(
    "cut",
    [
        Cut("peers", "peer", PEERS, POD_ROUTES),  # a node list that lost every peer
        Cut("pods", "pod", POD_ROUTES, PEERS),  # a snapshot cut before `pods:`
    ],
    ids=lambda cut: cut.lost,
)
def test_deletion_guard_holds_back_a_shrunken_cluster(
    seed_worker2: Node, snapshot_file: Path, cut: Cut
) -> None:
    ns, kind, gone, kept = seed_worker2.ns, cut.kind, cut.gone, cut.kept
    loop = Watcher(
        watch_args(seed_worker2, snapshot_file, "--interval", "300ms", "--hold-rounds", "4")
    )
    try:
        line = loop.wait_for(r"round 1: applied")
        doc = seed()
        own = [n for n in doc["nodes"] if n["name"] == seed_worker2.name]

        replace_file(snapshot_file, with_nodes(doc, []))  # an empty list fails the checks
        line = loop.wait_for(r"error .*keeping the last good snapshot", after=line)
        assert all(has_route(ns, dst) for dst in PEERS)

        shrunken = with_nodes(doc, own) if cut.lost == "peers" else without_pods(doc)
        replace_file(snapshot_file, shrunken)
        for streak in (1, 2, 3):
            line = loop.wait_for(
                rf"deletion guard: holding back the removal of 2 of 2 {kind} route\(s\) "
                rf".*\(asked {streak} times? so far\)",
                after=line,
            )
            assert all(has_route(ns, dst) for dst in gone), f"deleted at round {streak}"
        line = loop.wait_for(r"asked for 4 rounds in a row; applying the deletions", after=line)
        wait_until(lambda: not any(has_route(ns, dst) for dst in gone))
        line = loop.wait_for(r"applied 2 change\(s\)", after=line)
        assert all(has_route(ns, dst) for dst in kept)
        status, _ = loop.stop(signal.SIGINT)
        assert status == 0
    finally:
        loop.kill()


def test_operator_allows_deletions_at_once(seed_worker2: Node, snapshot_file: Path) -> None:
    ns = seed_worker2.ns
    loop = Watcher(
        watch_args(seed_worker2, snapshot_file, "--interval", "60s", "--max-delete-fraction", "1")
    )
    try:
        line = loop.wait_for(r"round 1: applied")
        doc = seed()
        own = [n for n in doc["nodes"] if n["name"] == seed_worker2.name]
        replace_file(snapshot_file, with_nodes(doc, own))
        wait_until(lambda: not any(has_route(ns, dst) for dst in PEERS))
        loop.wait_for(r"round 2: applied 2 change\(s\)", after=line)
        assert not any("deletion guard" in entry for entry in loop.lines)
        status, elapsed = loop.stop(signal.SIGTERM)  # converged, in the middle of a 60 s wait
        assert status == 0 and elapsed < 10, elapsed
    finally:
        loop.kill()


def test_a_refused_peer_is_said_once_and_does_not_fail_the_rounds(
    seed_worker2: Node, snapshot_file: Path
) -> None:
    ns = seed_worker2.ns
    snapshot_file.write_text(SEED.read_text().replace("172.18.0.10", "172.19.0.10"))
    sh("ip", "-n", ns, "addr", "flush", "dev", "eth0")
    sh("ip", "-n", ns, "addr", "add", "172.18.0.12/24", "dev", "eth0")  # .10 of /16 off-link now
    loop = Watcher(watch_args(seed_worker2, snapshot_file, "--interval", "200ms"))
    try:
        loop.wait_for(r"round 1: applied")
        assert has_route(ns, "10.244.1.0/24")
        loop.wait_for(r"warning refused: .*10\.244\.0\.0/24.*k8s-guide-control-plane")
        time.sleep(1.5)  # several more rounds at a 200 ms interval
        refused = [entry for entry in loop.lines if "refused:" in entry]
        errors = [entry for entry in loop.lines if " error " in entry]
        assert len(refused) == 1 and errors == [], loop.lines
        status, _ = loop.stop()
        assert status == 0
    finally:
        loop.kill()


def test_a_namespace_removed_under_the_loop_fails_its_rounds(
    seed_worker2: Node, snapshot_file: Path
) -> None:
    loop = Watcher(watch_args(seed_worker2, snapshot_file, "--interval", "200ms"))
    try:
        line = loop.wait_for(r"round 1: applied")
        sh("ip", "netns", "del", seed_worker2.ns)
        loop.wait_for(
            rf"error round \d+: no network namespace named '{seed_worker2.ns}'", after=line
        )
        status, _ = loop.stop()
        assert status == 0
    finally:
        loop.kill()


def test_stdin_stream_json_log_and_sighup(seed_worker2: Node) -> None:
    ns = seed_worker2.ns
    loop = Watcher(
        watch_args(seed_worker2, "-", "--interval", "60s", "--log-format", "json"), stdin=True
    )
    assert loop.proc.stdin is not None
    try:
        loop.wait_for(r'"msg": "watching"')
        line = loop.wait_for(r"no snapshot yet")  # nothing on stdin: nothing to apply
        loop.proc.stdin.write(SEED.read_text() + "---\n")
        loop.proc.stdin.flush()
        line = loop.wait_for(r"round \d+: applied", after=line)
        assert all(has_route(ns, dst) for dst in PEERS)

        doc = seed()
        loop.proc.stdin.write(with_nodes(doc, [*doc["nodes"], EXTRA]) + "---\n")
        loop.proc.stdin.flush()
        wait_until(lambda: has_route(ns, "10.244.9.0/24"))

        sh("ip", "-n", ns, "route", "del", "10.244.9.0/24")  # drift, repaired on SIGHUP at once
        loop.send(signal.SIGHUP)  # (the interval is a minute: only the signal can start a round)
        line = loop.wait_for(r"reload", after=line)
        wait_until(lambda: has_route(ns, "10.244.9.0/24"))

        loop.proc.stdin.close()  # the producer went away: the last snapshot stays in force
        line = loop.wait_for(r"round \d+", after=line + 1)  # a round for the end of the input
        sh("ip", "-n", ns, "route", "del", "10.244.9.0/24")
        loop.send(signal.SIGHUP)
        wait_until(lambda: has_route(ns, "10.244.9.0/24"))
        status, _ = loop.stop()
        assert status == 0
        entries = json_lines(loop.lines)  # every line is one JSON object
        assert {e["level"] for e in entries} <= {"info", "warning", "error"}
        applied = [e for e in entries if e["msg"].startswith("round") and "changes" in e]
        assert applied[0]["changes"]["add_route"] >= 2
        assert all(isinstance(e["duration_ms"], float | int) for e in applied)
    finally:
        loop.kill()


def test_configmap_directory_swap_is_seen(seed_worker2: Node) -> None:
    """A ConfigMap volume: files are symlinks into ..data, which is swapped by a rename."""
    ns = seed_worker2.ns
    volume = seed_worker2.tmp / "volume"
    volume.mkdir()

    def publish(version: int, text: str) -> None:
        data = volume / f"..2026_11_27_{version}"
        data.mkdir()
        (data / "snapshot.yaml").write_text(text)
        tmp = volume / "..data_tmp"
        tmp.symlink_to(data.name)
        tmp.rename(volume / "..data")
        if not (volume / "snapshot.yaml").is_symlink():
            (volume / "snapshot.yaml").symlink_to("..data/snapshot.yaml")

    publish(1, SEED.read_text())
    loop = Watcher(watch_args(seed_worker2, volume, "--interval", "60s"))
    try:
        line = loop.wait_for(r"round 1: applied")
        doc = seed()
        publish(2, with_nodes(doc, [*doc["nodes"], EXTRA]))
        wait_until(lambda: has_route(ns, "10.244.9.0/24"))
        loop.wait_for(r"round 2: applied 1 change", after=line)
    finally:
        loop.kill()


def test_idle_minute_writes_nothing_and_costs_little_cpu(
    seed_worker2: Node, snapshot_file: Path
) -> None:
    """A converged loop, a round every second for a minute: no netlink event at all."""
    seconds = float(os.environ.get("KINDPLAN_IDLE_SECONDS", "60"))
    loop = Watcher(watch_args(seed_worker2, snapshot_file, "--interval", "1s"))
    try:
        loop.wait_for(r"round 1: applied")
        wait_until(lambda: converged(seed_worker2))
        conflist = seed_worker2.conflist.stat()
        nat = seed_worker2.nat()
        with kernel_events(seed_worker2.ns) as events:
            cpu_before, started = loop.cpu_seconds(), time.monotonic()
            time.sleep(seconds)
            cpu = loop.cpu_seconds() - cpu_before
            wall = time.monotonic() - started
        # netlink events do not show iptables or file writes: those are compared instead
        assert seed_worker2.nat() == nat
        after = seed_worker2.conflist.stat()
        assert (after.st_ino, after.st_mtime_ns) == (conflist.st_ino, conflist.st_mtime_ns)
        rounds = len([entry for entry in loop.lines if "round" in entry])
        assert events == [], events
        assert rounds == 1, "a converged round must not log: " + "\n".join(loop.lines)
        print(f"\nidle {wall:.0f} s at a 1 s interval: CPU {cpu:.2f} s ({100 * cpu / wall:.1f}%)")
        assert cpu < wall / 2  # a sanity bound only; the figure above is what counts
    finally:
        loop.kill()


def test_metrics_move_and_healthz_fails_with_the_rounds(
    seed_worker2: Node, snapshot_file: Path
) -> None:
    """The loop runs inside the node namespace (ip netns exec), so the scrape stays there too."""
    ns = seed_worker2.ns
    args = watch_args(seed_worker2, snapshot_file, "--interval", "200ms")
    args = [a for a in args if a not in ("--netns", ns)]
    loop = Watcher(
        [*args, "--metrics-addr", "127.0.0.1:9177", "--healthz-max-age", "1s"], in_netns=ns
    )
    url = "http://127.0.0.1:9177"
    try:
        loop.wait_for(r"round 1: applied")
        status, first = http_get(ns, f"{url}/metrics")
        assert status == 200
        assert metric(first, "kindplan_changes_applied_total", 'kind="add_route"') >= 2
        assert metric(first, "kindplan_owned_routes") == 4  # two peers, two pod host routes
        assert metric(first, "kindplan_last_success_timestamp_seconds") > time.time() - 60
        assert metric(first, "kindplan_snapshot_nodes") == 3
        assert http_get(ns, f"{url}/healthz") == (200, "ok\n")

        def converged_rounds() -> float:
            text = http_get(ns, f"{url}/metrics")[1]
            return metric(text, "kindplan_rounds_total", 'result="converged"')

        seen = converged_rounds()
        wait_until(lambda: converged_rounds() >= seen + 3)

        sh("ip", "-n", ns, "link", "del", "eth0")  # every round now fails: no uplink
        wait_until(lambda: http_get(ns, f"{url}/healthz")[0] == 503, timeout=15)
        status, body = http_get(ns, f"{url}/healthz")
        assert "no successful round" in body
        text = http_get(ns, f"{url}/metrics")[1]
        assert metric(text, "kindplan_errors_total", 'kind="node"') >= 1
        assert metric(text, "kindplan_rounds_total", 'result="failed"') >= 1
        loop.wait_for(r"error round \d+: no interface of node k8s-guide-worker2 holds its Internal")

        build_node(ns, ["172.18.0.12/16"], [])  # the uplink is back: rounds succeed again
        wait_until(lambda: http_get(ns, f"{url}/healthz")[0] == 200, timeout=20)
        assert http_get(ns, f"{url}/nope")[0] == 404
        status, _ = loop.stop()
        assert status == 0
    finally:
        loop.kill()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--interval", "soon"], "--interval: 'soon' is not a duration"),
        (["--log-format", "xml"], "--log-format"),
        (["--kube"], "exactly one of SNAPSHOT"),
        (["--metrics-addr", "localhost"], "--metrics-addr: 'localhost' is not HOST:PORT"),
        (["--max-delete-fraction", "2"], "--max-delete-fraction"),
    ],
)
def test_bad_loop_flags_are_usage_errors(
    seed_worker2: Node, snapshot_file: Path, flags: list[str], message: str
) -> None:
    loop = Watcher(watch_args(seed_worker2, snapshot_file, *flags))
    try:
        assert loop.proc.wait(30) == 64
        loop._reader.join(5)
        assert any(message in line for line in loop.lines), loop.lines
    finally:
        loop.kill()
