"""`lab check`: prove the lab works end to end, from what listeners see, not from the rules.

- pod to pod, every pair, within and across nodes: the receiver sees the sender's pod IP;
- the guide's "day in the life of a packet" as route lookups: pod -> its node -> peer -> pod;
- SNAT: a pod's connection to the outside host arrives from its node's IP;
- hostPorts (portmap): a pod is reached at its node's IP from another node and from outside.
"""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from kindplan.core.addresses import parse_cidr
from kindplan.core.model import Pod
from kindplan.lab.probe import Listeners, seen_source
from kindplan.lab.run import lab_snapshot
from kindplan.lab.topology import CONTAINER_PORT, HOST_PORT, OUTSIDE_V4, OUTSIDE_V6, Lab, LabNode

PROBE_PORT = 7000
ANY = ""  # an expected source of ANY: any answer will do
Probe = tuple[str, str, int]  # (from namespace, to address, port)


@dataclass(frozen=True)
class Result:
    ok: bool
    what: str


@dataclass(frozen=True)
class Expect:
    """One line of the report: probes and the source address each listener should see."""

    what: str
    probes: tuple[tuple[Probe, str], ...]


def local_pods(lab: Lab) -> dict[str, tuple[LabNode, Pod]]:
    """Every pod with its IPs and host veth, as libcni's cache on its node records them."""
    from kindplan.node.cnicache import read_cni_cache

    network = lab_snapshot(lab).cluster.cni.network_name
    found = {}
    for node in lab.nodes:
        pods, _ = read_cni_cache(lab.node_dir(node, "cache"), node.name, network)
        found.update({_label(pod): (node, pod) for pod in pods})
    return found


def _label(pod: Pod) -> str:
    """As LabPod.label: the name, or `ns/name` outside the default namespace (a policy lab)."""
    return pod.name if pod.namespace == "default" else f"{pod.namespace}/{pod.name}"


def check(lab: Lab) -> list[Result]:
    pods = local_pods(lab)
    pod_ns = {p.label: p.ns for p in lab.pods}
    families = (4, 6) if lab.dual_stack else (4,)
    outside = [OUTSIDE_V4, OUTSIDE_V6][: len(families)]
    listeners = Listeners()
    host_port_pods = {p.label for p in lab.pods if p.host_port}
    wanted = [
        (pod_ns[name], str(ip), port)
        for name, (_, pod) in pods.items()
        for ip in pod.ips
        for port in ((PROBE_PORT, CONTAINER_PORT) if name in host_port_pods else (PROBE_PORT,))
    ]
    wanted += [(lab.outside_ns, address, PROBE_PORT) for address in outside]
    unable = [reason for ns, ip, port in wanted if (reason := listeners.listen(ns, ip, port))]
    expects = [
        *pod_to_pod(lab, pods, pod_ns, families),
        *snat(lab, pods, pod_ns, outside),
        *host_ports(lab, pods),
    ]
    with listeners.running():
        seen = run_probes([probe for e in expects for probe, _ in e.probes])
    missing = [p.label for p in lab.pods if p.label not in pods]
    results = [
        Result(
            not missing,
            "every pod is in its node's CNI cache"
            + (f" (missing: {', '.join(missing)})" if missing else ""),
        )
    ]
    results += [Result(False, reason) for reason in unable]
    results += [judge(e, seen) for e in expects]
    results += hops(pods, pod_ns, families, lab)
    return results


def run_probes(probes: list[Probe]) -> dict[Probe, str]:
    """All probes at once, each thread in its own namespace: a broken lab costs one timeout."""

    def one(probe: Probe) -> str:
        try:
            return seen_source(*probe)
        except OSError as e:
            return f"no answer ({e.strerror or e})"

    unique = list(dict.fromkeys(probes))
    with ThreadPoolExecutor(max_workers=32) as pool:
        return dict(zip(unique, pool.map(one, unique), strict=True))


def judge(expect: Expect, seen: dict[Probe, str]) -> Result:
    wrong = []
    for probe, want in expect.probes:
        got = seen[probe]
        if got != want if want != ANY else got.startswith("no answer"):
            wrong.append(f"{probe[0]} -> {probe[1]}:{probe[2]}: {got}")
    good = len(expect.probes) - len(wrong)
    detail = f"; {'; '.join(wrong[:3])}" if wrong else ""
    return Result(not wrong, f"{expect.what}: {good}/{len(expect.probes)}{detail}")


def _ip(pod: Pod, version: int) -> str:
    return next(str(ip) for ip in pod.ips if ip.version == version)


def pod_to_pod(
    lab: Lab,
    pods: dict[str, tuple[LabNode, Pod]],
    pod_ns: dict[str, str],
    families: tuple[int, ...],
) -> list[Expect]:
    """Every pod reaches every other pod, and the receiver sees the sender's own pod IP."""
    expects = []
    for src_node in lab.nodes:
        for dst_node in lab.nodes:
            for v in families:
                probes = tuple(
                    ((pod_ns[s], _ip(dst, v), PROBE_PORT), _ip(src, v))
                    for s, (n1, src) in pods.items()
                    for d, (n2, dst) in pods.items()
                    if n1 == src_node and n2 == dst_node and s != d
                )
                if probes:
                    expects.append(
                        Expect(
                            f"pod-to-pod IPv{v} {src_node.name} -> {dst_node.name} (source kept)",
                            probes,
                        )
                    )
    return expects


