"""The lab's CNI runtime driving the real plugins (ptp, host-local, portmap 1.1.1) on a rendered
conflist, with a node and its pods as throw-away network namespaces.

- ADD makes the pods the node's PodCIDR promises and writes the cache kindplan.node.cnicache reads;
- CHECK: what ptp and host-local really look at (the pod's side and the lease, not the node's);
- portmap's nat chains, and the part of them that DEL leaves behind;
- DEL removes the veth, the lease and the cache file, and may be repeated;
- a dual-stack node gives a pod one address per family.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv6Interface, ip_interface, ip_network
from pathlib import Path
from typing import Any

import pytest
import yaml
from shell import CNI_BIN, sh

from kindplan.core.compiler import compile_desired
from kindplan.core.model import HostFacts
from kindplan.core.render import render_conflist
from kindplan.errors import RuntimeFailure
from kindplan.inputs.kinds import parse_snapshot
from kindplan.lab.cni import Attachment, CniRuntime
from kindplan.node.cnicache import read_cni_cache
from kindplan.node.netns import enter_netns

pytestmark = pytest.mark.root

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
NETWORK = "kindnet"  # the network name the fixtures leave at kindplan's default
PORTS = ({"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},)


@dataclass(frozen=True)
class Lab:
    node: str  # the node's network namespace
    runtime: CniRuntime
    conflist: Path
    cache_dir: Path
    leases: Path  # host-local's folder for the network, below the overridden dataDir
    make_pod: Callable[[], str]  # a new pod namespace

    def add(self, att: Attachment) -> dict[str, Any]:
        with enter_netns(self.node):
            return self.runtime.add(att)

    def check(self, att: Attachment) -> None:
        with enter_netns(self.node):
            self.runtime.check(att)

    def delete(self, att: Attachment) -> None:
        with enter_netns(self.node):
            self.runtime.delete(att)


def build_lab(
    make_netns: Callable[[], str],
    tmp_path: Path,
    fixture: str,
    node: str,
    uplink: tuple[str, ...],
    *,
    cni_version: str | None = None,  # instead of the fixture's
) -> Lab:
    """The fixture's conflist for `node`, rendered by kindplan, and a node namespace whose eth0
    (a veth pair with both ends inside) has the node's addresses."""
    data = (FIXTURES / fixture / "snapshot.yaml").read_bytes()
    if cni_version is not None:  # CHECK needs CNI 0.4.0+, the kindnet default is 0.3.1
        doc = yaml.safe_load(data)
        doc["cluster"].setdefault("cni", {})["cniVersion"] = cni_version
        data = json.dumps(doc).encode()
    snapshot = parse_snapshot(data, source=fixture).snapshot
    conflist = tmp_path / "net.d" / "10-kindnet.conflist"
    conflist.parent.mkdir()
    conflist.write_text(render_conflist(compile_desired(snapshot, node, HostFacts(uplink="eth0"))))

    ns = make_netns()
    sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0-peer")
    for address in uplink:
        nodad = ["nodad"] if ":" in address else []  # usable at once, no DAD wait
        sh("ip", "-n", ns, "address", "add", address, "dev", "eth0", *nodad)
    for end in ("eth0", "eth0-peer"):
        sh("ip", "-n", ns, "link", "set", end, "up")
    data_dir = tmp_path / "ipam"  # never the rendered /run/cni-ipam-state of the machine
    runtime = CniRuntime(
        conflist, tmp_path / "results", plugin_dirs=(str(CNI_BIN),), ipam_data_dir=data_dir
    )
    return Lab(ns, runtime, conflist, tmp_path / "results", data_dir / NETWORK, make_netns)


@pytest.fixture
def seed_lab(make_netns: Callable[[], str], tmp_path: Path) -> Lab:
    """k8s-guide-worker2 of the seed lab (PodCIDR 10.244.2.0/24), conflist as rendered (0.3.1)."""
    return build_lab(make_netns, tmp_path, "seed-lab", "k8s-guide-worker2", ("172.18.0.12/16",))


