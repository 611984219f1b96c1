"""Bring the lab up, check it end to end, and take it down.

kindplan is applied on each node through engine.apply_node, the same code as
`kindplan apply --netns`; pods are made by the real ptp and portmap plugins from the conflist that
kindplan wrote, and their host veths are read back from libcni's cache, as on a real node.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kindplan.core.model import HostPort, Options, Snapshot
from kindplan.core.planview import plural
from kindplan.errors import RuntimeFailure, UsageError
from kindplan.lab import topology
from kindplan.lab.topology import CONTAINER_PORT, HOST_PORT, OUTSIDE_V4, Lab, LabNode
from kindplan.node.apply import ApplyReport
from kindplan.node.engine import Planned, apply_node, plan_node
from kindplan.node.journal import Journal
from kindplan.node.netns import NETNS_RUN_DIR, enter_netns

if TYPE_CHECKING:
    from kindplan.lab.cluster import ClusterModel

Say = Callable[[str], None]


def lab_snapshot(lab: Lab) -> Snapshot:
    import json

    from kindplan.inputs.kinds import check_document

    doc = json.loads(lab.snapshot_path.read_text())
    return check_document(_known_to_schema(doc), source=str(lab.snapshot_path)).snapshot


def _known_to_schema(doc: dict[str, Any]) -> dict[str, Any]:
    """The document less the fields this kindplan's snapshot schema does not know yet.

    A policy lab writes namespaces, pods' labels and ports, and networkPolicies (the grown
    ClusterSnapshot). Until the schema has them (policy-inputs, policy-core), they are left out
    of what is applied, so that the lab's routes, pods and probes work all the same; once it
    has them, nothing is left out."""
    from kindplan.resources import load_schema

    schema = load_schema("snapshot.schema.json")
    top = schema["properties"]
    pod_fields = top["pods"]["items"]["properties"]
    kept = {k: v for k, v in doc.items() if k in top}
    if "pods" in kept:
        kept["pods"] = [{k: v for k, v in p.items() if k in pod_fields} for p in kept["pods"]]
    return kept


def node_options(lab: Lab, node: LabNode, *, adopt: bool = False) -> Options:
    return Options(
        node=node.name,
        conf_dir=str(lab.node_dir(node, "conf")),
        adopt=adopt,
        cni_cache_dir=str(lab.node_dir(node, "cache")),
    )


def plan_lab_node(lab: Lab, node: LabNode) -> Planned:
    snapshot = lab_snapshot(lab)
    return plan_node(snapshot, node_options(lab, node), node.ns)


def apply_lab_node(
    lab: Lab, node: LabNode, *, adopt: bool = False
) -> tuple[Planned, ApplyReport | None]:
    snapshot = lab_snapshot(lab)
    return apply_node(
        snapshot,
        node_options(lab, node, adopt=adopt),
        node.ns,
        lock_timeout=30,  # the same lock and journal as kindplan apply --netns NS
        journal=Journal(lab.state, node.ns),  # --state-dir <lab>/state
    )


def up(
    name: str,
    state_dir: Path,
    nodes: int,
    pods_per_node: int,
    dual_stack: bool,
    *,
    say: Say,
    kindnetd: bool = False,
    segments: topology.Dataplane = topology.ONE_SEGMENT,
) -> Lab:
    """Build the lab, apply kindplan on every node, create the pods; clean up if anything fails.

    With `kindnetd`, the nodes are left as classic kindnetd leaves them instead (lab/kindnetd.py),
    stale routes included, for `lab apply NODE --adopt` to take over. `route_style` goes into
    the lab's snapshot (cluster.routeStyle): every later lab command follows it.
    """
    _refuse_existing(name)
    lab = topology.design(name, state_dir, nodes, pods_per_node, dual_stack, segments=segments)
    return _build(lab, say, segments, kindnetd=kindnetd)


def up_cluster(
    name: str,
    state_dir: Path,
    cluster: ClusterModel,
    dual_stack: bool,
    *,
    say: Say,
    segments: topology.Dataplane = topology.ONE_SEGMENT,
) -> Lab:
    """`up` with a kubectl List's nodes and pods (a policy lab): its snapshot then lists every
    pod with its addresses, labels and ports, and the namespaces (lab/policy.py)."""
    _refuse_existing(name)
    pods = [(p.namespace, p.name, p.node) for p in cluster.pods]
    lab = topology.design_cluster(
        name, state_dir, cluster.nodes, pods, dual_stack, segments=segments
    )
    return _build(lab, say, segments, cluster=cluster)


def _refuse_existing(name: str) -> None:
    if any(ns.startswith(f"{name}-") for ns in topology.existing_namespaces()):
        raise UsageError(f"lab {name!r} already exists; run kindplan lab down --name {name} first")


def _build(
    lab: Lab,
    say: Say,
    segments: topology.Dataplane,
    *,
    kindnetd: bool = False,
    cluster: ClusterModel | None = None,
) -> Lab:
    try:
        topology.save(lab)
        lab.snapshot_path.write_text(topology.snapshot_text(lab, segments))
        topology.build_network(lab)
        count = plural(len(lab.nodes), "node")
        where = topology.V4_SUBNET if segments.segments == 1 else "172.18.0.0/24 and 172.18.1.0/24"
        say(f"lab {lab.name}: {count} on {where}, outside host {OUTSIDE_V4}")
        if kindnetd:
            for node in lab.nodes:
                _leave_as_kindnetd(lab, node, say)
        else:
            apply_everywhere(lab, say)
        for pod in lab.pods:
            create_pod(lab, pod)
        say(f"  {plural(len(lab.pods), 'pod')} created by ptp + portmap")
        if lab.dual_stack:
            say("  waiting for IPv6 duplicate address detection in the pods (about 10 s)")
            topology.wait_for_dad(lab)
        if cluster is not None:
            _with_cluster(lab, cluster, say)
    except BaseException:
        topology.remove(lab.name, lab.state_dir)
        raise
    return lab


def _with_cluster(lab: Lab, cluster: ClusterModel, say: Say) -> None:
    """Every pod with its addresses, labels and ports into the snapshot, applied everywhere."""
    from kindplan.lab.policy import cluster_document, write_document

    write_document(lab, cluster_document(lab, cluster))
    say(f"  {plural(len(cluster.namespaces), 'namespace')} with labels, every pod in the snapshot")
    apply_everywhere(lab, say)


def set_policies(lab: Lab, policies: list[dict[str, Any]], say: Say) -> None:
    """Replace the lab's NetworkPolicies and apply kindplan on every node."""
    from kindplan.lab.policy import read_document, write_document

    doc = read_document(lab)
    doc["networkPolicies"] = policies
    write_document(lab, doc)
    count = len(policies)
    say(f"lab {lab.name}: {count} NetworkPolic{'y' if count == 1 else 'ies'}")
    apply_everywhere(lab, say)


