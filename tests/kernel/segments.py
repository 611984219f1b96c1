"""Two L2 segments joined by a router, for the cross-subnet kernel tests: a router namespace holds
one bridge per segment (its address on each is the segment's gateway) and forwards between them;
each node namespace has its uplink eth0 on one bridge, a default route via that gateway, and one
pod (a namespace with a veth to the node, its address and default route set as ptp sets them;
kindplan gives the host side its gateway address and host route).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shell import sh

# Segment -> its IPv4 and IPv6 network prefix; the router is .1 / ::1 on each.
SEGMENTS = {"a": ("172.18.0", "fc00:18::"), "b": ("172.19.0", "fc00:19::")}


@dataclass
class SegNode:
    name: str
    ns: str
    pod_ns: str
    segment: str
    host: int  # the node's host number on its segment (.2, .3...)
    index: int  # its PodCIDR's number: 10.244.<index>.0/24, fd00:10:244:<index>::/64

    def ips(self, families: tuple[int, ...]) -> list[str]:
        v4, v6 = SEGMENTS[self.segment]
        return [f"{v4}.{self.host}" if v == 4 else f"{v6}{self.host}" for v in families]

    def pod_ips(self, families: tuple[int, ...]) -> list[str]:
        return [
            f"10.244.{self.index}.5" if v == 4 else f"fd00:10:244:{self.index}::5" for v in families
        ]

    def cidrs(self, families: tuple[int, ...]) -> list[str]:
        return [
            f"10.244.{self.index}.0/24" if v == 4 else f"fd00:10:244:{self.index}::/64"
            for v in families
        ]


@dataclass
class World:
    router: str
    nodes: list[SegNode]
    families: tuple[int, ...]

    def node(self, name: str) -> SegNode:
        return next(n for n in self.nodes if n.name == name)

    def snapshot(self, path: Path, mode: str | None = None) -> Path:
        subnets = {4: "10.244.0.0/16", 6: "fd00:10:244::/56"}
        cluster: dict[str, object] = {"podSubnets": [subnets[v] for v in self.families]}
        if mode is not None:
            cluster["crossSubnet"] = mode
        doc = {
            "apiVersion": "kindplan/v1",
            "kind": "ClusterSnapshot",
            "cluster": cluster,
            "nodes": [
                {
                    "name": n.name,
                    "internalIPs": n.ips(self.families),
                    "podCIDRs": n.cidrs(self.families),
                }
                for n in self.nodes
            ],
            "pods": [
                {
                    "namespace": "default",
                    "name": f"pod-{n.name}",
                    "node": n.name,
                    "ips": n.pod_ips(self.families),
                    "hostInterface": "vethpod",
                }
                for n in self.nodes
            ],
        }
        path.write_text(json.dumps(doc))
        return path

    def move(self, node: SegNode, segment: str, host: int) -> None:
        """Take a node to another segment with a new InternalIP (its port to another bridge)."""
        sh("ip", "-n", self.router, "link", "set", _port(node), "nomaster")
        sh("ip", "-n", self.router, "link", "set", _port(node), "master", f"br-{segment}")
        for ip in node.ips(self.families):
            sh(
                "ip",
                "-n",
                node.ns,
                "addr",
                "del",
                f"{ip}/{24 if ':' not in ip else 64}",
                "dev",
                "eth0",
            )
        node.segment, node.host = segment, host
        _address_node(node, self.families)


def _port(node: SegNode) -> str:
    return f"p-{node.name}"[:15]


def _address_node(node: SegNode, families: tuple[int, ...]) -> None:
    for v, ip in zip(families, node.ips(families), strict=True):
        length, gateway = (24, f"{SEGMENTS[node.segment][0]}.1") if v == 4 else (64, "")
        if v == 6:
            gateway = f"{SEGMENTS[node.segment][1]}1"
        sh("ip", "-n", node.ns, "addr", "add", f"{ip}/{length}", "dev", "eth0",
           *(["nodad"] if v == 6 else []))  # fmt: skip
        family = ["-6"] if v == 6 else []
        sh("ip", "-n", node.ns, *family, "route", "replace", "default", "via", gateway)


def build(
    make_netns: Callable[[], str],
    layout: list[tuple[str, str]],
    families: tuple[int, ...] = (4,),
) -> World:
    """The router, and a node per (name, segment) of `layout`, each with its pod."""
    router = make_netns()
    for seg, (v4, v6) in SEGMENTS.items():
        sh("ip", "-n", router, "link", "add", f"br-{seg}", "type", "bridge")
        sh("ip", "-n", router, "addr", "add", f"{v4}.1/24", "dev", f"br-{seg}")
        sh("ip", "-n", router, "addr", "add", f"{v6}1/64", "dev", f"br-{seg}", "nodad")
        sh("ip", "-n", router, "link", "set", f"br-{seg}", "up")
    sh("sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1", ns=router)
    nodes = []
    hosts = dict.fromkeys(SEGMENTS, 1)
    for index, (name, seg) in enumerate(layout, 1):
        hosts[seg] += 1
        node = SegNode(name, make_netns(), make_netns(), seg, hosts[seg], index)
        sh("ip", "-n", node.ns, "link", "add", "eth0", "type", "veth",
           "peer", "name", _port(node), "netns", router)  # fmt: skip
        sh("ip", "-n", router, "link", "set", _port(node), "master", f"br-{seg}", "up")
        sh("ip", "-n", node.ns, "link", "set", "eth0", "up")
        _address_node(node, families)
        _pod(node, families)
        nodes.append(node)
    return World(router, nodes, families)


def _pod(node: SegNode, families: tuple[int, ...]) -> None:
    sh("ip", "-n", node.ns, "link", "add", "vethpod", "type", "veth",
       "peer", "name", "eth0", "netns", node.pod_ns)  # fmt: skip
    sh("ip", "-n", node.ns, "link", "set", "vethpod", "up")
    sh("ip", "-n", node.pod_ns, "link", "set", "eth0", "up")
    for v, ip in zip(families, node.pod_ips(families), strict=True):
        length, gateway = (24, f"10.244.{node.index}.1") if v == 4 else (64, "")
        if v == 6:
            gateway = f"fd00:10:244:{node.index}::1"
        sh("ip", "-n", node.pod_ns, "addr", "add", f"{ip}/{length}", "dev", "eth0",
           *(["nodad"] if v == 6 else []))  # fmt: skip
        family = ["-6"] if v == 6 else []
        sh(
            "ip",
            "-n",
            node.pod_ns,
            *family,
            "route",
            "add",
            "default",
            "via",
            gateway,
            "dev",
            "eth0",
        )


def seen(from_ns: str, to_ns: str, address: str, port: int = 8080) -> str | None:
    """Connect over TCP from namespace `from_ns` to a listener on `address` in `to_ns`: the source
    address the listener saw (None: no connection). No ping on these machines; the lab's probe."""
    from kindplan.lab.probe import Listeners, seen_source

    listeners = Listeners()
    problem = listeners.listen(to_ns, address, port)
    assert problem is None, problem
    with listeners.running():
        for _ in range(3):  # IPv6: the first neighbour discovery on a fresh path takes a moment
            try:
                return seen_source(from_ns, address, port)
            except OSError:
                continue
        return None