@pytest.fixture
def checkable_lab(make_netns: Callable[[], str], tmp_path: Path) -> Lab:
    """The same node with cniVersion 1.0.0, which has CHECK and prevResult on DEL."""
    return build_lab(
        make_netns,
        tmp_path,
        "seed-lab",
        "k8s-guide-worker2",
        ("172.18.0.12/16",),
        cni_version="1.0.0",
    )


def attachment(lab: Lab, name: str, ports: tuple[dict[str, object], ...] = ()) -> Attachment:
    return Attachment(
        container_id=uuid.uuid4().hex,
        netns_path=f"/run/netns/{lab.make_pod()}",
        pod_namespace="default",
        pod_name=name,
        port_mappings=ports,
    )


def host_veth(result: dict[str, Any]) -> str:
    (veth,) = (i["name"] for i in result["interfaces"] if not i.get("sandbox"))
    return str(veth)


def result_ips(result: dict[str, Any]) -> list[IPv4Interface | IPv6Interface]:
    return [ip_interface(ip["address"]) for ip in result["ips"]]


def links(ns: str) -> set[str]:
    return {link["ifname"] for link in json.loads(sh("ip", "-j", "-n", ns, "link", "show"))}


def pod_addresses(att: Attachment) -> set[IPv4Interface | IPv6Interface]:
    """The global addresses on the pod's interface."""
    ns = Path(att.netns_path).name
    (link,) = json.loads(sh("ip", "-j", "-n", ns, "address", "show", "dev", att.ifname))
    return {
        ip_interface(f"{a['local']}/{a['prefixlen']}")
        for a in link["addr_info"]
        if a["scope"] == "global"
    }


def nat_rules(ns: str) -> list[str]:
    """The nat table as iptables-save prints it: chain declarations and rules."""
    return [ln for ln in sh("iptables-save", "-t", "nat", ns=ns).splitlines() if ln[:1] in ":-"]


def assert_gone(lab: Lab, att: Attachment, result: dict[str, Any]) -> None:
    assert host_veth(result) not in links(lab.node)
    assert att.ifname not in links(Path(att.netns_path).name)
    assert not lab.runtime.cache_path(att).exists()
    assert not {str(i.ip) for i in result_ips(result)} & {p.name for p in lab.leases.iterdir()}


# -- ADD, the cache, DEL ---------------------------------------------------------------------------


def test_add_two_pods_read_back_and_delete(seed_lab: Lab) -> None:
    lab = seed_lab
    web1, web2 = attachment(lab, "web-1"), attachment(lab, "web-2")
    results = [(att, lab.add(att)) for att in (web1, web2)]

    pod_cidr = ip_network("10.244.2.0/24")
    for att, result in results:
        (ip,) = result_ips(result)
        assert ip.network == pod_cidr
        # the child processes ran in the node's namespace: the host end of the veth is there
        assert host_veth(result).startswith("veth")
        assert host_veth(result) in links(lab.node)
        assert pod_addresses(att) == {ip}
        assert (lab.leases / str(ip.ip)).is_file()  # the dataDir override took effect
    assert len({host_veth(r) for _, r in results}) == 2
    assert len({str(result_ips(r)[0]) for _, r in results}) == 2

    # exactly libcni's cache entry, which kindplan reads back as the node's pods
    entry = json.loads(lab.runtime.cache_path(web1).read_text())
    assert entry["kind"] == "cniCacheV1"
    assert (entry["containerId"], entry["ifName"], entry["networkName"]) == (
        web1.container_id,
        "eth0",
        NETWORK,
    )
    assert base64.b64decode(entry["config"]) == lab.conflist.read_bytes()
    assert ["K8S_POD_NAME", "web-1"] in entry["cniArgs"]
    assert "capabilityArgs" not in entry  # no port mappings, nothing to remember
    assert entry["result"] == results[0][1]
    pods, warnings = read_cni_cache(lab.cache_dir, "k8s-guide-worker2", NETWORK)
    assert warnings == []
    assert {(p.namespace, p.name, p.ips, p.host_interface) for p in pods} == {
        ("default", att.pod_name, tuple(i.ip for i in result_ips(r)), host_veth(r))
        for att, r in results
    }
    assert {p.node for p in pods} == {"k8s-guide-worker2"}

    lab.delete(web1)
    assert_gone(lab, web1, results[0][1])
    pods, _ = read_cni_cache(lab.cache_dir, "k8s-guide-worker2", NETWORK)
    assert [p.name for p in pods] == ["web-2"]  # the other pod is untouched
    assert host_veth(results[1][1]) in links(lab.node)
    lab.delete(web1)  # DEL again: no cache file, the plugins find nothing to remove
    lab.delete(web2)
    assert_gone(lab, web2, results[1][1])
    assert links(lab.node) == {"lo", "eth0", "eth0-peer"}