def snat(
    lab: Lab, pods: dict[str, tuple[LabNode, Pod]], pod_ns: dict[str, str], outside: list[str]
) -> list[Expect]:
    """A pod's connection to the outside host arrives from its node's IP (masqueraded)."""
    expects = []
    for node in lab.nodes:
        for address in outside:
            node_ip = next(ip for ip in node.ips if (":" in ip) == (":" in address))
            probes = tuple(
                ((pod_ns[name], address, PROBE_PORT), node_ip)
                for name, (pod_node, _) in pods.items()
                if pod_node == node
            )
            if probes:
                expects.append(
                    Expect(f"SNAT {node.name} pods -> outside {address}, from {node_ip}", probes)
                )
    return expects


def host_ports(lab: Lab, pods: dict[str, tuple[LabNode, Pod]]) -> list[Expect]:
    """hostPort through portmap: the pod at its node's IP, from another node and from outside."""
    expects = []
    for pod in (p for p in lab.pods if p.host_port and p.label in pods):
        node = lab.node(pod.node)
        sources = [(n.ns, f"node {n.name}") for n in lab.nodes if n != node][:1]
        sources.append((lab.outside_ns, "outside"))
        for ip in node.ips:
            for ns, label in sources:
                expects.append(
                    Expect(
                        f"hostPort {ip}:{HOST_PORT} -> {pod.name}:{CONTAINER_PORT} from {label}",
                        (((ns, ip, HOST_PORT), ANY),),
                    )
                )
    return expects


def route_get(ns: str, address: str) -> dict[str, str]:
    out = subprocess.run(
        ["ip", "-n", ns, "-j", "route", "get", address], capture_output=True, text=True, check=False
    )
    routes = json.loads(out.stdout or "[]") if out.returncode == 0 else []
    return routes[0] if routes else {"error": out.stderr.strip()}


def hops(
    pods: dict[str, tuple[LabNode, Pod]],
    pod_ns: dict[str, str],
    families: tuple[int, ...],
    lab: Lab,
) -> list[Result]:
    """The guide's day in the life of a packet, as route lookups: pod -> its node -> peer -> pod."""
    first: dict[str, tuple[str, LabNode, Pod]] = {}
    for name, (node, pod) in sorted(pods.items()):
        first.setdefault(node.name, (name, node, pod))
    results = []
    for src_name, src_node, _ in first.values():
        for dst_name, dst_node, dst in first.values():
            for v in families if src_node != dst_node else ():
                dst_ip = _ip(dst, v)
                gateway = _gateway(src_node, v)
                peer_ip, node_hop = _node_hop(lab, src_node, dst_node, v)
                steps = [
                    ("pod", pod_ns[src_name], {"gateway": gateway, "dev": "eth0"}),
                    (src_node.name, src_node.ns, node_hop),
                    (dst_node.name, dst_node.ns, {"dev": dst.host_interface}),
                ]
                bad = []
                for where, ns, want in steps:
                    got = route_get(ns, dst_ip)
                    if any(got.get(k) != value for k, value in want.items()):
                        bad.append(f"{where}: got {got.get('gateway') or ''} dev {got.get('dev')}")
                results.append(
                    Result(
                        not bad,
                        (
                            f"hops IPv{v} {src_name} -> {dst_name}: pod via {gateway}, "
                            f"node {src_node.name} via {peer_ip}, "
                            f"node {dst_node.name} dev {dst.host_interface}"
                            + (f"; {'; '.join(bad)}" if bad else "")
                        ),
                    )
                )
    return results


def _node_hop(lab: Lab, src: LabNode, dst: LabNode, version: int) -> tuple[str, dict[str, str]]:
    """Where the source node sends a packet for the destination's pods: the peer's InternalIP on
    eth0, or (a peer on another segment, --cross-subnet vxlan) its tunnel gateway on the VXLAN
    device, as core/tunnel.py derives it."""
    from ipaddress import ip_address

    from kindplan.core.routes import DEVICES
    from kindplan.core.tunnel import tunnel_gateway, tunnel_mac

    peer_ip = next(ip for ip in dst.ips if (":" in ip) == (version == 6))
    if lab.cross_subnet != "vxlan" or src.segment == dst.segment:
        return peer_ip, {"gateway": peer_ip, "dev": "eth0"}
    cidr = next(parse_cidr(c) for c in dst.pod_cidrs if parse_cidr(c).version == version)
    gateway = str(tunnel_gateway(cidr, tunnel_mac(ip_address(peer_ip))))
    return f"{gateway} dev {DEVICES[version]}", {"gateway": gateway, "dev": DEVICES[version]}


def _gateway(node: LabNode, version: int) -> str:
    """The first address of the node's PodCIDR: what ptp gives pods as their default gateway."""
    cidr = next(parse_cidr(c) for c in node.pod_cidrs if parse_cidr(c).version == version)
    return str(cidr.network_address + 1)
