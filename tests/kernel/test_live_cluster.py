"""Live clusters: a joining node, odd nodes in a node list, a node's own order of families, and
taking a node over from kindnetd with its leftovers. Each on a namespace built like a kind node
(eth0 on the docker network 172.18.0.0/16), from node lists shaped as the API returns them
(tests/data/kube: kind-control-plane 172.18.0.3 10.244.0.0/24, kind-worker 172.18.0.2
10.244.2.0/24, kind-worker2 172.18.0.4 10.244.1.0/24).
"""

from __future__ import annotations

import copy
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubeapi import FakeKubeAPI, events, load
from nodes import build_node, kindplan
from shell import sh
from watcher import Watcher, has_route, replace_file

from kindplan.node.netns import enter_netns

pytestmark = pytest.mark.root

PEERS = {
    "10.244.0.0/24": "172.18.0.3",
    "10.244.2.0/24": "172.18.0.2",
    "10.244.1.0/24": "172.18.0.4",
}
V6_PEERS = {
    "fd00:10:244::/64": "fc00:f853:ccd:e793::3",
    "fd00:10:244:2::/64": "fc00:f853:ccd:e793::2",
    "fd00:10:244:1::/64": "fc00:f853:ccd:e793::4",
}
DUAL = "10.244.0.0/16,fd00:10:244::/56"


def api_node(name: str, cidrs: list[str], ips: list[str]) -> dict[str, Any]:
    """A Node as the API lists it (kind-worker's item, renamed and readdressed)."""
    node = copy.deepcopy(load("nodelist.json")["items"][1])
    node["metadata"]["name"] = name
    node["metadata"]["labels"]["kubernetes.io/hostname"] = name
    node["spec"].pop("podCIDR", None)
    node["spec"].pop("podCIDRs", None)
    if cidrs:  # the API leaves out what is not set yet
        node["spec"].update(podCIDR=cidrs[0], podCIDRs=cidrs)
    node["status"]["addresses"] = [{"type": "InternalIP", "address": ip} for ip in ips] + [
        {"type": "Hostname", "address": name}
    ]
    return node


def node_list(*extra: dict[str, Any], dual: bool = False) -> dict[str, Any]:
    """nodelist.json (dual: with each node's IPv6 PodCIDR and InternalIP too) plus `extra`."""
    doc = load("nodelist.json")
    if dual:
        for item, (cidr, ip) in zip(doc["items"], _v6_of(doc["items"]), strict=True):
            item["spec"]["podCIDRs"].append(cidr)
            item["status"]["addresses"].insert(1, {"type": "InternalIP", "address": ip})
    doc["items"] += extra
    return doc


def _v6_of(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    by_v4 = {v4: (v6, V6_PEERS[v6]) for v4, v6 in zip(PEERS, V6_PEERS, strict=True)}
    return [by_v4[item["spec"]["podCIDRs"][0]] for item in items]


def routes(ns: str, *family: str) -> dict[str, str]:
    """dst -> the rest of the line, for the routes through a gateway."""
    out = {}
    for line in sh("ip", "-n", ns, *family, "route", "show").splitlines():
        dst, _, rest = line.partition(" ")
        if " via " in f" {rest}":
            out[dst] = rest
    return out


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kindplan.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )


def run_args(ns: str, tmp: Path, node: str, *extra: str) -> list[str]:
    return [
        "--node",
        node,
        "--netns",
        ns,
        "--conf-dir",
        str(tmp / "cni"),
        *extra,
    ]


# -- a joining node is still a node ------------------------------------------------------------


