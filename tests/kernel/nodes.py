"""Node namespaces for kernel tests: an on-link uplink, pods' host veths, kindplan run on them."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from builders import V4_NODES, cluster_doc
from shell import sh

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "fixtures" / "seed-lab" / "snapshot.yaml"
DUAL = ROOT / "fixtures" / "dual-stack" / "snapshot.yaml"


KINDPLAN = [sys.executable, "-m", "kindplan.cli"]


def kindplan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kindplan.cli", *args], capture_output=True, text=True, check=False
    )


def build_node(ns: str, ips: list[str], veths: list[str]) -> None:
    """An on-link uplink eth0 (a veth, its peer kept in the namespace) and the pods' host veths."""
    sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
    for ip in ips:
        sh("ip", "-n", ns, "addr", "add", ip, "dev", "eth0", *(["nodad"] if ":" in ip else []))
    for veth in veths:
        sh("ip", "-n", ns, "link", "add", veth, "type", "veth", "peer", "name", f"p{veth}"[:15])
        sh("ip", "-n", ns, "link", "set", f"p{veth}"[:15], "up")
        sh("ip", "-n", ns, "link", "set", veth, "up")
    sh("ip", "-n", ns, "link", "set", "eth0p", "up")
    sh("ip", "-n", ns, "link", "set", "eth0", "up")


def settle(ns: str) -> None:
    """Wait until no IPv6 address is tentative: DAD ends a moment after an address is added (by
    link up, or by an apply) and the kernel's own events then must not count as kindplan's."""
    deadline = time.monotonic() + 10
    while sh("ip", "-n", ns, "-6", "addr", "show", "tentative").strip():
        assert time.monotonic() < deadline, "IPv6 DAD did not settle"
        time.sleep(0.1)


class Node:
    """A node namespace plus the arguments that point kindplan at it."""

    def __init__(self, ns: str, tmp: Path, snapshot: Path, name: str) -> None:
        self.ns, self.tmp, self.snapshot, self.name = ns, tmp, snapshot, name
        self.conflist = tmp / "cni" / "10-kindnet.conflist"

    def args(self, snapshot: Path | None = None) -> list[str]:
        return [
            str(snapshot or self.snapshot),
            "--node",
            self.name,
            "--netns",
            self.ns,
            "--conf-dir",
            str(self.tmp / "cni"),
        ]

    def plan(self, *extra: str, snapshot: Path | None = None) -> subprocess.CompletedProcess[str]:
        return kindplan("plan", *self.args(snapshot), *extra)

    def apply(self, *extra: str, snapshot: Path | None = None) -> subprocess.CompletedProcess[str]:
        return kindplan(
            "apply", *self.args(snapshot), "--state-dir", str(self.tmp / "state"), *extra
        )

    def routes(self, *family: str) -> list[str]:
        return sh("ip", "-n", self.ns, *family, "route", "show").splitlines()

    def nat(self, tool: str = "iptables-save") -> str:
        return "\n".join(
            line
            for line in sh(tool, "-t", "nat", ns=self.ns).splitlines()
            if not line.startswith("#")
        )


@contextmanager
def kernel_events(ns: str) -> Iterator[list[str]]:
    """Collect the netlink route/address/link events of `ns` while the body runs."""
    settle(ns)
    monitor = subprocess.Popen(
        ["ip", "-n", ns, "monitor", "route", "address", "link"], stdout=subprocess.PIPE, text=True
    )
    time.sleep(0.3)  # let it subscribe; the canary below proves it did
    events: list[str] = []
    try:
        yield events
        sh("ip", "-n", ns, "route", "add", "192.0.2.123/32", "dev", "lo")  # canary
        time.sleep(0.3)
    finally:
        monitor.terminate()
        out, _ = monitor.communicate(timeout=5)
        subprocess.run(["ip", "-n", ns, "route", "del", "192.0.2.123/32", "dev", "lo"], check=False)
    lines = [line for line in out.splitlines() if line.strip()]
    assert any("192.0.2.123" in line for line in lines), "ip monitor saw nothing: it is broken"
    events += [line for line in lines if "192.0.2.123" not in line]


def cni_cache_entry(veth: str, ip: str, network: str = "kindnet") -> dict[str, object]:
    """libcni's cache entry of a pod shop/cart-1 on host veth `veth` with IPv4 address `ip`."""
    return {
        "kind": "cniCacheV1",
        "containerId": "c0ffee",
        "ifName": "eth0",
        "networkName": network,
        "cniArgs": [["K8S_POD_NAMESPACE", "shop"], ["K8S_POD_NAME", "cart-1"]],
        "result": {
            "cniVersion": "0.3.1",
            "interfaces": [{"name": veth}, {"name": "eth0", "sandbox": "/run/netns/x"}],
            "ips": [
                {
                    "version": "4",
                    "interface": 1,
                    "address": f"{ip}/24",
                    "gateway": "10.244.2.1",
                }
            ],
        },
    }


def edit_snapshot(source: Path, target: Path, edit: Callable[[str], str]) -> Path:
    target.write_text(edit(source.read_text()))
    return target


def big_node(
    netns: str, tmp_path: Path, count: int = 4000, route_style: str = "plain"
) -> tuple[Node, Path, Path]:
    """A node of a `count`-node cluster, and two snapshots: A, and B where half of the peers
    moved to new gateways (new InternalIPs, still on-link). The snapshots name the route style:
    plain unless told (auto would take nexthop objects at this size)."""
    build_node(netns, ["198.18.0.10/15"], [])
    first = cluster_doc(count, routeStyle=route_style)
    moved = json.loads(json.dumps(first))
    for i, peer in enumerate(moved["nodes"][1 : count // 2 + 1], 1):
        peer["internalIPs"] = [str(V4_NODES.network_address + 60000 + i)]
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(first))
    b.write_text(json.dumps(moved))
    return Node(netns, tmp_path, a, "node-0000"), a, b


def our_routes(ns: str) -> list[str]:
    return sorted(sh("ip", "-n", ns, "route", "show", "proto", "75").splitlines())
