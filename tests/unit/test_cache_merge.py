"""The node's pods from libcni's cache merged with the API's (kindplan/node/cnicache.py): the
cache gives a pod's veth and IPs, the API its labels and container ports."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import ip_address

from kindplan.core.addresses import parse_cidr
from kindplan.core.model import Cluster, Node, Pod, Snapshot
from kindplan.core.policy.model import ContainerPort
from kindplan.node.cnicache import with_local_pods

NODES = (
    Node("w1", (ip_address("172.18.0.2"),), (parse_cidr("10.244.1.0/24"),)),
    Node("w2", (ip_address("172.18.0.3"),), (parse_cidr("10.244.2.0/24"),)),
)
LABELS = (("pod", "a"),)
PORTS = (ContainerPort(80, "TCP", "serve-80-tcp"),)


def api_pod(name: str, node: str, ip: str) -> Pod:
    return Pod("x", name, node, (ip_address(ip),), "", labels=LABELS, ports=PORTS)


def cached(name: str, ip: str, veth: str) -> Pod:
    return Pod("x", name, "w1", (ip_address(ip),), veth)


def snapshot(*pods: Pod) -> Snapshot:
    return Snapshot(Cluster((parse_cidr("10.244.0.0/16"),)), NODES, pods)


def test_a_cached_pod_keeps_the_labels_and_ports_the_api_gives_it() -> None:
    merged, warnings = with_local_pods(
        snapshot(api_pod("a", "w1", "10.244.1.5"), api_pod("b", "w2", "10.244.2.5")),
        "w1",
        [cached("a", "10.244.1.5", "veth1")],
    )
    assert warnings == []
    a = next(p for p in merged.pods if p.name == "a")
    assert (a.host_interface, a.labels, a.ports) == ("veth1", LABELS, PORTS)
    assert next(p for p in merged.pods if p.name == "b") == api_pod("b", "w2", "10.244.2.5")


def test_a_cached_pod_the_api_does_not_know_is_an_endpoint_without_labels() -> None:
    merged, _ = with_local_pods(snapshot(), "w1", [cached("c", "10.244.1.7", "veth3")])
    assert merged.pods == (cached("c", "10.244.1.7", "veth3"),)


def test_the_api_pod_that_still_claims_a_reused_ip_is_left_out() -> None:
    stale = replace(api_pod("old", "w1", "10.244.1.5"), labels=())
    merged, warnings = with_local_pods(
        snapshot(stale, api_pod("a", "w1", "10.244.1.9")),
        "w1",
        [cached("new", "10.244.1.5", "veth2")],
    )
    assert [p.name for p in merged.pods] == ["a", "new"]
    assert warnings == ["CNI cache: 10.244.1.5 of pod x/old is pod x/new's now; x/old left out"]


def test_an_api_pod_of_the_node_without_a_cache_entry_stays_a_peer() -> None:
    a = api_pod("a", "w1", "10.244.1.9")
    merged, warnings = with_local_pods(snapshot(a), "w1", [])
    assert (merged.pods, warnings) == ((a,), [])