def test_a_joining_node_routes_its_peers_and_converges_when_its_podcidr_arrives(
    netns: str, tmp_path: Path
) -> None:
    """The node list as the API has it while kind-worker3 joins (watch-nodes.jsonl's ADDED),
    then with its PodCIDR (MODIFIED): one loop, no restart."""
    build_node(netns, ["172.18.0.5/16"], [])
    joining, assigned = _worker3_events()
    snapshot = tmp_path / "nodes.json"
    snapshot.write_text(json.dumps(node_list(joining)))
    conflist = tmp_path / "cni" / "10-kindnet.conflist"
    args = [str(snapshot), *run_args(netns, tmp_path, "kind-worker3")]
    args += ["--pod-subnet", "10.244.0.0/16", "--interval", "60s"]
    args += ["--state-dir", str(tmp_path / "state"), "--cni-cache-dir", str(tmp_path / "none")]
    loop = Watcher(args)
    try:
        line = loop.wait_for(r"round 1: applied")
        assert {dst: rest.split()[1] for dst, rest in routes(netns).items()} == PEERS
        assert not conflist.exists()  # never a conflist with "subnet": ""
        waits = r"node kind-worker3 has no PodCIDR yet: .*10-kindnet.conflist waits for one"
        loop.wait_for(waits)

        # the same node list again (another resourceVersion): said once, not every round
        again = node_list(joining)
        again["metadata"]["resourceVersion"] = "1500"
        replace_file(snapshot, json.dumps(again))
        line = loop.wait_for(r"items\[3\] \(node kind-worker3\): no PodCIDR yet", after=line + 1)

        replace_file(snapshot, json.dumps(node_list(assigned)))
        line = loop.wait_for(r"applied .*file .*10-kindnet.conflist", after=line)
        ranges = json.loads(conflist.read_text())["plugins"][0]["ipam"]["ranges"]
        assert ranges == [[{"subnet": "10.244.3.0/24"}]]
        assert {dst: rest.split()[1] for dst, rest in routes(netns).items()} == PEERS
        assert sum(1 for x in loop.lines if "waits for one" in x) == 1, loop.lines
        assert loop.stop()[0] == 0
    finally:
        loop.kill()


