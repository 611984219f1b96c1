"""The meaning checks of a ClusterSnapshot's namespaces and pods (snapshot.py runs them).

Pods are every pod of the cluster, in two kinds:
- a local endpoint has a hostInterface (its host veth on its node): it gets host routes and
  addresses there, so its IPs must lie in its node's PodCIDR, off the reserved addresses, and
  its veth must be its own;
- any other pod is known from the API, for NetworkPolicy only (its labels select it, its IPs make
  it a peer): its IPs are checked as addresses, never against a PodCIDR (another CNI's, or a
  hostNetwork pod's, which are its node's). Two pods claiming one IP mean that one is stale: a
  problem, or, tolerant (a live cluster), a warning with the later pod left out. hostNetwork pods
  share their node's IPs, so they are not counted.
Labels and port names are checked as the API checks them (labels.py).

Pure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from kindplan.core.addresses import IPAddress, addr_order
from kindplan.core.labels import label_key_problem, label_value_problem, port_name_problem
from kindplan.core.model import HostPort, Node, Pod

if TYPE_CHECKING:  # imported where used: a snapshot without them does not pay for it
    from kindplan.core.policy.model import ContainerPort, Labels, Namespace


class Checks(Protocol):
    """What these checks need of snapshot.py's checker."""

    tolerant: bool
    doubtful_nodes: set[str]

    def problem(self, path: str, what: str) -> None: ...

    def warning(self, path: str, what: str) -> None: ...

    def ip(self, path: str, text: str) -> IPAddress | None: ...


def check_namespaces(checks: Checks, raw: list[dict[str, Any]]) -> tuple[Namespace, ...]:
    """The snapshot's namespaces with their labels, sorted by name."""
    from kindplan.core.policy.model import Namespace

    seen: dict[str, int] = {}
    namespaces = []
    for i, entry in enumerate(raw):
        at, name = f"namespaces[{i}]", entry["name"]
        if name in seen:
            also = f"namespaces[{seen[name]}]"
            checks.problem(f"{at}.name", f"duplicate namespace {name!r} (also {also})")
            continue
        seen[name] = i
        labels = check_labels(checks, f"{at}.labels", entry.get("labels"))
        namespaces.append(Namespace(name, labels))
    return tuple(sorted(namespaces, key=lambda n: n.name))


def check_labels(checks: Checks, at: str, raw: dict[str, Any] | None) -> Labels:
    """Labels as sorted (key, value) pairs, each checked as the API does."""
    if not raw:
        return ()
    labels = []
    for key, value in raw.items():
        problem = label_key_problem(key) or label_value_problem(value)
        if problem is not None:
            checks.problem(f"{at}.{key}", problem)
            continue
        labels.append((key, value))
    return tuple(sorted(labels))


def check_ports(checks: Checks, at: str, raw: list[dict[str, Any]]) -> tuple[ContainerPort, ...]:
    """A pod's container ports, sorted; a name is an IANA service name, used once in the pod."""
    if not raw:
        return ()
    from kindplan.core.policy.model import ContainerPort

    names: dict[str, int] = {}
    ports = set()
    for j, entry in enumerate(raw):
        name = entry.get("name", "")
        if name:
            problem = port_name_problem(name)
            if problem is None and name in names:
                problem = f"port name {name!r} is also ports[{names[name]}]'s"
            if problem is not None:
                checks.problem(f"{at}[{j}].name", problem)
                continue
            names[name] = j
        ports.add(ContainerPort(int(entry["containerPort"]), entry.get("protocol", "TCP"), name))
    return tuple(sorted(ports, key=lambda p: (p.port, p.protocol, p.name)))


