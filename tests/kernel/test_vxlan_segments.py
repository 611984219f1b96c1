"""--cross-subnet vxlan in real namespaces: nodes on two L2 segments joined by a router, real
packets through the tunnel (pod to pod and node to pod, both ways, IPv4, IPv6 and dual-stack),
a converged node at zero writes, a peer that changes segment switching path in one apply,
rollback, and a device of kindplan's name that is not kindplan's left alone."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from nodes import kernel_events, kindplan, settle
from segments import SegNode, World, build, seen
from shell import sh

pytestmark = pytest.mark.root

LAYOUT = [("a1", "a"), ("a2", "a"), ("b1", "b")]


def _apply(world: World, node: SegNode, snapshot: Path, tmp: Path, *extra: str):  # type: ignore[no-untyped-def]
    return kindplan(
        "apply", str(snapshot), "--node", node.name, "--netns", node.ns,
        "--conf-dir", str(tmp / node.name / "cni"), "--state-dir", str(tmp / node.name / "state"),
        *extra,
    )  # fmt: skip


def _plan(node: SegNode, snapshot: Path, tmp: Path, *extra: str):  # type: ignore[no-untyped-def]
    return kindplan(
        "plan", str(snapshot), "--node", node.name, "--netns", node.ns,
        "--conf-dir", str(tmp / node.name / "cni"), *extra,
    )  # fmt: skip


def _apply_all(world: World, snapshot: Path, tmp: Path, *extra: str) -> None:
    for node in world.nodes:
        done = _apply(world, node, snapshot, tmp, *extra)
        assert done.returncode == 0, done.stdout + done.stderr
    for node in world.nodes:  # the pods' IPv6 gateways answer once their DAD is over
        settle(node.ns)


@pytest.mark.parametrize("families", [(4,), (6,), (4, 6)], ids=["ipv4", "ipv6", "dual"])
def test_pods_reach_each_other_across_segments(
    make_netns: Callable[[], str], tmp_path: Path, families: tuple[int, ...]
) -> None:
    world = build(make_netns, LAYOUT, families)
    snapshot = world.snapshot(tmp_path / "snap.json")
    _apply_all(world, snapshot, tmp_path, "--cross-subnet", "vxlan")
    a1, a2, b1 = (world.node(n) for n in ("a1", "a2", "b1"))
    for i, v in enumerate(families):
        a1_pod, a2_pod, b1_pod = (n.pod_ips(families)[i] for n in (a1, a2, b1))
        family = ["-6"] if v == 6 else []
        routes = sh("ip", "-n", a1.ns, *family, "route", "show", "proto", "75")
        tunnel = f"kindplan.vxlan{v}"
        # b1 is off a1's segment: through the tunnel; a2 is on it: the direct route, as ever
        assert f"{b1.cidrs(families)[i]} via " in routes
        # IPv4: via b1's tunnel address, onlink; IPv6: via the link-local address of its MAC
        via = "via 10.244.3.0 " if v == 4 else "via fe80::"
        assert any(
            line.startswith(b1.cidrs(families)[i])
            and tunnel in line
            and via in line
            and ("onlink" in line) == (v == 4)
            for line in routes.splitlines()
        ), routes
        assert any(
            line.startswith(a2.cidrs(families)[i]) and "dev eth0" in line
            for line in routes.splitlines()
        ), routes
        # the listener sees the pod's own address: no SNAT inside the cluster
        assert seen(a1.pod_ns, b1.pod_ns, b1_pod) == a1_pod, f"pod a1 -> pod b1 ({b1_pod})"
        assert seen(b1.pod_ns, a1.pod_ns, a1_pod) == b1_pod, f"pod b1 -> pod a1 ({a1_pod})"
        assert seen(a1.pod_ns, a2.pod_ns, a2_pod) == a1_pod, "pod a1 -> pod a2, on-link"
        # a node's own traffic through the tunnel leaves from its tunnel address, which the
        # peer routes back through its own
        tunnel_address = a1.cidrs(families)[i].split("/")[0]
        assert seen(a1.ns, b1.pod_ns, b1_pod) == tunnel_address, "node a1 -> pod b1"
        assert seen(b1.ns, a2.pod_ns, a2_pod) is not None, "node b1 -> pod a2"
    # the pods' MTU leaves room for the encapsulation: 50 bytes of IPv4, 70 of IPv6
    conflist = json.loads((tmp_path / "a1" / "cni" / "10-kindnet.conflist").read_text())
    assert conflist["plugins"][0]["mtu"] == 1500 - (70 if 6 in families else 50)


def test_the_tunnel_carries_it_encapsulated(make_netns: Callable[[], str], tmp_path: Path) -> None:
    """What crosses the router is UDP to port 4789 between the InternalIPs, VNI 75, not the
    pods' packets: the tunnel carries it, not a route of the router's (it has none to pods)."""
    world = build(make_netns, LAYOUT)
    snapshot = world.snapshot(tmp_path / "snap.json", mode="vxlan")  # the snapshot's field
    _apply_all(world, snapshot, tmp_path)
    a1, b1 = world.node("a1"), world.node("b1")
    assert "10.244" not in sh("ip", "-n", world.router, "route", "show")
    sh("iptables", "-I", "FORWARD", "-p", "udp", "--dport", "4789",
       "-s", a1.ips((4,))[0], "-d", b1.ips((4,))[0], ns=world.router)  # fmt: skip
    assert seen(a1.pod_ns, b1.pod_ns, b1.pod_ips((4,))[0]) == a1.pod_ips((4,))[0]
    counted = sh("iptables", "-nvxL", "FORWARD", ns=world.router).splitlines()[2].split()[0]
    assert int(counted) >= 3  # the handshake and the answer, at least
    link = sh("ip", "-n", a1.ns, "-d", "link", "show", "kindplan.vxlan4")
    assert "vxlan id 75 local 172.18.0.2" in link and "dstport 4789 nolearning" in link
    assert "alias kindplan: cross-subnet vxlan" in link


def test_a_converged_node_costs_no_write_and_none_mode_warns(
    make_netns: Callable[[], str], tmp_path: Path
) -> None:
    world = build(make_netns, LAYOUT, (4, 6))
    snapshot = world.snapshot(tmp_path / "snap.json")
    _apply_all(world, snapshot, tmp_path, "--cross-subnet", "vxlan")
    a1 = world.node("a1")
    settle(a1.ns)
    with kernel_events(a1.ns) as events:
        again = _apply(world, a1, snapshot, tmp_path, "--cross-subnet", "vxlan")
    assert again.returncode == 0, again.stderr
    assert events == []
    plan = _plan(a1, snapshot, tmp_path, "--cross-subnet", "vxlan", "--detailed-exitcode")
    assert plan.returncode == 0, plan.stdout
    # Without the flag: today's behaviour, and the warning names the flag
    none = _plan(a1, snapshot, tmp_path, "--cross-subnet", "none")
    assert "not on-link from eth0" in none.stderr + none.stdout
    assert "--cross-subnet vxlan reaches them" in none.stderr + none.stdout
    print(none.stdout)
    assert "- device vxlan kindplan.vxlan4 id 75" in none.stdout, none.stdout


def test_a_peer_that_changes_segment_switches_path_in_one_apply(
    make_netns: Callable[[], str], tmp_path: Path
) -> None:
    world = build(make_netns, LAYOUT, (4, 6))
    _apply_all(world, world.snapshot(tmp_path / "one.json"), tmp_path, "--cross-subnet", "vxlan")
    a1, a2, b1 = (world.node(n) for n in ("a1", "a2", "b1"))
    world.move(a2, "b", 3)  # a2 leaves a1's segment for b1's
    moved = world.snapshot(tmp_path / "two.json")
    _apply_all(world, moved, tmp_path, "--cross-subnet", "vxlan")
    assert "via 10.244.2.0 dev kindplan.vxlan4" in sh("ip", "-n", a1.ns, "route")
    assert "10.244.2.0/24 via 172.19.0.3 dev eth0" in sh("ip", "-n", b1.ns, "route")
    assert "10.244.2.0 dev kindplan.vxlan4" in sh("ip", "-n", a1.ns, "neigh")
    for ip in a2.pod_ips((4, 6)):
        assert seen(a1.pod_ns, a2.pod_ns, ip), f"a1 -> a2's pod {ip}, now through the tunnel"
        assert seen(b1.pod_ns, a2.pod_ns, ip), f"b1 -> a2's pod {ip}, now on-link"
    for node in world.nodes:  # one apply was enough
        plan = _plan(node, moved, tmp_path, "--cross-subnet", "vxlan", "--detailed-exitcode")
        assert plan.returncode == 0, plan.stdout
    world.move(a2, "a", 3)  # and back: a1's neighbour and FDB entries for it go
    back = world.snapshot(tmp_path / "three.json")
    _apply_all(world, back, tmp_path, "--cross-subnet", "vxlan")
    assert "10.244.2.0 dev kindplan.vxlan4" not in sh("ip", "-n", a1.ns, "neigh")
    assert "172.18.0.3" not in sh("bridge", "fdb", "show", "dev", "kindplan.vxlan4", ns=a1.ns)
    assert seen(a1.pod_ns, a2.pod_ns, a2.pod_ips((4, 6))[0]) == a1.pod_ips((4, 6))[0]


def test_rollback_takes_the_tunnel_away(make_netns: Callable[[], str], tmp_path: Path) -> None:
    world = build(make_netns, LAYOUT)
    snapshot = world.snapshot(tmp_path / "snap.json")
    a1 = world.node("a1")
    done = _apply(world, a1, snapshot, tmp_path, "--cross-subnet", "vxlan")
    assert done.returncode == 0, done.stderr
    assert "kindplan.vxlan4" in sh("ip", "-n", a1.ns, "link")
    back = kindplan("rollback", "--netns", a1.ns, "--state-dir", str(tmp_path / "a1" / "state"))
    assert back.returncode == 0, back.stdout + back.stderr
    assert "kindplan.vxlan4" not in sh("ip", "-n", a1.ns, "link")
    assert sh("ip", "-n", a1.ns, "route", "show", "proto", "75") == ""


def test_show_lists_the_tunnel_it_owns(make_netns: Callable[[], str], tmp_path: Path) -> None:
    world = build(make_netns, LAYOUT)
    a1 = world.node("a1")
    done = _apply(
        world, a1, world.snapshot(tmp_path / "snap.json"), tmp_path, "--cross-subnet", "vxlan"
    )
    assert done.returncode == 0, done.stderr
    shown = kindplan("show", "--netns", a1.ns)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert any(line.startswith("tunnel device vxlan kindplan.vxlan4 id 75") for line in lines)
    assert "  neighbour entries: 1; FDB entries: 1" in lines, shown.stdout  # b1, off a1's L2
    neigh = sh("ip", "-n", a1.ns, "neigh", "show", "dev", "kindplan.vxlan4").split()
    assert f"    {neigh[0]} lladdr {neigh[2]} dev kindplan.vxlan4" in lines, shown.stdout


def test_a_device_of_that_name_without_the_marker_is_left_alone(
    make_netns: Callable[[], str], tmp_path: Path
) -> None:
    world = build(make_netns, LAYOUT)
    a1 = world.node("a1")
    sh("ip", "-n", a1.ns, "link", "add", "kindplan.vxlan4", "type", "vxlan", "id", "9",
       "local", "172.18.0.2", "dstport", "4789")  # fmt: skip
    before = sh("ip", "-n", a1.ns, "-d", "link", "show", "kindplan.vxlan4")
    snapshot = world.snapshot(tmp_path / "snap.json")
    done = _apply(world, a1, snapshot, tmp_path, "--cross-subnet", "vxlan")
    assert "is not kindplan's" in done.stdout + done.stderr
    assert sh("ip", "-n", a1.ns, "-d", "link", "show", "kindplan.vxlan4") == before
    assert "kindplan.vxlan4" not in sh("ip", "-n", a1.ns, "route")
    assert sh("ip", "-n", a1.ns, "neigh", "show", "dev", "kindplan.vxlan4") == ""
    shown = kindplan("show", "--netns", a1.ns)
    assert "device kindplan.vxlan4: not kindplan's (no marker); left alone" in shown.stdout
    assert "tunnel device" not in shown.stdout


def test_the_rendered_batches_make_what_apply_would(netns: str, tmp_path: Path) -> None:
    """render's routes.batch (ip -batch) and fdb.batch (bridge -batch) of the cross-subnet
    fixture, run by the real tools, leave nothing of the tunnel or the routes for plan to do."""
    fixture = Path(__file__).resolve().parents[2] / "fixtures" / "cross-subnet"
    expected = fixture / "expected" / "seg-a-1"
    sh("ip", "-n", netns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
    sh("ip", "-n", netns, "link", "add", "veth0a1b2c3d", "type", "veth", "peer", "name", "pod")
    for link in ("eth0", "eth0p", "veth0a1b2c3d", "pod"):
        sh("ip", "-n", netns, "link", "set", link, "up")
    sh("ip", "-n", netns, "addr", "add", "172.18.0.2/24", "dev", "eth0")
    sh("ip", "-n", netns, "addr", "add", "fc00:18::2/64", "dev", "eth0", "nodad")
    sh("ip", "-n", netns, "-batch", str(expected / "routes.batch"))
    sh("bridge", "-batch", str(expected / "fdb.batch"), ns=netns)
    plan = kindplan(
        "plan", str(fixture / "snapshot.yaml"), "--node", "seg-a-1", "--netns", netns,
        "--conf-dir", str(tmp_path), "--json",
    )  # fmt: skip
    assert plan.returncode == 0, plan.stderr
    left = [
        c
        for c in json.loads(plan.stdout)["changes"]
        if c["kind"] not in ("sysctl", "iptables", "conflist")
    ]
    assert left == []


def test_quiet_writes_map_each_refusal_to_its_request(netns: str) -> None:
    """write_requests asks only the last request of a batch for an answer: a refusal anywhere
    still comes back as that request's error, and the others are done."""
    from ipaddress import ip_address

    from kindplan.core.tunnel import Neighbour
    from kindplan.node.netlink import Netlink
    from kindplan.node.netlink_tunnel import neighbour_request
    from kindplan.node.netns import enter_netns

    sh("ip", "-n", netns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
    index = int(sh("cat", "/sys/class/net/eth0/ifindex", ns=netns))

    def entry(last: int) -> Neighbour:
        return Neighbour("eth0", ip_address(f"192.0.2.{last}"), "0a:58:c0:00:02:01")

    for refused_at in (0, 1, 2):
        with enter_netns(netns):
            netlink = Netlink()
        writes = [
            neighbour_request(
                "write", 9999 if i == refused_at else index, entry(10 * refused_at + i)
            )
            for i in range(3)
        ]
        results = netlink.write_requests(writes)
        netlink.close()
        assert [r is not None for r in results] == [i == refused_at for i in range(3)]
        assert results[refused_at] is not None and results[refused_at].errno == 19  # ENODEV
    neigh = sh("ip", "-n", netns, "neigh", "show", "dev", "eth0")
    assert len(neigh.splitlines()) == 6 and "192.0.2.1 " in neigh