def test_a_joining_node_converges_when_the_api_assigns_its_podcidr(
    netns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same through --kube: the node-ipam controller's MODIFIED event, as the API sends it."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)  # the loop would send loopback HTTP to a proxy
        monkeypatch.delenv(name.upper(), raising=False)
    build_node(netns, ["172.18.0.5/16"], [])
    joining, _ = _worker3_events()
    with enter_netns(netns):
        api = FakeKubeAPI(nodes=node_list(joining)).start()  # its threads live in the namespace
    conflist = tmp_path / "cni" / "10-kindnet.conflist"
    args = ["--kube", "--kubeconfig", str(api.write_kubeconfig(tmp_path / "kubeconfig"))]
    args += ["--node", "kind-worker3", "--pod-subnet", "10.244.0.0/16", "--interval", "60s"]
    args += ["--conf-dir", str(tmp_path / "cni"), "--state-dir", str(tmp_path / "state")]
    args += ["--cni-cache-dir", str(tmp_path / "none")]
    loop = Watcher(args, in_netns=netns)
    try:
        line = loop.wait_for(r"round 1: applied")
        assert all(has_route(netns, dst) for dst in PEERS) and not conflist.exists()
        assigned = next(
            e
            for e in events("watch-nodes.jsonl")
            if e["type"] == "MODIFIED" and e["object"]["metadata"]["name"] == "kind-worker3"
        )
        api.send("nodes", assigned)
        loop.wait_for(r"applied .*file .*10-kindnet.conflist", after=line)
        ranges = json.loads(conflist.read_text())["plugins"][0]["ipam"]["ranges"]
        assert ranges == [[{"subnet": "10.244.3.0/24"}]]
        assert loop.stop()[0] == 0
    finally:
        loop.kill()
        api.stop()


def _worker3_events() -> tuple[dict[str, Any], dict[str, Any]]:
    found = [
        e["object"]
        for e in events("watch-nodes.jsonl")
        if e["type"] in ("ADDED", "MODIFIED")
        and e["object"]["metadata"].get("name") == "kind-worker3"
    ]
    assert "podCIDRs" not in found[0]["spec"] and found[1]["spec"]["podCIDRs"] == ["10.244.3.0/24"]
    return found[0], found[1]


def test_a_node_without_an_internal_ip_routes_its_peers_through_the_assumed_uplink(
    netns: str, tmp_path: Path
) -> None:
    """No InternalIP yet: the interface that holds the peers' range is the uplink, said so."""
    build_node(netns, ["172.18.0.5/16"], [])
    snapshot = tmp_path / "nodes.json"
    snapshot.write_text(json.dumps(node_list(api_node("kind-worker3", ["10.244.3.0/24"], []))))
    state = ["--state-dir", str(tmp_path / "state"), "--pod-subnet", "10.244.0.0/16"]
    result = kindplan("apply", str(snapshot), *run_args(netns, tmp_path, "kind-worker3"), *state)
    assert result.returncode == 0, result.stderr
    assert (
        "warning: node kind-worker3 has no IPv4 InternalIP yet: its IPv4 peers are routed through "
        "eth0 (it holds the peers' range 172.18.0.0/16), assumed to be on their link"
    ) in result.stderr
    assert {dst: rest.split()[1] for dst, rest in routes(netns).items()} == PEERS
    conflist = json.loads((tmp_path / "cni" / "10-kindnet.conflist").read_text())
    assert conflist["plugins"][0]["ipam"]["ranges"] == [[{"subnet": "10.244.3.0/24"}]]
    again = kindplan("plan", str(snapshot), *run_args(netns, tmp_path, "kind-worker3"), *state[2:])
    assert again.returncode == 0 and again.stdout.endswith("No changes.\n"), again.stdout


@pytest.mark.parametrize("uplink", [None, "eth0"])
def test_a_dual_stack_node_without_its_ipv6_internal_ip_routes_its_ipv6_peers(
    netns: str, tmp_path: Path, uplink: str | None
) -> None:
    build_node(netns, ["172.18.0.5/16", "fc00:f853:ccd:e793::5/64"], [])
    own = api_node("kind-worker3", ["10.244.3.0/24", "fd00:10:244:3::/64"], ["172.18.0.5"])
    snapshot = tmp_path / "nodes.json"
    snapshot.write_text(json.dumps(node_list(own, dual=True)))
    extra = ["--pod-subnet", DUAL, "--state-dir", str(tmp_path / "state")]
    extra += ["--uplink", uplink] if uplink else []
    result = kindplan("apply", str(snapshot), *run_args(netns, tmp_path, "kind-worker3"), *extra)
    assert result.returncode == 0, result.stderr
    how = "given by --uplink" if uplink else "the uplink of its other InternalIP"
    assert (
        f"node kind-worker3 has no IPv6 InternalIP yet: its IPv6 peers are routed through eth0 "
        f"({how}), assumed to be on their link"
    ) in result.stderr
    assert {dst: rest.split()[1] for dst, rest in routes(netns).items()} == PEERS
    assert {dst: rest.split()[1] for dst, rest in routes(netns, "-6").items()} == V6_PEERS


# -- one odd node never blocks the others ------------------------------------------------------

ODD_V4 = api_node("kind-odd", ["10.244.5.0/24", "fd00:10:244:5::/64"], ["172.18.0.6"])


def odd_cases() -> list[tuple[str, dict[str, Any], str, dict[str, str], dict[str, str]]]:
    """(pod subnets, node list, warning, IPv4 routes, IPv6 routes) of kind-worker's view."""
    v4 = {dst: gw for dst, gw in PEERS.items() if gw != "172.18.0.2"}
    v6 = {dst: gw for dst, gw in V6_PEERS.items() if not gw.endswith("::2")}
    return [
        (  # a dual-stack peer with both PodCIDRs but only an IPv4 InternalIP
            DUAL,
            node_list(ODD_V4, dual=True),
            "node kind-odd has an IPv6 PodCIDR but no IPv6 InternalIP; no IPv6 route to its pods",
            {**v4, "10.244.5.0/24": "172.18.0.6"},
            v6,
        ),
        (  # an IPv4 cluster, a peer with an extra IPv6 PodCIDR
            "10.244.0.0/16",
            node_list(ODD_V4),
            "fd00:10:244:5::/64 is IPv6 but the cluster has no IPv6 pod subnet; unused",
            {**v4, "10.244.5.0/24": "172.18.0.6"},
            {},
        ),
    ]


@pytest.mark.parametrize("case", [0, 1])
@pytest.mark.parametrize("source", ["file", "folder", "stdin"])
def test_an_odd_peer_is_routed_as_far_as_it_can_be(
    netns: str, tmp_path: Path, source: str, case: int
) -> None:
    subnets, doc, warning, want_v4, want_v6 = odd_cases()[case]
    build_node(netns, ["172.18.0.2/16", "fc00:f853:ccd:e793::2/64"], [])
    stdin = None
    if source == "file":
        path = tmp_path / "nodes.json"
        path.write_text(json.dumps(doc))
        where = str(path)
    elif source == "folder":  # kubectl get node NAME -o json, one file per node
        folder = tmp_path / "nodes"
        folder.mkdir()
        for item in doc["items"]:
            node = {"kind": "Node", "apiVersion": "v1", **item}
            (folder / f"{item['metadata']['name']}.json").write_text(json.dumps(node))
        where = str(folder)
    else:
        where, stdin = "-", json.dumps(doc)
    args = [where, *run_args(netns, tmp_path, "kind-worker"), "--pod-subnet", subnets]
    result = run_cli("apply", *args, "--state-dir", str(tmp_path / "s"), stdin=stdin)
    assert result.returncode == 0, result.stderr
    assert warning in result.stderr
    assert {dst: rest.split()[1] for dst, rest in routes(netns).items()} == want_v4
    assert {dst: rest.split()[1] for dst, rest in routes(netns, "-6").items()} == want_v6
    strict = run_cli("validate", where, "--strict", "--pod-subnet", subnets, stdin=stdin)
    assert strict.returncode == 65, strict.stderr


@pytest.fixture
def api(netns: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKubeAPI]:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)  # the loop would send loopback HTTP to a proxy
        monkeypatch.delenv(name.upper(), raising=False)
    build_node(netns, ["172.18.0.2/16", "fc00:f853:ccd:e793::2/64"], [])
    with enter_netns(netns):
        server = FakeKubeAPI(nodes=node_list(ODD_V4, dual=True)).start()  # lives in the namespace
    yield server
    server.stop()


