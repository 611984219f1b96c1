"""Local pods from the node's CNI result cache (libcni's format), which names each pod's host veth.

libcni writes one JSON file per attachment, `<network>-<containerID>-<ifname>`, holding the result
the plugins returned: its interfaces (the host veth is the one without a sandbox) and IPs, the
CNI_ARGS kubelet passed (K8S_POD_NAMESPACE, K8S_POD_NAME), and the capability arguments (the
portMappings of the pod's hostPorts). Entries of other networks are ignored.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from kindplan.core.addresses import addr_order, parse_ip
from kindplan.core.model import HostPort, Pod, Snapshot
from kindplan.node.files import read_regular

DEFAULT_CACHE_DIR = Path("/var/lib/cni/results")


def parse_cache_entry(data: bytes, node: str, network: str) -> Pod | None:
    """The pod of one cache file, or None if it belongs to another network; ValueError if broken."""
    entry = json.loads(data)
    if not isinstance(entry, dict) or entry.get("networkName") != network:
        return None
    result = entry.get("result") or {}
    interfaces = result.get("interfaces") or []
    host = [i for i, iface in enumerate(interfaces) if not iface.get("sandbox")]
    if not host:
        raise ValueError("no host-side interface in the result")
    args = dict(_pairs(entry.get("cniArgs")))
    container = str(entry.get("containerId", "?"))
    ips = []
    for ip in result.get("ips") or []:
        address = str(ip.get("address", ""))
        ips.append(parse_ip(address.partition("/")[0]) if "/" in address else parse_ip(address))
    return Pod(
        namespace=args.get("K8S_POD_NAMESPACE", "container"),
        name=args.get("K8S_POD_NAME", container[:12]),
        node=node,
        ips=tuple(sorted(ips, key=addr_order)),
        host_interface=str(interfaces[host[0]]["name"]),
        host_ports=_host_ports(entry.get("capabilityArgs")),
    )


def _host_ports(caps: Any) -> tuple[HostPort, ...]:
    """The portMappings capability that kubelet passed to portmap: the pod's hostPorts."""
    mappings = caps.get("portMappings") if isinstance(caps, dict) else None
    ports = []
    for m in mappings if isinstance(mappings, list) else ():
        host_ip = str(m.get("hostIP") or "")
        ports.append(
            HostPort(
                int(m["hostPort"]),
                int(m["containerPort"]),
                str(m.get("protocol") or "tcp").lower(),
                parse_ip(host_ip) if host_ip else None,
            )
        )
    return tuple(ports)


def _pairs(value: Any) -> list[tuple[str, str]]:
    if not isinstance(value, list):
        return []
    return [(str(p[0]), str(p[1])) for p in value if isinstance(p, list) and len(p) == 2]


def read_cni_cache(directory: Path, node: str, network: str) -> tuple[list[Pod], list[str]]:
    """Every pod of `network` in the cache; unreadable entries become warnings, not failures."""
    pods, warnings = [], []
    if not directory.is_dir():
        return [], []
    for path in sorted(directory.iterdir()):
        if not path.name.startswith(f"{network}-"):
            continue
        try:
            # O_NONBLOCK, a regular file only, no symlink: a FIFO here must not stop the apply
            pod = parse_cache_entry(read_regular(path, follow=False), node, network)
        except OSError as e:
            warnings.append(f"{path}: unreadable CNI cache entry ({e.strerror or e}); skipped")
            continue
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            warnings.append(f"{path}: unreadable CNI cache entry ({e}); skipped")
            continue
        if pod is not None:
            pods.append(pod)
    return pods, warnings


def with_local_pods(snapshot: Snapshot, node: str, pods: list[Pod]) -> tuple[Snapshot, list[str]]:
    """The snapshot with the node's pods from the cache (they win over the snapshot's own)."""
    own = snapshot.node(node)
    warnings = []
    keep = []
    for pod in pods:
        cidrs = own.pod_cidrs if own else ()
        outside = [ip for ip in pod.ips if not any(ip in c for c in cidrs)]
        if outside or not pod.ips:
            warnings.append(
                f"CNI cache: pod {pod.namespace}/{pod.name} has IP(s) outside node {node}'s "
                f"PodCIDR ({', '.join(map(str, outside)) or 'none'}); skipped"
            )
            continue
        keep.append(pod)
    # The cache describes the node's pods as they are: a snapshot pod of this node with the same
    # name or the same veth is an older view of one of them. What only the API knows of a pod
    # (labels, container ports) stays with it: the cache gives its veth, its IPs, its hostPorts.
    by_key = {p.key: p for p in snapshot.pods}
    keep = [_with_api_fields(p, by_key.get(p.key)) for p in keep]
    keys = {p.key for p in keep}
    veths = {p.host_interface for p in keep}
    taken = {ip: p for p in keep for ip in p.ips}
    merged = []
    for p in snapshot.pods:
        if p.key in keys or (p.node == node and p.host_interface in veths):
            continue
        stale = next((taken[ip] for ip in p.ips if ip in taken), None)
        if stale is not None and p.node == node and not p.host_network:
            # The API's view lags: the IP was released and handed to another pod since.
            warnings.append(
                f"CNI cache: {', '.join(map(str, p.ips))} of pod {p.namespace}/{p.name} is pod "
                f"{stale.namespace}/{stale.name}'s now; {p.namespace}/{p.name} left out"
            )
            continue
        merged.append(p)
    merged += keep
    return replace(snapshot, pods=tuple(sorted(merged, key=lambda p: p.key))), warnings


def _with_api_fields(cached: Pod, known: Pod | None) -> Pod:
    """A cached pod with the labels and container ports the snapshot (the API) gives it. Not
    hostNetwork: a pod with a veth in the cache has a network of its own, whatever a stale API
    view says (a hostNetwork pod is never selected: taking it would open the pod)."""
    if known is None or (not known.labels and not known.ports):
        return cached
    return replace(cached, labels=known.labels, ports=known.ports)


def without_uplink(
    snapshot: Snapshot, cached: tuple[Pod, ...], uplink: str
) -> tuple[Snapshot, list[str]]:
    """The snapshot less the cache's pods whose veth is the uplink or lo: the cache is libcni's,
    written by whatever runtime, and one bad entry must not stop the node's routing."""
    bad = {p.key for p in cached if p.host_interface in (uplink, "lo")}
    if not bad:
        return snapshot, []
    warnings = [
        f"CNI cache: pod {p.namespace}/{p.name} names {p.host_interface}, the node's "
        + ("uplink" if p.host_interface == uplink else "loopback")
        + ", as its host veth; skipped"
        for p in cached
        if p.key in bad
    ]
    kept = tuple(p for p in snapshot.pods if p.key not in bad)
    return replace(snapshot, pods=kept), warnings
