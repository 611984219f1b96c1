"""The reconcile loop's parts that need no kernel: the deletion guard, the timing, the log, the
metrics endpoint's pieces, and the file, directory and stdin sources (inotify works unprivileged).
"""

from __future__ import annotations

import io
import json
import os
import select
import time
from collections.abc import Callable
from dataclasses import replace
from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest
import yaml
from builders import cluster_doc, load
from test_diff import converged, desired_state, simulate

from kindplan.agent.logs import Log
from kindplan.agent.metrics import Health, Metrics, parse_listen_address
from kindplan.agent.watch import LoopSettings, change_kind, next_delay
from kindplan.cli.watch import duration
from kindplan.core.changes import (
    AddRoute,
    Change,
    DelAddress,
    DeleteConflist,
    DelRoute,
    Plan,
    RemoveMasquerade,
    WriteConflist,
    WriteMasquerade,
)
from kindplan.core.compiler import compile_desired
from kindplan.core.diff import diff
from kindplan.core.document import MAX_INPUT_BYTES
from kindplan.core.guard import DeletionGuard, split_deletions
from kindplan.core.masq.value import Masquerade
from kindplan.core.model import Address, DesiredState, HostFacts, ObservedState
from kindplan.core.routes import Route
from kindplan.errors import InvalidInputError, SourceError, UsageError
from kindplan.inputs.files import FileSource, combine_directory
from kindplan.inputs.stdin import StdinSource

PATH = "/etc/cni/net.d/10-kindnet.conflist"


def shrink(nodes: int, keep: int, pods: bool = True) -> tuple[ObservedState, Plan]:
    """A node converged on a `nodes`-node cluster, and its plan once only `keep` nodes are left."""
    observed = converged(desired_state(nodes, pods=pods))
    return observed, diff(desired_state(keep, pods=pods), observed, conflist_path=PATH)


@pytest.mark.parametrize(
    ("nodes", "keep", "fraction", "held"),
    [
        (5, 1, 0.5, 4),  # 4 of 4 peer routes would go: held back
        (5, 3, 0.5, 0),  # 2 of 4: not more than half, applied
        (5, 2, 0.5, 3),  # 3 of 4
        (5, 1, 1.0, 0),  # the operator allows anything
        (5, 4, 0.0, 1),  # 0: any deletion waits for the persistence rule
        (3, 3, 0.5, 0),  # nothing deleted
    ],
)
def test_guard_holds_back_only_a_large_share_of_peer_routes(
    nodes: int, keep: int, fraction: float, held: int
) -> None:
    observed, plan = shrink(nodes, keep)
    guarded = split_deletions(plan, observed, 75, fraction)
    assert len(guarded.held) == held
    if keep < nodes:  # (not counted when nothing is removed)
        assert guarded.owned == nodes - 1  # the pod's host route is not a peer route
    assert all(isinstance(c, DelRoute) and c.route.gateway for c in guarded.held)
    assert set(guarded.plan.changes) | set(guarded.held) == set(plan.changes)


def test_guard_keeps_additions_of_a_shrinking_round() -> None:
    observed = converged(desired_state(5, pods=True))
    doc = cluster_doc(5)
    new = {"name": "new", "internalIPs": ["198.18.0.200"], "podCIDRs": ["10.244.200.0/24"]}
    doc["nodes"] = [*doc["nodes"][:1], new]
    desired: DesiredState = compile_desired(load(doc), "node-0000", HostFacts())
    guarded = split_deletions(diff(desired, observed, conflist_path=PATH), observed, 75, 0.5)
    assert guarded.kinds == (("peer route(s)", 4, 4), ("pod route(s)", 1, 1))
    assert [c.route.peer for c in guarded.plan.changes if isinstance(c, AddRoute)] == ["new"]


def test_guard_counts_deletions_of_the_last_minute_with_the_rounds_own() -> None:
    """A shrink that comes as one DELETED event per round is caught like one at once."""
    now = [0.0]
    guard = DeletionGuard(0.5, rounds=3, clock=lambda: now[0])
    observed, plan = shrink(9, 7)  # 2 of 8 peer routes
    assert guard.check(plan, observed, 75).held == ()
    guard.applied(plan.changes)
    observed, plan = shrink(7, 5)  # 2 more of the 6 left: 4 of the 8 of a moment ago
    assert guard.check(plan, observed, 75).held == ()
    guard.applied(plan.changes)
    observed, plan = shrink(5, 4)  # 1 more: 5 of 8 within a minute
    assert len(guard.check(plan, observed, 75).held) == 1
    now[0] = 61.0  # a minute later the earlier deletions no longer count
    assert guard.check(plan, observed, 75).held == ()


