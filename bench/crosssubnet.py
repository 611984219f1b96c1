"""bench/run.py's cross-subnet figures: a first apply and a converged apply of a node whose peers
are half off its subnet (--cross-subnet vxlan: half the routes through the tunnel, a neighbour
and an FDB entry each), beside the same cluster all on-link, in the same run.

The same snapshot both times: every odd peer's InternalIP is moved out of 198.18.0.0/16 (to
198.19.x.y, still in the benchmarking range). All on-link: the node's uplink is 198.18.0.10/15;
half off-link: 198.18.0.10/16.
"""

from __future__ import annotations

import ipaddress
import json
import statistics
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

Timed = Callable[[list[str]], tuple[float, int]]


def half_off_link_doc(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` (builders.cluster_doc, IPv4) with every odd node's InternalIP moved to 198.19/16."""
    moved = json.loads(json.dumps(doc))
    for i, node in enumerate(moved["nodes"]):
        if i % 2:
            address = ipaddress.ip_address(node["internalIPs"][0])
            node["internalIPs"] = [str(address + (1 << 16))]
    return moved


@contextmanager
def uplinked(bench_ns: Callable[[], Any], prefix: int, sh: Callable[..., str]) -> Iterator[str]:
    """A node namespace whose eth0 is 198.18.0.10/`prefix`."""
    with bench_ns() as ns:
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
        sh("ip", "-n", ns, "addr", "add", f"198.18.0.10/{prefix}", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0p", "up")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        yield ns


def tunnel_events(ns: str, action: Callable[[], object]) -> int:
    """Neighbour and FDB changes while `action` runs (a converged apply must make none)."""
    import time

    monitor = subprocess.Popen(
        ["ip", "-n", ns, "monitor", "neigh"], stdout=subprocess.PIPE, text=True
    )
    time.sleep(0.3)
    try:
        action()
        time.sleep(0.3)
    finally:
        monitor.terminate()
        out, _ = monitor.communicate()
    return sum(1 for line in out.splitlines() if "kindplan.vxlan" in line)


class Harness(NamedTuple):
    """What bench/run.py lends: its namespaces, commands, timing and event counting."""

    bench_ns: Callable[[], Any]
    sh: Callable[..., str]
    apply_cmd: Callable[[Path, str, Path], list[str]]
    run_timed: Timed
    route_events: Callable[[str, Callable[[], object]], int]


CONFIGS = (("on_link", 15, ()), ("half_off", 16, ("--cross-subnet", "vxlan")))


def bench_cross_subnet(
    work: Path, doc: dict[str, Any], runs: int, harness: Harness
) -> dict[str, float]:
    """The two configurations take turns, run by run, so that a change of the machine's load
    weighs on both alike."""
    snapshot = work / "cluster-half-off-link.json"
    snapshot.write_text(json.dumps(half_off_link_doc(doc)))
    first: dict[str, list[float]] = {tag: [] for tag, _, _ in CONFIGS}
    for _ in range(runs):
        for tag, prefix, extra in CONFIGS:
            first[tag].append(_first_apply(harness, snapshot, work, prefix, [*extra]))
    result: dict[str, float] = {f"{t}_full_apply_s": statistics.median(v) for t, v in first.items()}
    return result | _converged(harness, snapshot, work, runs)


def _first_apply(h: Harness, snapshot: Path, work: Path, prefix: int, extra: list[str]) -> float:
    with uplinked(h.bench_ns, prefix, h.sh) as ns:
        return h.run_timed([*h.apply_cmd(snapshot, ns, work / f"x-{ns}"), *extra])[0]


def _converged(h: Harness, snapshot: Path, work: Path, runs: int) -> dict[str, float]:
    """The median converged apply of each configuration (taking turns), the writes of one more,
    and how many routes are tunneled."""
    (on_tag, on_prefix, on_extra), (off_tag, off_prefix, off_extra) = CONFIGS
    with (
        uplinked(h.bench_ns, on_prefix, h.sh) as on_ns,
        uplinked(h.bench_ns, off_prefix, h.sh) as off_ns,
    ):
        cmds = {
            on_tag: (on_ns, [*h.apply_cmd(snapshot, on_ns, work / f"x-{on_ns}"), *on_extra]),
            off_tag: (off_ns, [*h.apply_cmd(snapshot, off_ns, work / f"x-{off_ns}"), *off_extra]),
        }
        times: dict[str, list[float]] = {tag: [] for tag in cmds}
        for _, cmd in cmds.values():
            h.run_timed(cmd)
        for _ in range(runs):
            for tag, (_, cmd) in cmds.items():
                times[tag].append(h.run_timed(cmd)[0])
        result = {f"{tag}_converged_apply_s": statistics.median(t) for tag, t in times.items()}
        for tag, (ns, cmd) in cmds.items():
            result[f"{tag}_converged_writes"] = _writes(h, ns, cmd)
        routes = h.sh("ip", "-n", off_ns, "route", "show", "proto", "75")
        result["tunneled_routes"] = sum(1 for r in routes.splitlines() if "kindplan.vxlan4" in r)
    return result


def _writes(h: Harness, ns: str, cmd: list[str]) -> int:
    """Route, address, link, neighbour and FDB changes of one more converged apply."""
    entries: list[int] = []
    routes = h.route_events(ns, lambda: entries.append(tunnel_events(ns, lambda: h.run_timed(cmd))))
    return routes + entries[0]


def report_rows(r: dict[str, float]) -> list[tuple[str, str, str, str]]:
    return [
        (
            f"full apply, half the peers off-link ({r['tunneled_routes']:.0f} tunneled)",
            f"{r['half_off_full_apply_s']:.3f} s",
            f"all on-link {r['on_link_full_apply_s']:.3f} s",
            f"{r['half_off_full_apply_s'] / r['on_link_full_apply_s']:.2f}x",
        ),
        (
            "converged apply, half the peers off-link",
            f"{r['half_off_converged_apply_s']:.3f} s",
            f"all on-link {r['on_link_converged_apply_s']:.3f} s",
            f"{r['half_off_converged_apply_s'] / r['on_link_converged_apply_s']:.2f}x",
        ),
        (
            "converged apply, half off-link: kernel writes",
            f"{r['half_off_converged_writes']:.0f}",
            "0",
            "",
        ),
    ]


def main() -> int:
    """Only these figures: python bench/crosssubnet.py [--nodes N] [--runs N] (root)."""
    import argparse
    import sys
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import run  # bench/run.py: its namespaces, timing and event counting

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        harness = Harness(run.bench_ns, run.sh, run.apply_cmd, run.run_timed, run.route_events)
        result = bench_cross_subnet(Path(tmp), run.cluster_doc(args.nodes), args.runs, harness)
    for row in report_rows(result):
        print("  ".join(row))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
