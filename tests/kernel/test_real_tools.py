"""kindplan's rendered files fed to the real tools, each test inside throw-away network namespaces.

- `ip -batch` installs exactly the compiled routes and veth addresses; a second run changes nothing;
- iptables-restore accepts the SNAT payloads, and iptables-save prints them back line for line;
- the CNI plugins (ptp, host-local, portmap) run the rendered conflist, and the kernel state ptp
  makes is the state compile_desired predicts for that pod.

Dumps use `ip -N -j`: protocols and scopes come back as numbers whatever /etc/iproute2 names.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_interface, ip_network
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml
from builders import load
from shell import CNI_BIN, sh

from kindplan.core import render
from kindplan.core.addresses import IPAddress, IPNetwork
from kindplan.core.compiler import compile_desired, find_node
from kindplan.core.masq import iptables as dialect
from kindplan.core.model import DesiredState, HostFacts, Snapshot

pytestmark = pytest.mark.root

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
# fixture -> (node, the addresses that node's eth0 has in kind)
NODES = {
    "seed-lab": ("k8s-guide-worker2", ("172.18.0.12/16",)),
    "dual-stack": ("dual-worker", ("172.18.0.3/16", "fc00:f853:ccd:e793::3/64")),
    "ipv6-only": ("v6-worker2", ("fc00:f853:ccd:e793::4/64",)),
}
SCOPES = {"universe": 0, "host": 254}  # rtnetlink's numbers for the model's scope names
PROTO_KERNEL, PROTO_BOOT = 2, 3  # ip omits protocol boot (what ptp's routes get) from its output
DEFAULT = {"-4": IPv4Network("0.0.0.0/0"), "-6": IPv6Network("::/0")}


class KRoute(NamedTuple):
    dst: IPNetwork
    gateway: IPAddress | None
    dev: str
    scope: int
    metric: int
    proto: int


def fixture(name: str) -> tuple[dict[str, Any], str]:
    """The fixture's snapshot document (to edit) and the node the tests render."""
    return yaml.safe_load((FIXTURES / name / "snapshot.yaml").read_text()), NODES[name][0]


def desired_of(doc: dict[str, Any], node: str) -> tuple[Snapshot, DesiredState]:
    snapshot = load(doc)
    return snapshot, compile_desired(snapshot, node, HostFacts(uplink="eth0"))


def routes(ns: str) -> set[KRoute]:
    """Main-table routes of both families, minus those the kernel derives from addresses."""
    found = set()
    for family in ("-4", "-6"):
        for r in json.loads(sh("ip", "-N", "-j", family, "-n", ns, "route", "show")):
            route = KRoute(
                DEFAULT[family] if r["dst"] == "default" else ip_network(r["dst"]),
                ip_address(r["gateway"]) if "gateway" in r else None,
                r["dev"],
                int(r.get("scope", 0)),
                int(r.get("metric", 0)),
                int(r.get("protocol", PROTO_BOOT)),
            )
            if route.proto != PROTO_KERNEL:
                found.add(route)
    return found


def addresses(ns: str) -> set[tuple[str, Any]]:
    """(ifname, address/prefix) of every global-scope address in the namespace."""
    return {
        (link["ifname"], ip_interface(f"{a['local']}/{a['prefixlen']}"))
        for link in json.loads(sh("ip", "-N", "-j", "-n", ns, "address", "show"))
        for a in link["addr_info"]
        if a["scope"] == "0"
    }


def want_routes(desired: DesiredState) -> set[KRoute]:
    return {
        KRoute(r.dst, r.gateway, r.ifname, SCOPES[r.scope], r.metric, r.proto)
        for r in desired.routes
    }


def want_addresses(desired: DesiredState) -> set[tuple[str, Any]]:
    return {(a.ifname, ip_interface(f"{a.address}/{a.prefixlen}")) for a in desired.addresses}


def add_veth(ns: str, name: str, peer: str) -> None:
    """A veth pair with both ends in `ns` and up: a link with carrier that leads nowhere else."""
    sh("ip", "-n", ns, "link", "add", name, "type", "veth", "peer", "name", peer)
    for end in (name, peer):
        sh("ip", "-n", ns, "link", "set", end, "up")