def set_labels(lab: Lab, target: str, changes: list[str], say: Say) -> None:
    """Change a pod's (`ns/name`) or a namespace's (`name`) labels as kubectl label does
    (`KEY=VALUE` sets, `KEY-` removes) and apply kindplan on every node."""
    from kindplan.lab.policy import read_document, relabel, write_document

    doc = read_document(lab)
    labels = relabel(doc, target, changes)
    write_document(lab, doc)
    shown = ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "no labels"
    say(f"lab {lab.name}: {target}: {shown}")
    apply_everywhere(lab, say)


def apply_everywhere(lab: Lab, say: Say) -> None:
    """kindplan apply on every node of the lab, as `lab up` does; a failed node stops it."""
    for node in lab.nodes:
        _, report = apply_lab_node(lab, node)
        if report is not None and not report.ok:
            raise RuntimeFailure(
                f"kindplan apply on {node.name} failed: {'; '.join(report.failures)}"
            )
        changes = plural(len(report.applied) if report else 0, "change")
        say(f"  {node.name}: kindplan applied ({changes})")


def _leave_as_kindnetd(lab: Lab, node: LabNode, say: Say) -> None:
    from kindplan.lab.kindnetd import as_kindnetd_left_it, leftovers

    snapshot = lab_snapshot(lab)
    as_kindnetd_left_it(lab, node, snapshot, lab.node_dir(node, "conf") / _conf_file(lab))
    stale = ", ".join(dst for dst, _ in leftovers(lab, node))
    say(f"  {node.name}: as kindnetd leaves it (its routes, proto boot; stale: {stale})")


def _conf_file(lab: Lab) -> str:
    return lab_snapshot(lab).cluster.cni.conf_file


def runtime(lab: Lab, node: LabNode):  # type: ignore[no-untyped-def]
    from kindplan.lab.cni import CniRuntime

    return CniRuntime(
        lab.node_dir(node, "conf") / _conf_file(lab),
        lab.node_dir(node, "cache"),
        ipam_data_dir=lab.node_dir(node, "ipam"),
    )


def create_pod(lab: Lab, pod: topology.LabPod) -> None:
    from kindplan.lab.cni import Attachment

    node = lab.node(pod.node)
    topology.add_namespace(pod.ns)
    mappings = ({"hostPort": HOST_PORT, "containerPort": CONTAINER_PORT, "protocol": "tcp"},)
    attachment = Attachment(
        container_id=pod.container_id,
        netns_path=f"{NETNS_RUN_DIR}/{pod.ns}",
        pod_namespace=pod.namespace,
        pod_name=pod.name,
        port_mappings=mappings if pod.host_port else (),
    )
    with enter_netns(node.ns):
        runtime(lab, node).add(attachment)


def down(name: str, state_dir: Path) -> list[str]:
    return topology.remove(name, state_dir)


def snapshot_with_pods(lab: Lab) -> dict[str, Any]:
    """The lab's snapshot with every node's pods and their hostPorts (from the nodes' CNI
    caches, as lab trace reads them): a file kindplan trace can walk (`kindplan lab snapshot`)."""
    import json

    from kindplan.core.addresses import format_ip
    from kindplan.node.cnicache import read_cni_cache

    doc: dict[str, Any] = json.loads(lab.snapshot_path.read_text())
    # What only the API knows of a pod (a policy lab's labels, ports): kept from the snapshot.
    known = {(p["namespace"], p["name"]): p for p in doc.get("pods", ())}
    pods: list[dict[str, object]] = []
    for node in lab.nodes:
        found, _ = read_cni_cache(lab.node_dir(node, "cache"), node.name, "kindnet")
        for p in found:
            pod: dict[str, object] = {
                "namespace": p.namespace,
                "name": p.name,
                "node": p.node,
                "ips": [format_ip(ip) for ip in p.ips],
                "hostInterface": p.host_interface,
                "hostPorts": [_host_port(h) for h in p.host_ports],
            }
            api = known.get((p.namespace, p.name), {})
            pod.update({k: api[k] for k in ("labels", "ports", "hostNetwork") if k in api})
            pods.append(pod)
    doc["pods"] = pods
    return doc


def _host_port(port: HostPort) -> dict[str, object]:
    from kindplan.core.addresses import format_ip

    doc: dict[str, object] = {
        "hostPort": port.host_port,
        "containerPort": port.container_port,
        "protocol": port.protocol,
    }
    if port.host_ip is not None:
        doc["hostIP"] = format_ip(port.host_ip)
    return doc