class PodChecks:
    """Every pod of the snapshot, checked in order: what one pod says may clash with an earlier
    one (a key, a veth, an IP)."""

    def __init__(self, checks: Checks, nodes: dict[str, Node]) -> None:
        self.checks = checks
        self.nodes = nodes
        self.seen_pods: dict[tuple[str, str], int] = {}
        self.seen_ips: dict[IPAddress, str] = {}
        self.seen_veths: dict[tuple[str, str], str] = {}

    def check(self, raw_pods: list[dict[str, Any]]) -> list[Pod]:
        pods = []
        for i, raw in enumerate(raw_pods):
            pod = self._pod(f"pods[{i}]", i, raw)
            if pod is not None:
                pods.append(pod)
        return pods

    def _pod(self, at: str, i: int, raw: dict[str, Any]) -> Pod | None:
        key = (raw["namespace"], raw["name"])
        label = f"{key[0]}/{key[1]}"
        if key in self.seen_pods:
            self.checks.problem(at, f"duplicate pod {label} (also pods[{self.seen_pods[key]}])")
            return None
        self.seen_pods[key] = i
        veth = raw.get("hostInterface", "")
        ips = self._endpoint(at, label, raw) if veth else self._known(at, label, raw)
        if ips is None:
            return None
        return Pod(
            key[0],
            key[1],
            raw["node"],
            tuple(sorted(ips, key=addr_order)),
            veth,
            _host_ports(self.checks, at, raw.get("hostPorts", ())),
            check_labels(self.checks, f"{at}.labels", raw.get("labels")),
            check_ports(self.checks, f"{at}.ports", raw.get("ports", ())),
            bool(raw.get("hostNetwork", False)),
        )

    def _endpoint(self, at: str, label: str, raw: dict[str, Any]) -> list[IPAddress] | None:
        """A local endpoint's IPs (None: it is left out), checked against its node and veth."""
        checks, name, veth = self.checks, raw["node"], raw["hostInterface"]
        if name in checks.doubtful_nodes:
            return None  # its checks would only repeat the node's problem
        node = self.nodes.get(name)
        if node is None:
            checks.problem(f"{at}.node", f"no node named {name!r}")
            return None
        if raw.get("hostNetwork"):  # its IPs are its node's: nothing more to check
            checks.problem(f"{at}.hostInterface", "a hostNetwork pod has no veth of its own")
            return None
        if veth == "lo":
            checks.problem(f"{at}.hostInterface", "lo is the loopback device, not a pod's veth")
        if (name, veth) in self.seen_veths:
            checks.problem(
                f"{at}.hostInterface",
                f"{veth} is also the veth of pod {self.seen_veths[(name, veth)]}",
            )
        self.seen_veths[(name, veth)] = label
        return self._endpoint_ips(at, label, raw["ips"], node)

    def _endpoint_ips(self, at: str, label: str, texts: list[str], node: Node) -> list[IPAddress]:
        checks, seen = self.checks, self.seen_ips
        ips: list[IPAddress] = []
        for j, text in enumerate(texts):
            path = f"{at}.ips[{j}]"
            ip = checks.ip(path, text)
            if ip is None:
                continue
            cidr = node.pod_cidr(ip.version)
            if any(other.version == ip.version for other in ips):
                checks.problem(path, f"pod {label} has more than one IPv{ip.version} IP")
            elif cidr is None or ip not in cidr:
                checks.problem(
                    path,
                    f"{ip} is outside the PodCIDR of node {node.name} "
                    f"({cidr or f'none of IPv{ip.version}'})",
                )
            elif ip in _reserved(cidr):
                checks.problem(path, f"{ip} is reserved in {cidr} (network, gateway or broadcast)")
            elif ip in seen:
                checks.problem(path, f"{ip} is also the IP of pod {seen[ip]}")
            else:
                seen[ip] = label
                ips.append(ip)
        return ips

    def _known(self, at: str, label: str, raw: dict[str, Any]) -> list[IPAddress] | None:
        """A pod known from the API (no veth): its IPs as addresses; None: it is left out."""
        checks, name = self.checks, raw["node"]
        if name not in self.nodes and name not in checks.doubtful_nodes:
            what = f"no node named {name!r}"
            if not checks.tolerant:
                checks.problem(f"{at}.node", what)
                return None
            checks.warning(f"{at}.node", f"{what}; the pod is kept as a peer")
        ips: list[IPAddress] = []
        for j, text in enumerate(raw["ips"]):
            ip = checks.ip(f"{at}.ips[{j}]", text)
            if ip is None:
                continue
            if any(other.version == ip.version for other in ips):
                what = f"pod {label} has more than one IPv{ip.version} IP"
                checks.problem(f"{at}.ips[{j}]", what)
                continue
            ips.append(ip)
        if raw.get("hostNetwork"):
            return ips  # its node's IPs, shared with every hostNetwork pod there
        return self._claim(at, label, ips)

    def _claim(self, at: str, label: str, ips: list[IPAddress]) -> list[IPAddress] | None:
        """Take `ips` for pod `label` unless an earlier pod has one of them."""
        for j, ip in enumerate(ips):
            other = self.seen_ips.get(ip)
            if other is None:
                continue
            what = f"{ip} is also the IP of pod {other}"
            if not self.checks.tolerant:
                self.checks.problem(f"{at}.ips[{j}]", what)
            else:
                self.checks.warning(at, f"{what}; pod {label} left out (one of them is stale)")
            return None
        for ip in ips:
            self.seen_ips[ip] = label
        return ips


def _reserved(cidr: Any) -> tuple[IPAddress, ...]:
    """Addresses host-local never hands out: the network, its gateway and (IPv4) broadcast."""
    network = cidr.network_address
    if cidr.version == 4:
        return (network, network + 1, cidr.broadcast_address)
    return (network, network + 1)


def _host_ports(checks: Checks, at: str, raw: Any) -> tuple[HostPort, ...]:
    """The schema has checked their shape; a hostIP is checked like every other address."""
    ports = []
    for j, p in enumerate(raw):
        host_ip = checks.ip(f"{at}.hostPorts[{j}].hostIP", p["hostIP"]) if "hostIP" in p else None
        protocol = str(p.get("protocol", "tcp")).lower()
        ports.append(HostPort(int(p["hostPort"]), int(p["containerPort"]), protocol, host_ip))
    return tuple(ports)