# -- 1. ip -batch ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(NODES))
def test_route_batch_installs_exactly_the_desired_state(
    name: str, netns: str, tmp_path: Path
) -> None:
    doc, node = fixture(name)
    snapshot, desired = desired_of(doc, node)
    add_veth(netns, "eth0", "eth0-peer")
    uplink = {("eth0", ip_interface(a)) for a in NODES[name][1]}
    for _, addr in uplink:
        # nodad: the address is usable at once, so gateways on its prefix are accepted
        nodad = ["nodad"] if addr.version == 6 else []
        sh("ip", "-n", netns, "address", "add", str(addr), "dev", "eth0", *nodad)
    veths = sorted({p.host_interface for p in snapshot.pods if p.node == node})
    assert veths, "the fixture must have pods on this node"
    for i, veth in enumerate(veths):
        add_veth(netns, veth, f"pod{i}")
    batch = tmp_path / render.ROUTES_FILE
    batch.write_text(render.render_route_batch(desired))

    def state() -> tuple[object, ...]:  # raw route dumps: any change at all shows
        dumps = (sh("ip", "-N", "-j", f, "-n", netns, "route", "show") for f in ("-4", "-6"))
        return (*dumps, addresses(netns))

    sh("ip", "-n", netns, "-batch", str(batch))
    assert routes(netns) == want_routes(desired)
    assert addresses(netns) == want_addresses(desired) | uplink
    assert {ifname for ifname, _ in want_addresses(desired)} == set(veths)
    first = state()
    sh("ip", "-n", netns, "-batch", str(batch))  # replace, not add: a rerun must succeed
    assert state() == first


# -- 2. iptables-restore ---------------------------------------------------------------------------

TOOLS = {4: "iptables", 6: "ip6tables"}
FOREIGN_DST = {4: "198.51.100.7", 6: "2001:db8:ffff::7"}  # documentation ranges
STALE_DST = {4: "203.0.113.0/24", 6: "2001:db8:eeee::/48"}


@pytest.mark.parametrize("name", list(NODES))
def test_restore_test_accepts_rendered_payloads(name: str, netns: str, tmp_path: Path) -> None:
    doc, node = fixture(name)
    snapshot, desired = desired_of(doc, node)
    files = render.render_files(desired)
    assert {f for f in files if f in dialect.RULES_FILES.values()} == {
        dialect.RULES_FILES[v] for v in snapshot.families
    }
    for chain in desired.masq:
        rules_file = tmp_path / dialect.RULES_FILES[chain.version]
        rules_file.write_text(files[rules_file.name])
        sh(f"{TOOLS[chain.version]}-restore", "--test", str(rules_file), ns=netns)
        payload = dialect.fix_payload(chain, jumps=0, want_jumps=0)
        sh(f"{TOOLS[chain.version]}-restore", "--test", ns=netns, stdin=payload)
        # --test parses and checks but commits nothing
        assert dialect.MASQ_CHAIN not in sh(f"{TOOLS[chain.version]}-save", ns=netns)


@pytest.mark.parametrize("version", [4, 6])
def test_restore_noflush_round_trips_and_replaces_only_our_chain(
    version: int, netns: str, tmp_path: Path
) -> None:
    doc, node = fixture("dual-stack")  # RETURN rules for the pod subnet and an extra CIDR
    _, desired = desired_of(doc, node)
    chain = next(c for c in desired.masq if c.version == version)
    tool = TOOLS[version]

    def nat(*args: str) -> str:
        return sh(tool, "-t", "nat", *args, ns=netns)

    def rules() -> list[str]:
        saved = sh(f"{tool}-save", "-t", "nat", ns=netns).splitlines()
        return [ln for ln in saved if ln.startswith("-A ")]

    # someone else's chain and jump (Docker's, say) that a --noflush restore must leave alone
    nat("-N", "DOCKER")
    nat("-A", "DOCKER", "-d", FOREIGN_DST[version], "-j", "RETURN")
    nat("-A", "POSTROUTING", "-o", "docker0", "-j", "DOCKER")
    foreign = rules()
    ours = [*dialect.rule_lines(chain), dialect.jump_rule()]

    def assert_applied() -> None:
        saved = rules()
        in_chain = [ln for ln in saved if ln.startswith(f"-A {dialect.MASQ_CHAIN} ")]
        # exact strings: the rendering is the canonical iptables-save form
        assert in_chain == list(dialect.rule_lines(chain))
        assert in_chain[-1].endswith("-j MASQUERADE")  # anything after it would never match
        assert saved.count(dialect.jump_rule()) == 1
        assert [ln for ln in saved if ln not in ours] == foreign

    rules_file = tmp_path / dialect.RULES_FILES[version]
    rules_file.write_text(render.render_files(desired)[rules_file.name])
    sh(f"{tool}-restore", "--noflush", str(rules_file), ns=netns)
    assert_applied()

    # drift in our chain; restoring the declaration without the jump must flush and refill it
    nat("-A", dialect.MASQ_CHAIN, "-d", STALE_DST[version], "-j", "RETURN")
    payload = dialect.fix_payload(chain, jumps=0, want_jumps=0)
    sh(f"{tool}-restore", "--noflush", ns=netns, stdin=payload)
    assert_applied()


