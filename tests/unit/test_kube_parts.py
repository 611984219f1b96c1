"""The Kubernetes API source's pure parts, without a network: nodes to snapshot, subnet inference.

The node objects are the hand-assembled responses in tests/data/kube (kube-apiserver's wire
format; no API server can run here, see the README there). The threads, the watches and the HTTP
side are tested in tests/kernel/test_kube.py against a fake API server inside a namespace.
"""

from __future__ import annotations

import doctest
import json
import os
import re
import sys
from collections.abc import Sequence
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import pytest
from kubeapi import DATA, events, load

from kindplan.core.snapshot import Loaded
from kindplan.errors import InvalidInputError, UsageError
from kindplan.inputs import kubenodes
from kindplan.inputs.kinds import parse_snapshot
from kindplan.inputs.kubeclient import MISSING_CLIENT, describe_error
from kindplan.inputs.kubenodes import covering_network, infer_pod_subnets, node_name, trim_node
from kindplan.inputs.kubestore import load_cluster, trimmed
from kindplan.inputs.kubewatch import KubeSource

SUBNETS = ["10.244.0.0/16"]


def load_nodes(nodes: list[Any], pod_subnets: Sequence[str] = ()) -> Loaded:
    """Nodes as the API's source holds them (trimmed, by name), made a snapshot."""
    held = {("", node_name(n) or ""): trimmed("nodes", n) for n in nodes}
    return load_cluster({"nodes": held}, pod_subnets)


def items() -> list[Any]:
    return list(load("nodelist.json")["items"])


def node_event(kind: str, name: str) -> dict[str, Any]:
    return next(
        e["object"]
        for e in events("watch-nodes.jsonl")
        if e["type"] == kind and e["object"]["metadata"].get("name") == name
    )


def test_recorded_node_list_gives_kind_workers_peers() -> None:
    snapshot = load_nodes(items(), SUBNETS).snapshot
    peers = {
        n.name: ([str(ip) for ip in n.internal_ips], [str(c) for c in n.pod_cidrs])
        for n in snapshot.nodes
        if n.name != "kind-worker"
    }
    assert peers == {
        "kind-control-plane": (["172.18.0.3"], ["10.244.0.0/24"]),
        "kind-worker2": (["172.18.0.4"], ["10.244.1.0/24"]),
    }
    assert [str(s) for s in snapshot.cluster.pod_subnets] == SUBNETS


def test_api_nodes_read_exactly_as_the_node_list_file() -> None:
    from_file = parse_snapshot((DATA / "nodelist.json").read_bytes(), pod_subnets=SUBNETS)
    assert load_nodes(items(), SUBNETS) == from_file
    assert load_nodes([trim_node(i) for i in items()], SUBNETS) == from_file


def test_problems_name_the_same_places_as_for_a_file() -> None:
    doc = load("nodelist.json")
    doc["items"][2]["spec"]["podCIDRs"] = ["10.244.2.0/24"]  # kind-worker2 takes kind-worker's
    with pytest.raises(InvalidInputError) as from_file:
        parse_snapshot(json.dumps(doc).encode(), pod_subnets=SUBNETS)
    with pytest.raises(InvalidInputError) as from_api:
        load_nodes([trim_node(i) for i in doc["items"]], SUBNETS)
    assert from_api.value.problems == from_file.value.problems
    assert str(from_api.value) == (
        "items[2].spec.podCIDRs[0]: 10.244.2.0/24 overlaps 10.244.2.0/24 of node kind-worker"
    )


def test_trimmed_node_ignores_heartbeats_but_not_pod_cidrs() -> None:
    listed = {i["metadata"]["name"]: trim_node(i) for i in items()}
    heartbeat = node_event("MODIFIED", "kind-worker")
    assert heartbeat["metadata"]["resourceVersion"] != "1411"  # a real change on the wire...
    assert trim_node(heartbeat) == listed["kind-worker"]  # ...that does not matter here
    joined, assigned = node_event("ADDED", "kind-worker3"), node_event("MODIFIED", "kind-worker3")
    assert trim_node(joined) != trim_node(assigned)
    assert trim_node(assigned) == {
        "metadata": {"name": "kind-worker3"},
        "spec": {"podCIDR": "10.244.3.0/24", "podCIDRs": ["10.244.3.0/24"]},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": "172.18.0.5"},
                {"type": "Hostname", "address": "kind-worker3"},
            ]
        },
    }


def test_a_joining_node_is_kept_without_a_podcidr_with_the_file_warning() -> None:
    loaded = load_nodes([*items(), node_event("ADDED", "kind-worker3")], SUBNETS)
    joining = loaded.snapshot.node("kind-worker3")
    assert joining is not None and joining.pod_cidrs == ()
    assert [str(ip) for ip in joining.internal_ips] == ["172.18.0.5"]
    assert [str(w) for w in loaded.warnings] == [
        "items[3] (node kind-worker3): no PodCIDR yet; no route to its pods until it has one"
    ]


def spec_node(*cidrs: str, old_field: bool = False) -> dict[str, Any]:
    spec = {"podCIDR": cidrs[0]} if old_field else {"podCIDR": cidrs[0], "podCIDRs": list(cidrs)}
    return {"metadata": {"name": "n"}, "spec": spec}