def test_an_odd_peer_from_the_api_is_routed_as_far_as_it_can_be(
    netns: str, api: FakeKubeAPI, tmp_path: Path
) -> None:
    _, _, warning, want_v4, want_v6 = odd_cases()[0]
    args = ["--kube", "--kubeconfig", str(api.write_kubeconfig(tmp_path / "kubeconfig"))]
    args += ["--node", "kind-worker", "--pod-subnet", DUAL, "--interval", "60s"]
    args += ["--conf-dir", str(tmp_path / "cni"), "--state-dir", str(tmp_path / "state")]
    args += ["--cni-cache-dir", str(tmp_path / "none")]
    loop = Watcher(args, in_netns=netns)
    try:
        loop.wait_for(r"round 1: applied")
        assert any(warning in line for line in loop.lines), loop.lines
        assert {dst: rest.split()[1] for dst, rest in routes(netns).items()} == want_v4
        assert {dst: rest.split()[1] for dst, rest in routes(netns, "-6").items()} == want_v6
        assert has_route(netns, "10.244.5.0/24")
        assert loop.stop(signal.SIGTERM)[0] == 0
    finally:
        loop.kill()


# -- --netns without --conf-dir ----------------------------------------------------------------


def test_netns_without_conf_dir_writes_where_ip_netns_exec_shows_etc_cni(
    netns: str, tmp_path: Path
) -> None:
    """iproute2's convention: /etc/netns/NAME/cni/net.d is /etc/cni/net.d under `ip netns exec`.
    The apply runs in a private mount namespace with an overlay on /etc, so the host's /etc is
    never written: what it writes lands in the overlay's upper folder under tmp_path."""
    build_node(netns, ["172.18.0.2/16"], [])
    snapshot = tmp_path / "nodes.json"
    snapshot.write_text(json.dumps(node_list()))
    where = f"/etc/netns/{netns}/cni/net.d/10-kindnet.conflist"
    args = [str(snapshot), "--node", "kind-worker", "--netns", netns]
    args += ["--pod-subnet", "10.244.0.0/16", "--cni-cache-dir", str(tmp_path / "none")]
    plan = run_cli("plan", *args)
    assert plan.returncode == 0, plan.stderr
    assert f"+ file {where} (new)" in plan.stdout

    upper, work = tmp_path / "upper", tmp_path / "work"
    upper.mkdir()
    work.mkdir()
    apply = " ".join([sys.executable, "-m", "kindplan.cli", "apply", *args])
    script = (
        f"mount -t overlay overlay -o lowerdir=/etc,upperdir={upper},workdir={work} /etc && "
        f"{apply} --state-dir {tmp_path / 'state'} >&2 && mkdir -p /etc/cni/net.d && "
        f"ip netns exec {netns} cat /etc/cni/net.d/10-kindnet.conflist"
    )
    seen = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        check=False,
    )
    assert seen.returncode == 0, seen.stderr
    written = upper / where.removeprefix("/etc/")
    assert written.read_text() == seen.stdout  # the namespace sees it as /etc/cni/net.d
    assert json.loads(seen.stdout)["plugins"][0]["ipam"]["ranges"] == [
        [{"subnet": "10.244.2.0/24"}]
    ]
    assert not Path(f"/etc/netns/{netns}").exists()


