"""The compiled policy table on real packets: one node namespace routing three pod namespaces
as ptp does (a veth each, the gateway as a /32 on the host side, a host route per pod), the
node's table loaded with nft, and real TCP connections: the forward hook drops what no rule
admits and passes what one does (a named port), replies of an allowed connection pass although
the server is isolated for egress, and the node itself reaches an isolated pod (output)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace

import pytest
from policycase import model, policy
from shell import sh

from kindplan.core.policy.compile import compile_policy
from kindplan.core.policy.render import render_table

pytestmark = pytest.mark.root

PODS = {"x/a": "10.244.0.10", "y/a": "10.244.0.13", "z/a": "10.244.0.16"}  # kind-worker's
SERVER = (
    "import socket\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('0.0.0.0', 80)); s.listen(8)\n"
    "while True:\n"
    "    c, _ = s.accept(); c.sendall(b'hello'); c.close()\n"
)
SERVER6 = SERVER.replace("socket.socket()", "socket.socket(socket.AF_INET6)").replace(
    "'0.0.0.0'", "'::'"
)
CLIENT = (
    "import socket, sys\n"
    "try:\n"
    "    c = socket.create_connection((sys.argv[1], 80), timeout=1.5)\n"
    "    print(c.recv(5).decode())\n"
    "except OSError as e:\n"
    "    print(type(e).__name__)\n"
)


def pod_link(host: str, ns: str, i: int) -> None:
    """A pod's veth: veth<i> on the node, eth0 in the pod, as ptp makes it."""
    sh("ip", "-n", host, "link", "add", f"veth{i}", "type", "veth", "peer", "name", "eth0")
    sh("ip", "-n", host, "link", "set", "eth0", "netns", ns)


@pytest.fixture
def node(make_netns: Callable[[], str]) -> tuple[str, dict[str, str]]:
    host = make_netns()
    sh("ip", "netns", "exec", host, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    pods = {}
    for i, (label, ip) in enumerate(PODS.items()):
        ns = make_netns()
        pods[label] = ns
        pod_link(host, ns, i)
        sh("ip", "-n", host, "addr", "add", "10.244.0.1/32", "dev", f"veth{i}")
        sh("ip", "-n", host, "link", "set", f"veth{i}", "up")
        sh("ip", "-n", host, "route", "add", f"{ip}/32", "dev", f"veth{i}", "scope", "host")
        sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "route", "replace", "10.244.0.0/24", "via", "10.244.0.1", "dev", "eth0")
    return host, pods


def connect(ns: str, ip: str) -> str:
    return sh("ip", "netns", "exec", ns, sys.executable, "-c", CLIENT, ip).strip()


def test_real_connections_meet_the_table(node: tuple[str, dict[str, str]]) -> None:
    host, pods = node
    snapshot = model(
        [
            policy(
                "x",
                "allow-y",
                podSelector={"matchLabels": {"pod": "a"}},
                ingress=[
                    {
                        "from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
                        "ports": [{"port": "serve-80-tcp"}],
                    }
                ],
            ),
            policy(
                "x", "no-egress", podSelector={"matchLabels": {"pod": "a"}}, policyTypes=["Egress"]
            ),
        ]
    )
    table = compile_policy(snapshot, snapshot.nodes[0])
    assert table is not None
    servers = [
        subprocess.Popen(["ip", "netns", "exec", pods[p], sys.executable, "-c", SERVER])
        for p in ("x/a", "y/a")
    ]
    try:
        deadline = time.monotonic() + 5
        while connect(pods["y/a"], PODS["x/a"]) != "hello":  # the server is up, no table yet
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        assert connect(pods["z/a"], PODS["x/a"]) == "hello"
        assert connect(pods["x/a"], PODS["y/a"]) == "hello"
        sh("nft", "-f", "-", ns=host, stdin=render_table(table))
        assert connect(pods["y/a"], PODS["x/a"]) == "hello"  # rule 0, and its replies pass
        assert connect(pods["z/a"], PODS["x/a"]) == "TimeoutError"  # isolated, no rule
        assert connect(host, PODS["x/a"]) == "hello"  # the node reaches its pods
        assert connect(pods["x/a"], PODS["y/a"]) == "TimeoutError"  # isolated for egress
        counted = sh("nft", "list", "table", "inet", "kindplan-policy", ns=host)
        assert 'comment "x/allow-y ingress rule 0"' in counted
    finally:
        for server in servers:
            server.kill()
            server.wait()


V6 = {"x/a": "fd00:10:244::a", "y/a": "fd00:10:244::d"}  # kind-worker's, dual-stack


@pytest.fixture
def node6(make_netns: Callable[[], str]) -> tuple[str, dict[str, str]]:
    host = make_netns()
    sh("ip", "netns", "exec", host, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
    pods = {}
    for i, (label, ip) in enumerate(V6.items()):
        ns = make_netns()
        pods[label] = ns
        pod_link(host, ns, i)
        sh("ip", "-n", host, "addr", "add", "fd00:10:244::1/128", "dev", f"veth{i}", "nodad")
        sh("ip", "-n", host, "link", "set", f"veth{i}", "up")
        sh("ip", "-n", host, "-6", "route", "add", f"{ip}/128", "dev", f"veth{i}")
        sh("ip", "-n", ns, "addr", "add", f"{ip}/128", "dev", "eth0", "nodad")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "-6", "route", "add", "fd00:10:244::1", "dev", "eth0")
        sh("ip", "-n", ns, "-6", "route", "add", "fd00:10:244::/64", "via", "fd00:10:244::1")
    return host, pods


def test_an_egress_isolated_pod_still_finds_its_gateway(node6: tuple[str, dict[str, str]]) -> None:
    """IPv6: the pod's neighbour solicitation for its gateway meets the node's input hook
    (conntrack does not track it): without the table's accept of neighbour discovery, egress
    isolation would cut even the connections a rule admits."""
    host, pods = node6
    snapshot = model(
        [
            policy(
                "x",
                "to-y",
                podSelector={"matchLabels": {"pod": "a"}},
                policyTypes=["Egress"],
                egress=[{"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}],
            )
        ],
        dual=True,
    )
    table = compile_policy(snapshot, snapshot.nodes[0])
    assert table is not None
    chains = {c.name: c for c in table.chains}
    without = replace(
        chains["input-egress"],
        rules=tuple(r for r in chains["input-egress"].rules if "neighbour" not in r),
    )
    cut = replace(
        table, chains=tuple(without if c.name == "input-egress" else c for c in table.chains)
    )
    server = subprocess.Popen(["ip", "netns", "exec", pods["y/a"], sys.executable, "-c", SERVER6])
    try:
        deadline = time.monotonic() + 5
        while connect(pods["x/a"], V6["y/a"]) != "hello":
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        sh("ip", "-n", pods["x/a"], "neigh", "flush", "dev", "eth0")
        sh("nft", "-f", "-", ns=host, stdin=render_table(cut))
        assert connect(pods["x/a"], V6["y/a"]) == "TimeoutError"  # no gateway any more
        sh("nft", "-f", "-", ns=host, stdin=render_table(table))
        assert connect(pods["x/a"], V6["y/a"]) == "hello"
    finally:
        server.kill()
        server.wait()