def test_delete_cleans_up_after_a_failed_add(
    seed_lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab = seed_lab
    att = attachment(lab, "web-1", PORTS)
    monkeypatch.setenv("PATH", "/nonexistent")  # ptp succeeds, portmap finds no iptables
    # the message is the CNI error object's msg (and details, when there are any)
    with pytest.raises(
        RuntimeFailure, match=r'^portmap ADD: failed to open iptables: exec: "iptables"'
    ):
        lab.add(att)
    monkeypatch.undo()
    veths = links(lab.node) - {"lo", "eth0", "eth0-peer"}
    (lease,) = (p for p in lab.leases.iterdir() if p.name[0].isdigit())
    assert len(veths) == 1
    assert not lab.runtime.cache_path(att).exists()  # only a complete ADD is cached
    lab.delete(att)  # without a cache file DEL still runs, as after a failed sandbox setup
    assert not lease.exists()
    assert links(lab.node) == {"lo", "eth0", "eth0-peer"}


# -- CHECK -----------------------------------------------------------------------------------------


def test_check_needs_cni_0_4_0(seed_lab: Lab) -> None:
    att = attachment(seed_lab, "web-1")
    seed_lab.add(att)
    # as libcni (and the plugins: "config version does not allow CHECK")
    with pytest.raises(RuntimeFailure, match=r"cniVersion 0\.3\.1 has no CHECK"):
        seed_lab.check(att)
    seed_lab.delete(att)


def _delete_pod_default_route(lab: Lab, att: Attachment, result: dict[str, Any]) -> None:
    sh("ip", "route", "del", "default", ns=Path(att.netns_path).name)


def _delete_lease(lab: Lab, att: Attachment, result: dict[str, Any]) -> None:
    (lab.leases / str(result_ips(result)[0].ip)).unlink()


def _delete_pod_address(lab: Lab, att: Attachment, result: dict[str, Any]) -> None:
    pod = Path(att.netns_path).name  # the pod's routes go with the address: checked first
    sh("ip", "address", "del", str(result_ips(result)[0]), "dev", "eth0", ns=pod)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_delete_pod_default_route, r"^ptp CHECK: Expected Route .* not found in routing table"),
        (_delete_lease, r"^ptp CHECK: host-local: Failed to find address added by container"),
        (_delete_pod_address, r"^ptp CHECK: Failed to match addr .* on interface eth0"),
    ],
    ids=["pod-default-route", "lease", "pod-address"],
)
def test_check_fails_when_the_pod_side_is_damaged(
    checkable_lab: Lab,
    damage: Callable[[Lab, Attachment, dict[str, Any]], None],
    message: str,
) -> None:
    lab = checkable_lab
    att = attachment(lab, "web-1")
    result = lab.add(att)
    lab.check(att)
    damage(lab, att, result)
    with pytest.raises(RuntimeFailure, match=message):
        lab.check(att)
    lab.delete(att)
    assert_gone(lab, att, result)
    with pytest.raises(RuntimeFailure, match="no cached result"):
        lab.check(att)


def test_check_does_not_look_at_the_node_side(checkable_lab: Lab) -> None:
    """ptp 1.1.1's CHECK validates the pod's interface, addresses and routes and host-local's
    lease; the node's half (the host route, the gateway address on the veth) goes unchecked."""
    lab = checkable_lab
    att = attachment(lab, "web-1")
    result = lab.add(att)
    veth, (ip,) = host_veth(result), result_ips(result)
    sh("ip", "route", "del", f"{ip.ip}/32", "dev", veth, ns=lab.node)
    sh("ip", "address", "flush", "dev", veth, ns=lab.node)
    assert f"{ip.ip} " not in sh("ip", "route", "show", ns=lab.node)
    lab.check(att)  # the pod is unreachable, and CHECK passes
    lab.delete(att)
    assert_gone(lab, att, result)


