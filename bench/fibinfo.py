"""The kernel's cost of peer routes: plain routes vs routes through nexthop objects.

    sudo .venv/bin/python bench/fibinfo.py [--sizes 1000,2000,3000,4000,5000] [--runs 3]
                                           [--json bench/results/fibinfo.json]

Each peer route has a gateway of its own. IPv4's fib_info de-duplication hash (fib_info_hashfn)
covers the nexthop count, protocol, prefsrc, metric and device but not the gateway, so N such
routes share one bucket and each insert compares itself with the earlier ones: quadratic system
time. A route through a nexthop object (`nhid N`) keeps its gateway in the object, which is found
by id; the fib_info of every such route is then the same kind of small entry. This script installs
N routes both ways with `ip -batch` in a fresh namespace (a veth uplink that makes every gateway
on-link) and prints the system time of the `ip` process (os.wait4's rusage: the kernel's work on
its behalf), medians of --runs, for IPv4 and IPv6. `plain` is N `route add CIDR via GW dev eth0`;
`nexthop` is N `nexthop add id I via GW dev eth0` then N `route add CIDR nhid I` in one batch.
Nothing touches the machine's own network (namespaces kpb-<pid>-<n>, removed at the end).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import bench_ns, settle, sh

UPLINK = {4: "198.18.0.1/15", 6: "2001:db8:ffff::1/64"}
STYLES = ("plain", "nexthop")


def gateway(version: int, i: int) -> str:
    """The i-th peer's InternalIP: distinct and on-link through the uplink."""
    if version == 4:
        return str(ipaddress.IPv4Address("198.18.0.0") + 2 + i)
    return str(ipaddress.IPv6Address("2001:db8:ffff::") + 2 + i)


def pod_cidr(version: int, i: int) -> str:
    """The i-th peer's PodCIDR (/24 of 10.0.0.0/8, /64 of fd00:10::/48)."""
    if version == 4:
        return f"{ipaddress.IPv4Address('10.0.0.0') + (i << 8)}/24"
    return f"{ipaddress.IPv6Address('fd00:10::') + (i << 64)}/64"


def batch(version: int, style: str, n: int) -> str:
    """The `ip -batch` text that installs n peer routes in `style`."""
    lines = []
    if style == "nexthop":
        lines += [f"nexthop add id {i + 1} via {gateway(version, i)} dev eth0" for i in range(n)]
        lines += [f"route add {pod_cidr(version, i)} nhid {i + 1} proto 75" for i in range(n)]
    else:
        lines += [
            f"route add {pod_cidr(version, i)} via {gateway(version, i)} dev eth0 proto 75"
            for i in range(n)
        ]
    return "\n".join(lines) + "\n"


def system_time(version: int, text: str) -> tuple[float, float]:
    """System and wall seconds of one `ip -batch` of `text` in a fresh node namespace."""
    with bench_ns() as ns, tempfile.NamedTemporaryFile("w", suffix=".batch") as f:
        f.write(text)
        f.flush()
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
        sh("ip", "-n", ns, "addr", "add", UPLINK[version], "dev", "eth0", "nodad")
        sh("ip", "-n", ns, "link", "set", "eth0p", "up")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        settle(ns)
        started = os.times().elapsed
        proc = subprocess.Popen(["ip", "-n", ns, "-batch", f.name], stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = os.times().elapsed - started
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"ip -batch failed: {proc.stderr.read().decode()[:300]}")
        proc.stderr.close()
        return usage.ru_stime, wall


def measure(sizes: list[int], runs: int) -> dict[str, dict[str, dict[int, float]]]:
    """{"ipv4 plain": {"system_ms": {n: ms}, "wall_ms": {...}}, ...}, medians of `runs`."""
    results: dict[str, dict[str, dict[int, float]]] = {}
    for version in (4, 6):
        for style in STYLES:
            row: dict[str, dict[int, float]] = {"system_ms": {}, "wall_ms": {}}
            for n in sizes:
                text = batch(version, style, n)
                samples = [system_time(version, text) for _ in range(runs)]
                row["system_ms"][n] = 1000 * statistics.median(s for s, _ in samples)
                row["wall_ms"][n] = 1000 * statistics.median(w for _, w in samples)
                print(
                    f"IPv{version} {style:7} {n:5} routes: system "
                    f"{row['system_ms'][n]:6.0f} ms, wall {row['wall_ms'][n]:6.0f} ms",
                    flush=True,
                )
            results[f"ipv{version} {style}"] = row
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,2000,3000,4000,5000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the medians here")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results = measure(sizes, args.runs)
    if args.json:
        load = os.getloadavg()[0]
        args.json.write_text(json.dumps({"load": load, "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
