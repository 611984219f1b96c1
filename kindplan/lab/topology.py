"""The lab's topology: the kindnet guide's kind cluster, rebuilt from network namespaces.

    outside (203.0.113.10) -- bridge ns: br0 172.18.0.1/16, out0 203.0.113.1 -- eth0 of each node
    node ns: eth0 172.18.0.1x/16, default via 172.18.0.1; pods: namespaces wired by the ptp plugin

With --segments 2 the nodes are spread over two L2 segments, two bridges of the bridge namespace,
which routes between them: br0 172.18.0.1/24 and br1 172.18.1.1/24 (IPv6 fc00:f853:ccd:e793::/64
and fc00:f853:ccd:e794::/64), node i on segment i % 2; peers on the other segment are off-link
(--cross-subnet vxlan reaches them).

Every namespace is named `<lab>-...`, so several labs coexist and `down` finds all of a lab's
leftovers even after an `up` that failed halfway. No namespace is wired to the machine's own
network: the outside host is a namespace on a documentation range.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NamedTuple

from kindplan.errors import RuntimeFailure, UsageError

SEED_NODES = ("k8s-guide-control-plane", "k8s-guide-worker", "k8s-guide-worker2")
V4_SUBNET, V4_GATEWAY = "172.18.0.0/16", "172.18.0.1"
V6_PREFIX, V6_GATEWAY = "fc00:f853:ccd:e793::", "fc00:f853:ccd:e793::1"
OUTSIDE_V4, OUTSIDE_V4_GW = "203.0.113.10", "203.0.113.1"
OUTSIDE_V6, OUTSIDE_V6_GW = "2001:db8:203::10", "2001:db8:203::1"
POD_SUBNETS = {4: "10.244.0.0/16", 6: "fd00:10:244::/56"}
HOST_PORT, CONTAINER_PORT = 8080, 80


@dataclass(frozen=True)
class LabNode:
    name: str
    index: int
    ns: str
    ips: tuple[str, ...]  # InternalIPs, IPv4 first
    pod_cidrs: tuple[str, ...]
    segment: int = 0  # the L2 segment (bridge br<segment>) its uplink is on


@dataclass(frozen=True)
class LabPod:
    node: str
    name: str
    ns: str
    container_id: str
    host_port: bool  # publishes HOST_PORT -> CONTAINER_PORT through portmap
    namespace: str = "default"  # the Kubernetes namespace (a policy lab's: from its List)

    @property
    def label(self) -> str:
        """How lab commands name the pod: `web-0-1`, or `x/a` outside the default namespace."""
        return self.name if self.namespace == "default" else f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Lab:
    name: str
    state_dir: Path
    nodes: tuple[LabNode, ...]
    pods: tuple[LabPod, ...]
    dual_stack: bool
    segments: int = 1
    cross_subnet: str = "none"  # the snapshot's cluster.crossSubnet

    @property
    def bridge_ns(self) -> str:
        return f"{self.name}-bridge"

    @property
    def outside_ns(self) -> str:
        return f"{self.name}-outside"

    @property
    def root(self) -> Path:
        return self.state_dir / self.name

    @property
    def state(self) -> Path:
        """kindplan's --state-dir for the lab's nodes (locks and journals)."""
        return self.root / "state"

    @property
    def snapshot_path(self) -> Path:
        return self.root / "snapshot.yaml"

    def node(self, name: str) -> LabNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise UsageError(
            f"lab {self.name} has no node {name!r} ({', '.join(n.name for n in self.nodes)})"
        )

    def node_dir(self, node: LabNode, what: str) -> Path:
        """Per-node folders: conf (the conflist), cache (libcni results), ipam (host-local)."""
        return self.root / "nodes" / node.name / what

    def namespaces(self) -> list[str]:
        return [
            self.bridge_ns,
            self.outside_ns,
            *(n.ns for n in self.nodes),
            *(p.ns for p in self.pods),
        ]


def check_name(name: str) -> str:
    """A lab name prefixes namespaces and names a folder: keep it to a plain, short word."""
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,23}", name):
        raise UsageError(
            f"--name {name!r}: use 1 to 24 of a-z, 0-9 and '-', starting with a letter"
        )
    return name


class Dataplane(NamedTuple):
    """How the nodes' L2 is cut (`segments` joined by the bridge namespace as a router), and
    the snapshot's cluster.crossSubnet, cluster.masqBackend and cluster.routeStyle (None: not
    written)."""

    segments: int = 1
    cross_subnet: str = "none"
    masq_backend: str | None = None
    route_style: str | None = None


ONE_SEGMENT = Dataplane()


def design(
    name: str,
    state_dir: Path,
    nodes: int,
    pods_per_node: int,
    dual_stack: bool,
    *,
    segments: Dataplane = ONE_SEGMENT,
) -> Lab:
    """The lab's plan: node names and addresses as in the guide, one PodCIDR per node and family;
    with two segments, node i on segment i % 2 (its addresses in that segment's subnet)."""
    check_name(name)
    if not 1 <= nodes <= 200:
        raise UsageError("--nodes takes 1 to 200")
    if not 0 <= pods_per_node <= 50:
        raise UsageError("--pods-per-node takes 0 to 50")
    if segments.segments not in (1, 2):
        raise UsageError("--segments takes 1 or 2")
    lab_nodes = []
    for i in range(nodes):
        node_name = SEED_NODES[i] if i < len(SEED_NODES) else f"k8s-guide-worker{i}"
        segment = i % segments.segments
        ips = [f"172.18.{segment}.{10 + i}"]
        cidrs = [f"10.244.{i}.0/24"]
        if dual_stack:
            ips.append(f"{segment_v6(segment)}{10 + i:x}")
            cidrs.append(f"fd00:10:244:{i:x}::/64" if i else "fd00:10:244::/64")  # canonical
        lab_nodes.append(LabNode(node_name, i, f"{name}-n{i}", tuple(ips), tuple(cidrs), segment))
    pods = [
        LabPod(
            n.name,
            f"web-{n.index}-{k}",
            f"{name}-n{n.index}-p{k}",
            f"{name}-n{n.index}-p{k}",
            k == 0,
        )
        for n in lab_nodes
        for k in range(pods_per_node)
    ]
    return Lab(
        name,
        state_dir,
        tuple(lab_nodes),
        tuple(pods),
        dual_stack,
        segments.segments,
        segments.cross_subnet,
    )


def design_cluster(
    name: str,
    state_dir: Path,
    nodes: tuple[str, ...],
    pods: list[tuple[str, str, str]],
    dual_stack: bool,
    *,
    segments: Dataplane = ONE_SEGMENT,
) -> Lab:
    """A policy lab's plan: the List's nodes with the addresses `design` gives node i, and its
    pods (namespace, name, node), pod k of node i in namespace `<lab>-n<i>-p<k>`."""
    if len(nodes) > 200:
        raise UsageError("a lab takes 1 to 200 nodes")
    plain = design(name, state_dir, len(nodes), 0, dual_stack, segments=segments)
    lab_nodes = tuple(replace(n, name=nodes[n.index]) for n in plain.nodes)
    index = {n.name: n.index for n in lab_nodes}
    count = dict.fromkeys(nodes, 0)
    lab_pods = []
    for namespace, pod, node in pods:
        i, k = index[node], count[node]
        count[node] += 1
        ns = f"{name}-n{i}-p{k}"
        lab_pods.append(LabPod(node, pod, ns, ns, False, namespace))
    return replace(plain, nodes=lab_nodes, pods=tuple(lab_pods))


def segment_v6(segment: int) -> str:
    """The IPv6 prefix of a segment: the guide's for the first, the next /64 for the second."""
    return V6_PREFIX if not segment else "fc00:f853:ccd:e794::"


def segment_gateways(lab: Lab, segment: int) -> tuple[str, str, int]:
    """(IPv4 gateway, IPv6 gateway, IPv4 prefix length) of a segment: one segment keeps the
    guide's 172.18.0.0/16; of two, each is a /24."""
    if lab.segments == 1:
        return V4_GATEWAY, V6_GATEWAY, 16
    return f"172.18.{segment}.1", f"{segment_v6(segment)}1", 24


def snapshot_text(lab: Lab, dataplane: Dataplane = ONE_SEGMENT) -> str:
    """The lab cluster as a kindplan ClusterSnapshot (pods come from each node's CNI cache),
    with the `dataplane`'s choices in its cluster (every apply on the lab follows them)."""
    families = (4, 6) if lab.dual_stack else (4,)
    cluster: dict[str, object] = {"podSubnets": [POD_SUBNETS[v] for v in families]}
    if dataplane.masq_backend is not None:
        cluster["masqBackend"] = dataplane.masq_backend
    if lab.cross_subnet != "none":
        cluster["crossSubnet"] = lab.cross_subnet
    if dataplane.route_style is not None:
        cluster["routeStyle"] = dataplane.route_style
    doc = {
        "apiVersion": "kindplan/v1",
        "kind": "ClusterSnapshot",
        "cluster": cluster,
        "nodes": [
            {"name": n.name, "internalIPs": list(n.ips), "podCIDRs": list(n.pod_cidrs)}
            for n in lab.nodes
        ],
    }
    return json.dumps(doc, indent=2) + "\n"


# -- state on disk: what `check` and `down` need to find the lab again -------------------------


def save(lab: Lab) -> None:
    lab.root.mkdir(parents=True, exist_ok=True)
    data = {**asdict(lab), "state_dir": str(lab.state_dir)}
    (lab.root / "lab.json").write_text(json.dumps(data, indent=1) + "\n")


def load(name: str, state_dir: Path) -> Lab:
    path = state_dir / check_name(name) / "lab.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"no lab named {name!r} is up (no {path}); run kindplan lab up") from None
    return Lab(
        name=data["name"],
        state_dir=Path(data["state_dir"]),
        nodes=tuple(
            LabNode(**{**n, "ips": tuple(n["ips"]), "pod_cidrs": tuple(n["pod_cidrs"])})
            for n in data["nodes"]
        ),
        pods=tuple(LabPod(**p) for p in data["pods"]),
        dual_stack=data["dual_stack"],
        segments=data.get("segments", 1),  # a lab.json from before --segments
        cross_subnet=data.get("cross_subnet", "none"),
    )


# -- building and removing ---------------------------------------------------------------------


def ip(*args: str) -> str:
    """Run ip(8); a failure is a RuntimeFailure that names the command."""
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeFailure(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def existing_namespaces() -> list[str]:
    return [line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()]


def add_namespace(ns: str) -> None:
    ip("netns", "add", ns)
    ip("-n", ns, "link", "set", "lo", "up")


def sysctl(ns: str, name: str, value: str) -> None:
    from kindplan.node.netns import enter_netns

    with enter_netns(ns):  # /proc/sys/net shows the namespace of the thread that opens it
        Path("/proc/sys", name.replace(".", "/")).write_text(value)


def wait_for_dad(lab: Lab, timeout: float = 15.0) -> None:
    """Wait until no IPv6 address in the lab is tentative: the gateway address that ptp puts on a
    host veth answers neighbour solicitations only once duplicate address detection is done."""
    import time

    deadline = time.monotonic() + timeout
    for ns in [n.ns for n in lab.nodes] + [p.ns for p in lab.pods]:
        while ip("-n", ns, "-6", "addr", "show", "tentative").strip():
            if time.monotonic() > deadline:
                raise RuntimeFailure(f"IPv6 addresses in {ns} still tentative after {timeout:g} s")
            time.sleep(0.05)


def build_network(lab: Lab) -> None:
    """The bridge (one per segment), the outside host, and every node with its uplink eth0 on
    its segment's bridge."""
    br, out = lab.bridge_ns, lab.outside_ns
    for ns in (br, out):
        add_namespace(ns)
    for segment in range(lab.segments):
        v4_gw, v6_gw, length = segment_gateways(lab, segment)
        ip("-n", br, "link", "add", f"br{segment}", "type", "bridge")
        ip("-n", br, "addr", "add", f"{v4_gw}/{length}", "dev", f"br{segment}")
        if lab.dual_stack:
            ip("-n", br, "addr", "add", f"{v6_gw}/64", "dev", f"br{segment}", "nodad")
        ip("-n", br, "link", "set", f"br{segment}", "up")
    ip("-n", br, "link", "add", "out0", "type", "veth", "peer", "name", "eth0", "netns", out)
    ip("-n", br, "addr", "add", f"{OUTSIDE_V4_GW}/24", "dev", "out0")
    ip("-n", out, "addr", "add", f"{OUTSIDE_V4}/24", "dev", "eth0")
    if lab.dual_stack:
        ip("-n", br, "addr", "add", f"{OUTSIDE_V6_GW}/64", "dev", "out0", "nodad")
        ip("-n", out, "addr", "add", f"{OUTSIDE_V6}/64", "dev", "eth0", "nodad")
    for ns, dev in ((br, "out0"), (out, "eth0")):
        ip("-n", ns, "link", "set", dev, "up")
    ip("-n", out, "route", "add", "default", "via", OUTSIDE_V4_GW)
    sysctl(br, "net.ipv4.ip_forward", "1")
    if lab.dual_stack:
        ip("-n", out, "-6", "route", "add", "default", "via", OUTSIDE_V6_GW)
        sysctl(br, "net.ipv6.conf.all.forwarding", "1")
    for node in lab.nodes:
        _build_node(lab, node)


def _build_node(lab: Lab, node: LabNode) -> None:
    br = lab.bridge_ns
    v4_gw, v6_gw, length = segment_gateways(lab, node.segment)
    add_namespace(node.ns)
    port = f"n{node.index}"
    ip("-n", br, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", node.ns)
    ip("-n", br, "link", "set", port, "master", f"br{node.segment}", "up")
    ip("-n", node.ns, "addr", "add", f"{node.ips[0]}/{length}", "dev", "eth0")
    if lab.dual_stack:
        ip("-n", node.ns, "addr", "add", f"{node.ips[1]}/64", "dev", "eth0", "nodad")
    ip("-n", node.ns, "link", "set", "eth0", "up")
    ip("-n", node.ns, "route", "add", "default", "via", v4_gw)
    if lab.dual_stack:
        ip("-n", node.ns, "-6", "route", "add", "default", "via", v6_gw)


def remove(name: str, state_dir: Path) -> list[str]:
    """Remove every namespace of lab `name` and its state folder; returns what was removed."""
    import shutil

    check_name(name)  # the folder removed below is <state_dir>/<name>, never more
    removed = []
    for ns in existing_namespaces():
        if ns.startswith(f"{name}-") and _lab_namespace(ns, name):
            deleted = subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
            if deleted.returncode == 0:  # say only what was removed
                removed.append(ns)
    shutil.rmtree(state_dir / name, ignore_errors=True)
    return removed


def _lab_namespace(ns: str, name: str) -> bool:
    """Only names the lab makes: <name>-bridge, <name>-outside, <name>-n<i>, <name>-n<i>-p<k>."""
    rest = ns.removeprefix(f"{name}-")
    if rest in ("bridge", "outside"):
        return True
    parts = rest.split("-")
    return (
        parts[0][:1] == "n"
        and parts[0][1:].isdigit()
        and (
            len(parts) == 1 or (len(parts) == 2 and parts[1][:1] == "p" and parts[1][1:].isdigit())
        )
    )