@pytest.mark.parametrize(
    ("nodes", "expected"),
    [
        pytest.param(items(), ("10.244.0.0/22",), id="ipv4-kind"),
        pytest.param([spec_node("10.244.7.0/24")], ("10.244.7.0/24",), id="single-node"),
        pytest.param(
            [spec_node("10.244.0.0/24", old_field=True), spec_node("10.244.1.0/24")],
            ("10.244.0.0/23",),
            id="old-podCIDR-field",
        ),
        pytest.param(
            [spec_node("fd00:10:244::/64"), spec_node("fd00:10:244:3::/64")],
            ("fd00:10:244::/62",),
            id="ipv6",
        ),
        pytest.param(
            [
                spec_node("10.244.0.0/24", "fd00:10:244::/64"),
                spec_node("10.244.1.0/24", "fd00:10:244:1::/64"),
                spec_node("10.244.130.0/24", "fd00:10:244:2::/64"),
            ],
            ("10.244.0.0/16", "fd00:10:244::/62"),
            id="dual-stack",
        ),
        pytest.param(
            [spec_node("fd00::/64"), spec_node("10.1.0.0/24")],
            ("10.1.0.0/24", "fd00::/64"),
            id="ipv4-first",
        ),
        pytest.param(
            [spec_node("10.244.1.0/24"), spec_node("10.244.300.0/24"), {"spec": "x"}, "x"],
            ("10.244.1.0/24",),
            id="unreadable-left-out",
        ),
        pytest.param([{"metadata": {"name": "joining"}, "spec": {}}], (), id="no-pod-cidr"),
    ],
)
def test_infer_pod_subnets(nodes: list[Any], expected: tuple[str, ...]) -> None:
    assert infer_pod_subnets(nodes) == expected


def test_covering_network_of_far_apart_networks() -> None:
    assert str(covering_network([ip_network("0.0.0.0/24"), ip_network("255.0.0.0/8")])) == (
        "0.0.0.0/0"
    )
    assert str(covering_network([ip_network("2001:db8::/128")])) == "2001:db8::/128"
    assert doctest.testmod(kubenodes).failed == 0


def test_inferred_subnets_are_used_and_warned_about() -> None:
    loaded = load_nodes(items())
    assert [str(s) for s in loaded.snapshot.cluster.pod_subnets] == ["10.244.0.0/22"]
    assert str(loaded.warnings[0]).startswith(
        "--pod-subnet: not given; inferred 10.244.0.0/22 (the smallest cover of the nodes' "
        "PodCIDRs), which changes as nodes join"
    )
    given = load_nodes(items(), SUBNETS)
    assert given.warnings == ()


def test_no_pod_cidr_at_all_asks_for_pod_subnet() -> None:
    with pytest.raises(InvalidInputError, match="--pod-subnet: a node list carries no cluster"):
        load_nodes([node_event("ADDED", "kind-worker3")])


def test_describe_error_is_one_line() -> None:
    from kubernetes.client.exceptions import ApiException
    from urllib3.connection import HTTPConnection
    from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

    forbidden = ApiException(status=403, reason="Forbidden")
    forbidden.body = json.dumps(
        {
            "kind": "Status",
            "message": 'nodes is forbidden: User "system:serviceaccount:kube-system:kindplan"\n'
            'cannot list resource "nodes" in API group "" at the cluster scope',
            "code": 403,
        }
    )
    assert describe_error(forbidden) == (
        'HTTP 403: nodes is forbidden: User "system:serviceaccount:kube-system:kindplan" '
        'cannot list resource "nodes" in API group "" at the cluster scope'
    )
    assert describe_error(ApiException(status=410, reason="Expired: too old")) == (
        "HTTP 410: Expired: too old"
    )
    conn = HTTPConnection("10.96.0.1", 443)
    refused = NewConnectionError(conn, "Failed to establish a new connection: [Errno 111] Refused")
    assert describe_error(MaxRetryError(None, "/api/v1/nodes", refused)) == (
        "10.96.0.1:443: cannot connect: Refused"
    )
    broken = ProtocolError("Connection broken: IncompleteRead(0 bytes read)", OSError("x"))
    assert describe_error(broken) == "Connection broken: IncompleteRead(0 bytes read)"


def test_missing_client_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "kubernetes", None)
    with pytest.raises(UsageError) as info:
        KubeSource("kind-worker")
    assert str(info.value) == MISSING_CLIENT


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: [b\n", r"^kubeconfig .*: while parsing a flow sequence in .* line 1, column 4 .*$"),
        ("", r"^kubeconfig .*: Invalid kube-config\. .* file is empty$"),
        ("apiVersion: v1\nkind: Config\n", r"^kubeconfig .*: .*current-context.*$"),
        ("- 1\n- 2\n", r"^kubeconfig .*: list indices must be integers or slices, not str$"),
    ],
)
def test_broken_kubeconfig_is_a_one_line_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, message: str
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")  # --kubeconfig comes first
    path = tmp_path / "config"
    path.write_text(text)
    with pytest.raises(UsageError, match=message) as info:
        KubeSource("kind-worker", kubeconfig=str(path))
    assert "\n" not in str(info.value)


def test_missing_kubeconfig_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere"
    with pytest.raises(UsageError, match=rf"^--kubeconfig {re.escape(str(path))}: no such file$"):
        KubeSource("kind-worker", kubeconfig=str(path))


@pytest.mark.skipif(
    os.path.exists("/var/run/secrets/kubernetes.io/serviceaccount/token"),
    reason="runs inside a pod: in-cluster config would work and connect",
)
def test_in_cluster_without_a_service_account(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    with pytest.raises(UsageError, match=r"^in-cluster config: Service token file does not exist"):
        KubeSource("kind-worker")


def test_pod_list_data_is_on_kind_worker() -> None:
    """The recorded pods are what the field selector spec.nodeName=kind-worker returns."""
    pods = load("podlist-kind-worker.json")
    assert {p["spec"]["nodeName"] for p in pods["items"]} == {"kind-worker"}
    assert pods["kind"] == "PodList"