def test_guard_wants_time_as_well_as_rounds() -> None:
    now = [0.0]
    guard = DeletionGuard(0.5, rounds=3, min_seconds=20, clock=lambda: now[0])
    observed, plan = shrink(5, 1)
    for t in (0.0, 0.3, 0.6, 1.0):  # quick rounds (events, backoff) do not add up to time
        now[0] = t
        assert len(guard.check(plan, observed, 75).held) == 4
    now[0] = 20.0
    assert guard.check(plan, observed, 75).held == () and guard.released


def test_guard_at_5000_nodes_holds_every_deletion() -> None:
    observed, plan = shrink(5000, 1, pods=False)  # hash lookups: this took 14 s with a tuple scan
    guarded = split_deletions(plan, observed, 75, 0.5)
    assert guarded.kinds[0] == ("peer route(s)", 4999, 4999)  # (the builder's pod range moves)
    assert not any(isinstance(c, DelRoute) for c in guarded.plan.changes)


def test_guard_releases_deletions_that_persist_and_resets_when_they_change() -> None:
    observed, plan = shrink(5, 1)
    guard = DeletionGuard(0.5, rounds=3, clock=lambda: 0.0)
    assert [len(guard.check(plan, observed, 75).held) for _ in range(2)] == [4, 4]
    released = guard.check(plan, observed, 75)
    assert released.held == () and released.plan == plan and guard.released
    # after the release the streak starts again; a different set of deletions restarts it too
    assert len(guard.check(plan, observed, 75).held) == 4
    _, other = shrink(5, 2)
    assert len(guard.check(other, observed, 75).held) == 3
    assert guard.streak == 1
    # a round with nothing to hold back forgets the streak
    assert guard.check(Plan("node-0000", ()), observed, 75).held == ()
    assert guard.streak == 0 and not guard.released


def test_applying_what_the_guard_lets_through_then_the_rest_converges() -> None:
    observed, plan = shrink(5, 1)
    guard = DeletionGuard(0.5, rounds=2, clock=lambda: 0.0)
    first = guard.check(plan, observed, 75)
    after = simulate(observed, first.plan)
    assert len([r for r in after.routes if r.gateway]) == 4  # peers kept
    second = guard.check(diff(desired_state(1), after, conflist_path=PATH), after, 75)
    final = simulate(after, second.plan)
    assert diff(desired_state(1), final, conflist_path=PATH).empty


def test_backoff_doubles_from_one_second_up_to_the_cap_and_jitter_spreads() -> None:
    settings = LoopSettings(interval=10, jitter=0.1, backoff_max=60)
    middle = lambda lo, hi: (lo + hi) / 2  # noqa: E731
    assert [next_delay(settings, n, middle) for n in range(9)] == [
        10, 1, 2, 4, 8, 16, 32, 60, 60,
    ]  # fmt: skip
    assert next_delay(settings, 10**6, middle) == 60  # no overflow after days of failures
    assert next_delay(LoopSettings(interval=0.2), 1, middle) == 0.2
    assert next_delay(settings, 0, lambda lo, hi: lo) == pytest.approx(9)
    assert next_delay(settings, 0, lambda lo, hi: hi) == pytest.approx(11)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10), ("500ms", 0.5), ("2m", 120), ("1h", 3600), ("1.5", 1.5), (" 3s ", 3)],
)
def test_durations(text: str, seconds: float) -> None:
    assert duration("--interval", text) == seconds


@pytest.mark.parametrize("text", ["", "s", "0s", "-1s", "10x", "nan", "inf", "1e400", "ten"])
def test_bad_durations_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match=r"--interval: .* is not a duration"):
        duration("--interval", text)


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("127.0.0.1:9177", ("127.0.0.1", 9177)),
        (":9177", ("::", 9177)),
        ("[::1]:80", ("::1", 80)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
    ],
)
def test_listen_addresses(text: str, address: tuple[str, int]) -> None:
    assert parse_listen_address(text) == address