# -- taking over from kindnetd -----------------------------------------------------------------


def test_adopt_takes_over_from_kindnetd_and_removes_only_its_leftovers(
    netns: str, tmp_path: Path
) -> None:
    """kindnetd's routes (proto boot) for today's peers, and what it never deleted: a departed
    node's route and a peer's old, larger PodCIDR."""
    build_node(netns, ["172.18.0.2/16"], ["veth0a1b2c3d"])
    for dst, gateway in PEERS.items():
        if gateway != "172.18.0.2":
            sh("ip", "-n", netns, "route", "add", dst, "via", gateway, "dev", "eth0")
    stale = {"10.244.7.0/24": "172.18.0.9", "10.244.0.0/23": "172.18.0.3"}
    for dst, gateway in stale.items():
        sh("ip", "-n", netns, "route", "add", dst, "via", gateway, "dev", "eth0")
    # never touched: a pod's host route on its veth, a route outside the pod subnets
    sh("ip", "-n", netns, "route", "add", "10.244.2.5", "dev", "veth0a1b2c3d", "scope", "host")
    sh("ip", "-n", netns, "route", "add", "192.168.50.0/24", "via", "172.18.0.1", "dev", "eth0")
    kept = {
        line
        for line in sh("ip", "-n", netns, "route", "show").splitlines()
        if line.startswith(("10.244.2.5 ", "192.168.50.0/24 ", "172.18.0.0/16 "))
    }
    assert len(kept) == 3
    snapshot = tmp_path / "nodes.json"
    snapshot.write_text(json.dumps(node_list()))
    args = [
        str(snapshot),
        *run_args(netns, tmp_path, "kind-worker"),
        "--pod-subnet",
        "10.244.0.0/16",
    ]
    args += ["--cni-cache-dir", str(tmp_path / "none")]
    state = ["--state-dir", str(tmp_path / "state")]

    plan = kindplan("plan", *args)
    assert plan.returncode == 0, plan.stderr
    assert (
        "warning: stale foreign routes in the pod subnets, of no node (--adopt removes them): "
        "10.244.0.0/23 via 172.18.0.3 proto 3, 10.244.7.0/24 via 172.18.0.9 proto 3"
    ) in plan.stdout

    adopted = kindplan("apply", *args, *state, "--adopt")
    assert adopted.returncode == 0, adopted.stderr
    now = routes(netns)
    assert not set(stale) & set(now)
    assert {dst: rest for dst, rest in now.items() if dst.startswith("10.244.")} == {
        dst: f"via {gw} dev eth0 proto 75 " for dst, gw in PEERS.items() if gw != "172.18.0.2"
    }
    assert kept <= set(sh("ip", "-n", netns, "route", "show").splitlines())
    again = kindplan("plan", *args)
    assert again.stdout.endswith("No changes.\n") and "stale" not in again.stdout, again.stdout

    # journaled like any change: a rollback puts kindnetd's leftovers back as they were
    back = kindplan("rollback", "--netns", netns, *state)
    assert back.returncode == 0, back.stderr
    assert {dst: routes(netns)[dst] for dst in stale} == {
        dst: f"via {gw} dev eth0 " for dst, gw in stale.items()
    }