# -- 3. the CNI plugins ----------------------------------------------------------------------------


def run_plugin(ns: str, command: str, conf: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """Execute one CNI plugin inside `ns` as a runtime would; its JSON result ({} for DEL)."""
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, str(CNI_BIN / conf["type"])],
        input=json.dumps(conf),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": os.environ["PATH"], "CNI_COMMAND": command, **env},
    )
    if proc.returncode != 0:  # CNI plugins report errors as JSON on stdout
        pytest.fail(f"{conf['type']} {command}: exit {proc.returncode}: {proc.stdout}{proc.stderr}")
    return json.loads(proc.stdout) if proc.stdout.strip() else {}


def run_chain(
    ns: str, command: str, conflist: dict[str, Any], env: dict[str, str], result: Any = None
) -> Any:
    """The conflist's plugins in order for ADD (each gets the previous result), reversed for DEL
    (each gets the final ADD result). Returns the last result."""
    plugins = conflist["plugins"] if command == "ADD" else conflist["plugins"][::-1]
    for plugin in plugins:
        conf = {**plugin, "name": conflist["name"], "cniVersion": conflist["cniVersion"]}
        if result is not None:
            conf["prevResult"] = result
        out = run_plugin(ns, command, conf, env)
        if command == "ADD":
            result = out
    return result


@pytest.mark.parametrize("name", ["seed-lab", "dual-stack", "ipv6-only"])
def test_cni_plugins_make_what_compile_desired_predicts(
    name: str, make_netns: Callable[[], str], tmp_path: Path
) -> None:
    doc, node = fixture(name)
    data_dir = tmp_path / "ipam"
    doc["cluster"].setdefault("cni", {})["ipamDataDir"] = str(data_dir)
    _, desired = desired_of(doc, node)
    conflist = json.loads(render.render_conflist(desired))
    # host-local must write under tmp_path, never into the machine's own /run
    assert conflist["plugins"][0]["ipam"]["dataDir"] == str(data_dir)
    node_ns, pod_ns = make_netns(), make_netns()
    env = {
        "CNI_CONTAINERID": uuid.uuid4().hex,
        "CNI_NETNS": f"/run/netns/{pod_ns}",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": str(CNI_BIN),
    }
    result = run_chain(node_ns, "ADD", conflist, env)
    veth = next(i["name"] for i in result["interfaces"] if "sandbox" not in i)
    pod_ips = [ip_interface(i["address"]) for i in result["ips"]]

    # the snapshot a controller would now publish, with the pod ptp just made
    doc["pods"] = [
        {
            "namespace": "default",
            "name": "cni-pod",
            "node": node,
            "ips": [str(i.ip) for i in pod_ips],
            "hostInterface": veth,
        }
    ]
    snapshot, desired = desired_of(doc, node)
    cidrs = {c.version: c for c in find_node(snapshot, node).pod_cidrs}
    assert {i.version for i in pod_ips} == set(cidrs)

    # node side: the gateway /32 (/128) on the veth and one host route per pod IP, nothing else
    assert addresses(node_ns) == want_addresses(desired)
    pod_routes = {r for r in want_routes(desired) if r.dev == veth}
    assert len(pod_routes) == len(pod_ips)
    assert {r[:5] for r in routes(node_ns)} == {r[:5] for r in pod_routes}  # not proto
    for sysctl in desired.sysctls:  # ptp turns on the forwarding compile_desired asks for
        assert sh("sysctl", "-n", sysctl.name, ns=node_ns).strip() == sysctl.value
    # host-local keeps its leases in the rendered dataDir, one file per IP
    leases = data_dir / conflist["name"]
    assert {str(i.ip) for i in pod_ips} <= {p.name for p in leases.iterdir()}

    # pod side: the pod IP with the PodCIDR's prefix length, default route via the gateway
    assert addresses(pod_ns) == {
        ("eth0", ip_interface(f"{i.ip}/{cidrs[i.version].prefixlen}")) for i in pod_ips
    }
    defaults = {(r.dst, r.gateway, r.dev) for r in routes(pod_ns) if r.dst.prefixlen == 0}
    assert defaults == {(DEFAULT[f"-{v}"], c.network_address + 1, "eth0") for v, c in cidrs.items()}

    run_chain(node_ns, "DEL", conflist, env, result)
    links = {link["ifname"] for link in json.loads(sh("ip", "-j", "-n", node_ns, "link", "show"))}
    assert links == {"lo"}
    assert not {str(i.ip) for i in pod_ips} & {p.name for p in leases.iterdir()}