@pytest.mark.parametrize("text", ["localhost", "1.2.3.4:", "host:99999", "host:http"])
def test_bad_listen_addresses(text: str) -> None:
    with pytest.raises(UsageError, match="--metrics-addr"):
        parse_listen_address(text)


def test_change_kinds_are_metric_labels() -> None:
    conflist = WriteConflist(PATH, "{}", None)
    assert change_kind(conflist) == "write_conflist"
    _, plan = shrink(3, 1)
    assert {change_kind(c) for c in plan.changes} == {"del_route"}


def test_health_turns_bad_when_no_round_succeeds_in_time() -> None:
    health = Health(max_age=0.05)
    assert health.status() == (True, "ok")
    time.sleep(0.06)
    ok, text = health.status()
    assert not ok and "no successful round for" in text
    health.succeeded()
    assert health.status()[0]


def test_metrics_exposition_names_every_metric() -> None:
    metrics = Metrics()
    metrics.changes.labels("add_route").inc(3)
    text = metrics.exposition().decode()
    for name in (
        "kindplan_rounds_total",
        "kindplan_round_duration_seconds_bucket",
        "kindplan_changes_applied_total",
        "kindplan_owned_routes",
        "kindplan_last_success_timestamp_seconds",
        "kindplan_plan_pending_changes",
        "kindplan_deletions_held_back",
        "kindplan_snapshot_nodes",
    ):
        assert name in text
    assert 'kindplan_changes_applied_total{kind="add_route"} 3.0' in text
    assert 'kindplan_rounds_total{result="failed"} 0.0' in text


def test_log_lines_text_and_json() -> None:
    out = io.StringIO()
    Log("text", out).error("bad\nthing", kind="source", n=2.5, changes={"add_route": 1})
    line = out.getvalue()
    assert line.count("\n") == 1 and line.endswith("kind=source n=2.5 changes=add_route:1\n")
    assert " error bad\\nthing " in line
    out = io.StringIO()
    Log("json", out).info("round 3: applied", round=3, changes={"add_route": 1})
    entry = json.loads(out.getvalue())
    assert entry["level"] == "info" and entry["round"] == 3 and entry["time"].endswith("Z")


def test_each_log_writes_to_its_own_stream_only() -> None:
    first, second = io.StringIO(), io.StringIO()
    Log("text", first).info("one")
    Log("json", second).warning("two")
    assert first.getvalue().count("\n") == 1 and " info one" in first.getvalue()
    assert [json.loads(line)["msg"] for line in second.getvalue().splitlines()] == ["two"]


def readable(fd: int | None, timeout: float = 5.0) -> bool:
    assert fd is not None
    return bool(select.select([fd], [], [], timeout)[0])


def test_file_source_wakes_on_rename_and_close_and_parses_only_new_bytes(tmp_path: Path) -> None:
    path = tmp_path / "snapshot.json"
    path.write_text(json.dumps(cluster_doc(3)))
    source = FileSource(str(path))
    try:
        first = source.read()
        assert source.read() is first  # same bytes: no parse
        (tmp_path / "unrelated.txt").write_text("x")
        assert readable(source.fileno()) and not source.poll()  # another file: no round
        tmp = tmp_path / ".new"
        tmp.write_text(json.dumps(cluster_doc(4)))
        tmp.rename(path)
        assert readable(source.fileno()) and source.poll()
        assert len(source.read().snapshot.nodes) == 4
        path.write_text("{")
        assert readable(source.fileno()) and source.poll()
        with pytest.raises(InvalidInputError):
            source.read()
        path.unlink()
        assert readable(source.fileno()) and source.poll()
        with pytest.raises(SourceError, match="cannot read"):  # the source, not the snapshot
            source.read()
    finally:
        source.close()


def test_file_source_watches_a_folder_again_once_it_is_back(tmp_path: Path) -> None:
    folder = tmp_path / "snap"
    folder.mkdir()
    path = folder / "cluster.json"
    path.write_text(json.dumps(cluster_doc(3)))
    source = FileSource(str(path))
    try:
        source.read()
        path.unlink()
        folder.rmdir()  # a hostPath or volume made again
        assert readable(source.fileno()) and source.poll()
        with pytest.raises(SourceError):
            source.read()
        folder.mkdir()
        path.write_text(json.dumps(cluster_doc(2)))
        assert len(source.read().snapshot.nodes) == 2  # each read watches the folder again
        source.poll()
        path.write_text(json.dumps(cluster_doc(4)))
        assert readable(source.fileno()) and source.poll()
        assert len(source.read().snapshot.nodes) == 4
    finally:
        source.close()


