"""The netlink layer on the nodes people have: a stock receive buffer, refusals with the kernel's
reason, point-to-point uplinks.

The host here has net.core.rmem_max at 4 MiB; a stock node has 212992. The stock size is made in
the process, never by changing the host's sysctl: the socket's SO_RCVBUF is set to 212992 after
it is opened, which is what a node grants when SO_RCVBUFFORCE is not permitted.
"""

from __future__ import annotations

import json
import socket
from ipaddress import ip_network
from pathlib import Path

import pytest
from builders import cluster_doc, load
from builders import node as node_entry
from nodes import Node, build_node, kindplan
from shell import sh

from kindplan.core.compiler import compile_desired
from kindplan.core.model import HostFacts, Options
from kindplan.core.routes import Route
from kindplan.node import netlink
from kindplan.node.engine import apply_planned, make_plan
from kindplan.node.iptables import Iptables, detect_backend
from kindplan.node.journal import Journal
from kindplan.node.kernel import Kernel
from kindplan.node.netns import enter_netns
from kindplan.node.ports import NodeHandles

pytestmark = pytest.mark.root

STOCK_RMEM_MAX = 212_992


def stock_netlink() -> netlink.Netlink:
    """A Netlink whose socket has the receive buffer of a stock node."""
    sock = netlink.open_socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, STOCK_RMEM_MAX)
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 2 * STOCK_RMEM_MAX
    return netlink.Netlink(sock)


def two_nodes(tmp_path: Path, here: tuple[str, str], peer: tuple[str, str]) -> Path:
    """A snapshot of node "here" and one peer, each an (InternalIP, PodCIDR)."""
    nodes = [node_entry(n, [ip], [cidr]) for n, (ip, cidr) in (("here", here), ("peer", peer))]
    snapshot = tmp_path / "two.json"
    snapshot.write_text(json.dumps(cluster_doc(0) | {"nodes": nodes}))
    return snapshot


def ours(ns: str, family: str) -> int:
    return sh("ip", "-n", ns, family, "route", "show", "proto", "75").count("\n")


def test_first_apply_of_5000_dual_stack_nodes_with_a_stock_receive_buffer(
    netns: str, tmp_path: Path
) -> None:
    """The issue's failure was a raw ENOBUFS traceback after ~1,000 routes, with no undo for
    them; here the whole first apply goes in, the next plan is empty and rollback undoes it."""
    build_node(netns, ["198.18.0.10/15", "2001:db8:ffff::a/64"], [])
    big = tmp_path / "big.json"
    big.write_text(json.dumps(cluster_doc(5000, v6=True)))
    node = Node(netns, tmp_path, big, "node-0000")
    options = Options(node=node.name, conf_dir=str(tmp_path / "cni"))
    snapshot = load(json.loads(big.read_text()))
    state = tmp_path / "state"
    with enter_netns(netns):
        kernel = Kernel(stock_netlink())
        try:
            iptables = Iptables(detect_backend())
            planned = make_plan(snapshot, options, kernel, iptables)
            journal = Journal(state, netns)
            handles = NodeHandles(kernel, iptables)
            report = apply_planned(snapshot, options, planned, handles, journal)
        finally:
            kernel.close()
    assert report.failures == []
    assert report.ok, report.residue
    assert (ours(netns, "-4"), ours(netns, "-6")) == (4999, 4999)
    assert node.plan("--detailed-exitcode").returncode == 0
    back = kindplan("rollback", "--netns", netns, "--state-dir", str(state))
    assert back.returncode == 0, back.stderr
    assert (ours(netns, "-4"), ours(netns, "-6")) == (0, 0)


def test_an_overrun_receive_buffer_is_drained_and_the_writes_go_on(netns: str) -> None:
    """Batches larger than the stock buffer holds answers for, and most writes answered: the
    deletes of routes that are gone already (ESRCH, nothing left to delete: not an error). The
    kernel drops answers, kindplan reads the table again, sends what is missing, and every write
    ends done, with no error."""
    build_node(netns, ["198.18.0.10/15"], [])
    desired = compile_desired(load(cluster_doc(1200)), "node-0000", HostFacts())
    gone = [
        Route(ip_network(f"10.250.{i % 256}.{i // 256 * 4}/30"), "eth0", None, proto=75)
        for i in range(2 * len(desired.routes))
    ]
    writes = [("add", route) for route in desired.routes]
    for k in range(len(desired.routes)):  # two deletes before each add: 667 answers a batch
        writes[k * 3 : k * 3] = [("del", gone[2 * k]), ("del", gone[2 * k + 1])]
    with enter_netns(netns):
        nl = stock_netlink()
        nl.batch = 1000  # 512 answers fill 425,984 bytes
        kernel = Kernel(nl)
        try:
            kernel.read_links()
            results = kernel.write_routes(writes)
        finally:
            kernel.close()
    assert [str(error) for error in results if error is not None] == []
    assert nl.batch < 1000, "the overrun shrank the batches"
    assert ours(netns, "-4") == 1199


def test_a_refused_route_shows_the_kernels_reason(netns: str, tmp_path: Path) -> None:
    """NETLINK_EXT_ACK: the error line carries the kernel's text next to errno's."""
    build_node(netns, ["172.18.0.12/24"], [])
    snapshot = two_nodes(
        tmp_path, ("172.18.0.12", "10.244.2.0/24"), ("172.19.0.10", "10.244.0.0/24")
    )
    result = Node(netns, tmp_path, snapshot, "here").apply()
    assert result.returncode == 1
    refused = [line for line in result.stderr.splitlines() if "(peer peer)" in line]
    assert any(
        "Network is unreachable (Nexthop has invalid gateway)" in line for line in refused
    ), result.stderr


def test_a_point_to_point_uplink_is_found_by_its_local_address(netns: str, tmp_path: Path) -> None:
    """`10.1.1.1 peer 10.1.1.2/32`: IFA_ADDRESS is the peer, IFA_LOCAL the node's own."""
    build_node(netns, [], [])
    sh("ip", "-n", netns, "addr", "add", "10.1.1.1", "peer", "10.1.1.2/32", "dev", "eth0")
    snapshot = two_nodes(tmp_path, ("10.1.1.1", "10.244.1.0/24"), ("10.1.1.2", "10.244.2.0/24"))
    node = Node(netns, tmp_path, snapshot, "here")
    applied = node.apply()
    assert applied.returncode == 0, applied.stderr
    assert "10.244.2.0/24 via 10.1.1.2 dev eth0 proto 75 " in node.routes()
    assert node.plan("--detailed-exitcode").returncode == 0