# -- portmap ---------------------------------------------------------------------------------------

SHARED_CHAINS = (":CNI-HOSTPORT-DNAT ", ":CNI-HOSTPORT-SETMARK ", ":CNI-HOSTPORT-MASQ ")


def test_portmap_adds_nat_chains_and_delete_removes_the_pods(seed_lab: Lab) -> None:
    lab = seed_lab
    att = attachment(lab, "web-1", PORTS)
    result = lab.add(att)
    (ip,) = result_ips(result)
    rules = nat_rules(lab.node)
    for chain in SHARED_CHAINS:
        assert any(ln.startswith(chain) for ln in rules), chain
    (pod_chain,) = (ln.split()[0][1:] for ln in rules if ln.startswith(":CNI-DN-"))
    assert f"-A {pod_chain} -p tcp -m tcp --dport 8080 -j DNAT --to-destination {ip.ip}:80" in rules
    jump = next(ln for ln in rules if ln.startswith("-A CNI-HOSTPORT-DNAT "))
    assert f'id: \\"{att.container_id}\\"' in jump
    assert jump.endswith(f"--dports 8080 -j {pod_chain}")
    assert "-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT" in rules
    entry = json.loads(lab.runtime.cache_path(att).read_text())
    assert entry["capabilityArgs"] == {"portMappings": list(PORTS)}

    # DEL without the mappings: the cached capabilityArgs tell portmap what to remove
    lab.delete(Attachment(att.container_id, att.netns_path, "default", "web-1"))
    after = nat_rules(lab.node)
    # exactly the pod's chain and the jump to it go; the shared chains and their jumps from
    # PREROUTING, OUTPUT and POSTROUTING stay: portmap never removes them
    assert after == [ln for ln in rules if pod_chain not in ln]
    assert all(any(ln.startswith(chain) for ln in after) for chain in SHARED_CHAINS)
    assert_gone(lab, att, result)


def test_portmap_check_of_an_ipv4_only_pod_fails_in_1_1_1(checkable_lab: Lab) -> None:
    """portmap 1.1.1 checks an IPv4 pod's DNAT chain in ip6tables too, where ADD never made it
    (containernetworking/plugins#819, fixed later): with port mappings CHECK cannot pass."""
    lab = checkable_lab
    att = attachment(lab, "web-1", PORTS)
    result = lab.add(att)
    with pytest.raises(RuntimeFailure, match=r"^portmap CHECK: could not check ipv6 dnat"):
        lab.check(att)
    lab.delete(att)
    assert_gone(lab, att, result)


# -- dual stack ------------------------------------------------------------------------------------


@pytest.fixture
def dual_lab(make_netns: Callable[[], str], tmp_path: Path) -> Lab:
    return build_lab(
        make_netns,
        tmp_path,
        "dual-stack",
        "dual-worker",
        ("172.18.0.3/16", "fc00:f853:ccd:e793::3/64"),
    )


def test_dual_stack_pod_gets_one_address_per_family(dual_lab: Lab) -> None:
    lab = dual_lab
    att = attachment(lab, "web-1")
    result = lab.add(att)
    ips = result_ips(result)
    # dual-worker lists its IPv6 PodCIDR first: the real host-local follows the conflist's
    # ranges, so the pod's first IP is IPv6 (as with kindnetd)
    assert [ip.network for ip in ips] == [
        ip_network("fd00:10:244:1::/64"),
        ip_network("10.244.1.0/24"),
    ]
    assert pod_addresses(att) == set(ips)
    (pod,), warnings = read_cni_cache(lab.cache_dir, "dual-worker", NETWORK)
    assert warnings == []
    assert set(pod.ips) == {ip.ip for ip in ips}
    assert pod.host_interface == host_veth(result)
    lab.delete(att)
    assert_gone(lab, att, result)