def test_file_source_without_inotify_still_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kindplan.inputs.inotify

    def refuse(self: object, directory: str) -> None:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(kindplan.inputs.inotify.DirectoryWatch, "__init__", refuse)
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps(cluster_doc(3)))
    said: list[str] = []
    source = FileSource(str(path), log=said.append)
    assert source.fileno() is None and not source.poll()
    assert len(source.read().snapshot.nodes) == 3
    assert said == [f"{path}: no inotify (Too many open files); changes are seen every round only"]
    source.close()


def test_directory_of_nodes_is_one_node_list(tmp_path: Path) -> None:
    nodes = [
        {
            "kind": "Node",
            "metadata": {"name": f"n{i}"},
            "spec": {"podCIDR": f"10.244.{i}.0/24"},
            "status": {"addresses": [{"type": "InternalIP", "address": f"198.18.0.{i + 1}"}]},
        }
        for i in range(3)
    ]
    (tmp_path / "a.json").write_text(json.dumps(nodes[0]))
    (tmp_path / "b.yaml").write_text(json.dumps({"kind": "NodeList", "items": nodes[1:]}))
    (tmp_path / ".hidden.json").write_text("not read")
    (tmp_path / "notes.txt").write_text("not read")
    source = FileSource(str(tmp_path), ["10.244.0.0/16"])
    try:
        assert [n.name for n in source.read().snapshot.nodes] == ["n0", "n1", "n2"]
    finally:
        source.close()
    (tmp_path / "c.json").write_text(json.dumps(cluster_doc(2)))
    with pytest.raises(InvalidInputError, match=r"c\.json: ClusterSnapshot: with several files"):
        combine_directory(str(tmp_path))
    for name in ("a.json", "b.yaml"):
        (tmp_path / name).unlink()
    assert json.loads(combine_directory(str(tmp_path)))["kind"] == "ClusterSnapshot"
    (tmp_path / "c.json").unlink()
    with pytest.raises(InvalidInputError, match="no snapshot file"):
        combine_directory(str(tmp_path))


def test_stdin_stream_publishes_each_document_and_the_last_one_at_the_end() -> None:
    read_end, write_end = os.pipe()
    with open(read_end, "rb") as stream, open(write_end, "wb", buffering=0) as producer:
        source = StdinSource(stream=stream)
        try:
            with pytest.raises(SourceError, match="no snapshot yet"):
                source.read()
            producer.write(json.dumps(cluster_doc(2)).encode() + b"\n---\n")
            assert readable(source.fileno()) and source.poll()
            first = source.read()
            assert len(first.snapshot.nodes) == 2 and source.read() is first
            producer.write(json.dumps(cluster_doc(3), indent=1).encode())  # no separator
            producer.close()  # the end of the input ends the document
            deadline = time.monotonic() + 5
            while not source.closed and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(source.read().snapshot.nodes) == 3
        finally:
            source.close()


def stdin_source_after(data: bytes) -> StdinSource:
    """A StdinSource that has read all of `data` (the end of the input ends the last document)."""
    source = StdinSource(stream=io.BytesIO(data))
    deadline = time.monotonic() + 30
    while not source.closed and time.monotonic() < deadline:
        time.sleep(0.01)
    return source


def test_stdin_document_over_the_limit_is_refused_whole_not_cut() -> None:
    good = json.dumps(cluster_doc(3)).encode() + b"\n---\n"
    # A valid document whose first 64 MiB parse (2 nodes), then more than the limit of comments.
    big = yaml.safe_dump(cluster_doc(2)).encode() + b"#" * MAX_INPUT_BYTES + b"\n"
    source = stdin_source_after(good + big + b"---\n")
    try:
        with pytest.raises(InvalidInputError, match=r"<stdin>: document of \d+ bytes is over"):
            source.read()
    finally:
        source.close()
    source = stdin_source_after(good + big)  # also as the last document, without a separator
    try:
        with pytest.raises(InvalidInputError, match="over the 64 MiB limit; refused whole"):
            source.read()
    finally:
        source.close()


def test_stdin_separator_only_at_the_start_of_a_line() -> None:
    """A line longer than one read, ending in '---', does not end the document."""
    doc = json.dumps(cluster_doc(2)).encode()
    long_line = b"#" * (1 << 20) + b"---\n"  # the second read of the line is "---\n"
    source = stdin_source_after(long_line + doc + b"\n---\n")
    try:
        assert len(source.read().snapshot.nodes) == 2
    finally:
        source.close()


def test_guard_holds_back_a_snapshot_cut_before_its_pods() -> None:
    """Every pod host route at once: held, though no peer route goes (the peers' rule kept)."""
    observed = converged(desired_state(5, pods=True))
    plan = diff(desired_state(5, pods=False), observed, conflist_path=PATH)
    guarded = split_deletions(plan, observed, 75, 0.5)
    assert guarded.kinds == (("pod route(s)", 1, 1),)
    assert [c.route.dst.prefixlen for c in guarded.held if isinstance(c, DelRoute)] == [32]
    assert guarded.plan.empty


def _last_rule(masq: Masquerade | None) -> Masquerade:
    assert masq is not None
    return Masquerade(masq.version, masq.rules[-1:])


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        (lambda o: DelAddress(Address("veth1", ip_address("10.244.0.1"))), "veth address(es)"),
        (lambda o: DeleteConflist(PATH, o.conflist), "conflist(s)"),
        (lambda o: RemoveMasquerade(4, o.masq[0].masq, 1), "SNAT chain(s)"),
        (  # the nonMasqueradeCIDRs and the pod subnet's RETURN gone: only MASQUERADE left
            lambda o: WriteMasquerade(4, _last_rule(o.masq[0].masq), o.masq[0].masq, 1),
            "SNAT rule(s)",
        ),
        (  # the node's pod range gone from the conflist (a PodCIDR list cut short)
            lambda o: WriteConflist(PATH, o.conflist.replace("10.244.0.0/24", "x"), o.conflist),
            "conflist pod range(s)",
        ),
    ],
)
def test_guard_covers_every_kind_of_owned_state(
    change: Callable[[ObservedState], Change], kind: str
) -> None:
    doc = cluster_doc(3, nonMasqueradeCIDRs=["192.0.2.0/24"])
    pod = {"namespace": "d", "name": "p", "node": "node-0000", "ips": ["10.244.0.5"]}
    doc["pods"] = [{**pod, "hostInterface": "veth1"}]
    observed = converged(compile_desired(load(doc), "node-0000", HostFacts()))
    removal = change(observed)
    guarded = split_deletions(Plan("node-0000", (removal,)), observed, 75, 0.5)
    assert guarded.held == (removal,) and guarded.plan.empty
    assert kind in [k for k, _, _ in guarded.kinds]
    assert split_deletions(Plan("node-0000", (removal,)), observed, 75, 1.0).held == ()


def test_guard_lets_a_small_share_of_snat_rules_go() -> None:
    desired = compile_desired(
        load(cluster_doc(3, nonMasqueradeCIDRs=["192.0.2.0/24", "198.51.100.0/24"])),
        "node-0000",
        HostFacts(),
    )
    observed = converged(desired)
    masq = observed.masq[0].masq
    assert masq is not None and len(masq.rules) == 4
    kept = tuple(r for r in masq.rules if str(r.dst) != "198.51.100.0/24")
    one_less = WriteMasquerade(4, Masquerade(4, kept), masq, 1)
    assert split_deletions(Plan("node-0000", (one_less,)), observed, 75, 0.5).held == ()


def test_guard_counts_the_foreign_routes_adopt_removes() -> None:
    """#21: a two-node list taking over a node of kindnetd's must not remove 19 of its 20 routes
    in the first round; --adopt's removals are held back like kindplan's own."""
    desired = desired_state(2, pods=False)
    node = converged(desired)
    gateway = ip_address("198.18.0.99")
    leftovers = tuple(
        Route(ip_network(f"10.244.{i}.0/24"), "eth0", gateway, proto=3) for i in range(50, 69)
    )
    node = replace(node, routes=(*node.routes, *leftovers))
    plan = diff(desired, node, conflist_path=PATH, adopt=True)
    assert sum(isinstance(c, DelRoute) for c in plan.changes) == 19
    guarded = split_deletions(plan, node, 75, 0.5)
    assert len(guarded.held) == 19 and not any(
        isinstance(c, DelRoute) for c in guarded.plan.changes
    )
    assert guarded.kinds == (("peer route(s)", 19, 1),)
