"""The inputs of NetworkPolicy: Namespaces, Pods and NetworkPolicies from kubectl Lists (mixed,
typed, single objects; JSON and YAML; files, folders, stdin) into the ClusterSnapshot document,
and that document's namespaces and pod fields checked as the API checks them."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kindplan.core.compiler import compile_desired
from kindplan.core.model import HostFacts, Pod
from kindplan.core.policy.model import ContainerPort, Namespace
from kindplan.core.snapshot import Loaded
from kindplan.errors import InvalidInputError
from kindplan.inputs.files import combine_directory
from kindplan.inputs.kinds import parse_snapshot

SUBNET = "10.244.0.0/16"


def k8s_node(name: str, ip: str, cidr: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name},
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
    }


def k8s_namespace(name: str, **labels: str) -> dict[str, Any]:
    labels = {"kubernetes.io/metadata.name": name, **labels}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def k8s_pod(
    namespace: str,
    name: str,
    node: str | None,
    ip: str | None,
    phase: str = "Running",
    **extra: Any,
) -> dict[str, Any]:
    """A pod as the API has it, serving TCP 80 and UDP 81 as the upstream e2e model does."""
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "c",
                "ports": [
                    {"name": "serve-80-tcp", "containerPort": 80, "protocol": "TCP"},
                    {"name": "serve-81-udp", "containerPort": 81, "protocol": "UDP"},
                ],
            }
        ]
    }
    if node is not None:
        spec["nodeName"] = node
    status: dict[str, Any] = {"phase": phase}
    if ip is not None:
        status |= {"podIP": ip, "podIPs": [{"ip": ip}]}
    metadata = {"namespace": namespace, "name": name, "labels": {"pod": name}}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec, "status": status}
    for key, value in extra.items():  # metadata.x=..., spec.x=...
        part, _, field = key.partition("__")
        pod[part][field] = value
    return pod


POLICY = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"namespace": "x", "name": "allow-y"},
    "spec": {
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}],
    },
}


def mixed_list() -> dict[str, Any]:
    """`kubectl get nodes,namespaces,pods,networkpolicies -A -o json` of a small cluster."""
    return {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            k8s_node("w1", "172.18.0.2", "10.244.1.0/24"),
            k8s_node("w2", "172.18.0.3", "10.244.2.0/24"),
            k8s_namespace("x", ns="x"),
            k8s_namespace("y", ns="y"),
            k8s_pod("x", "a", "w1", "10.244.1.5"),
            k8s_pod("y", "b", "w2", "10.244.2.6"),
            k8s_pod("kube-system", "proxy", "w1", "172.18.0.2", spec__hostNetwork=True),
            copy.deepcopy(POLICY),
        ],
    }


NATIVE = {
    "apiVersion": "kindplan/v1",
    "kind": "ClusterSnapshot",
    "cluster": {"podSubnets": [SUBNET]},
    "nodes": [
        {"name": "w1", "internalIPs": ["172.18.0.2"], "podCIDRs": ["10.244.1.0/24"]},
        {"name": "w2", "internalIPs": ["172.18.0.3"], "podCIDRs": ["10.244.2.0/24"]},
    ],
    "namespaces": [
        {"name": "x", "labels": {"kubernetes.io/metadata.name": "x", "ns": "x"}},
        {"name": "y", "labels": {"kubernetes.io/metadata.name": "y", "ns": "y"}},
    ],
    "pods": [
        {
            "namespace": ns,
            "name": name,
            "node": node,
            "ips": [ip],
            "labels": {"pod": name},
            "ports": [
                {"name": "serve-80-tcp", "containerPort": 80, "protocol": "TCP"},
                {"name": "serve-81-udp", "containerPort": 81, "protocol": "UDP"},
            ],
        }
        for ns, name, node, ip in (("x", "a", "w1", "10.244.1.5"), ("y", "b", "w2", "10.244.2.6"))
    ]
    + [
        {
            "namespace": "kube-system",
            "name": "proxy",
            "node": "w1",
            "ips": ["172.18.0.2"],
            "labels": {"pod": "proxy"},
            "ports": [
                {"name": "serve-80-tcp", "containerPort": 80},
                {"name": "serve-81-udp", "containerPort": 81, "protocol": "UDP"},
            ],
            "hostNetwork": True,
        }
    ],
    "networkPolicies": [POLICY],
}


def parse(doc: Any, *, strict: bool = False) -> Loaded:
    return parse_snapshot(json.dumps(doc).encode(), pod_subnets=(SUBNET,), strict=strict)


def native(doc: Any) -> Loaded:
    return parse_snapshot(json.dumps(doc).encode())


def problems(doc: Any, **kwargs: Any) -> list[str]:
    load = native if doc.get("kind") == "ClusterSnapshot" else parse
    with pytest.raises(InvalidInputError) as info:
        load(doc, **kwargs)
    return [str(p) for p in info.value.problems]


# -- the converters --------------------------------------------------------------------------


def test_a_mixed_list_gives_the_same_snapshot_as_the_native_document() -> None:
    listed, written = parse(mixed_list()), native(NATIVE)
    assert listed.snapshot == written.snapshot
    assert listed.warnings == ()
    a = next(p for p in listed.snapshot.pods if p.name == "a")
    assert a == Pod(
        "x",
        "a",
        "w1",
        a.ips,
        "",
        labels=(("pod", "a"),),
        ports=(ContainerPort(80, "TCP", "serve-80-tcp"), ContainerPort(81, "UDP", "serve-81-udp")),
    )
    assert listed.snapshot.namespaces == (
        Namespace("x", (("kubernetes.io/metadata.name", "x"), ("ns", "x"))),
        Namespace("y", (("kubernetes.io/metadata.name", "y"), ("ns", "y"))),
    )
    assert next(p for p in listed.snapshot.pods if p.name == "proxy").host_network


def test_yaml_gives_what_json_gives() -> None:
    as_yaml = yaml.safe_dump(mixed_list()).encode()
    assert parse_snapshot(as_yaml, pod_subnets=(SUBNET,)) == parse(mixed_list())


def test_the_policies_are_carried_as_they_are() -> None:
    from kindplan.inputs.converted import Converted
    from kindplan.inputs.kinds import KINDS

    doc = mixed_list()
    out: Converted = KINDS["List"].convert(doc, (SUBNET,), False)
    assert out.document["networkPolicies"] == [POLICY]
    # A NetworkPolicyList's items leave out their kind and apiVersion: they get them back
    typed = {"kind": "NetworkPolicyList", "items": [{k: POLICY[k] for k in ("metadata", "spec")}]}
    items = KINDS["NetworkPolicyList"].convert(typed, (SUBNET,), False)
    assert items.document["networkPolicies"] == [POLICY]


def test_a_policy_of_another_api_version_is_skipped_with_a_warning() -> None:
    doc = mixed_list()
    doc["items"][7]["apiVersion"] = "extensions/v1beta1"
    assert [str(w) for w in parse(doc).warnings] == [
        "items[7].apiVersion: NetworkPolicy of 'extensions/v1beta1', not networking.k8s.io/v1; "
        "skipped"
    ]


@pytest.mark.parametrize(
    ("pod", "kept"),
    [
        (k8s_pod("x", "p", None, None, "Pending"), False),  # not scheduled
        (k8s_pod("x", "p", "w1", None, "Pending"), False),  # no sandbox yet
        (k8s_pod("x", "p", "w1", "10.244.1.9", "Pending"), True),  # containers starting
        (k8s_pod("x", "p", "w1", "10.244.1.9", "Succeeded"), False),  # its IP may be reused
        (k8s_pod("x", "p", "w1", "10.244.1.9", "Failed"), False),
        (k8s_pod("x", "p", "w1", "10.244.1.9", "Unknown"), True),  # its node went silent
        (
            k8s_pod(
                "x", "p", "w1", "10.244.1.9", metadata__deletionTimestamp="2026-12-07T22:00:00Z"
            ),
            True,
        ),
    ],
    ids=["unscheduled", "no-ip", "starting", "succeeded", "failed", "unknown", "deleting"],
)
def test_which_pods_count(pod: dict[str, Any], kept: bool) -> None:
    doc = mixed_list()
    doc["items"].append(pod)
    loaded = parse(doc)
    assert ("p" in [p.name for p in loaded.snapshot.pods]) is kept
    assert loaded.warnings == ()


def test_a_deleting_pod_gives_way_to_the_live_pod_that_has_its_ip() -> None:
    doc = mixed_list()
    deleting = k8s_pod("x", "old", "w1", "10.244.1.5", metadata__deletionTimestamp="2026-12-07")
    doc["items"].insert(4, deleting)  # listed before x/a, which now has its IP
    loaded = parse(doc)
    assert "old" not in [p.name for p in loaded.snapshot.pods]
    assert "a" in [p.name for p in loaded.snapshot.pods]
    assert [str(w) for w in loaded.warnings] == [
        "items[4]: 10.244.1.5 is also the IP of pod x/a; pod x/old left out (one of them is stale)"
    ]


def test_the_older_pod_ip_field_and_the_protocol_default() -> None:
    doc = mixed_list()
    pod = doc["items"][4]
    del pod["status"]["podIPs"]
    del pod["spec"]["containers"][0]["ports"][0]["protocol"]
    a = next(p for p in parse(doc).snapshot.pods if p.name == "a")
    assert [str(ip) for ip in a.ips] == ["10.244.1.5"]
    assert a.ports[0] == ContainerPort(80, "TCP", "serve-80-tcp")


def test_a_pod_or_namespace_without_a_name_is_named() -> None:
    doc = mixed_list()
    del doc["items"][2]["metadata"]["name"]
    del doc["items"][4]["metadata"]["namespace"]
    assert problems(doc) == [
        "items[2].metadata.name: a namespace needs a name",
        "items[4].metadata: a pod needs a namespace and a name",
    ]


def test_typed_lists_and_single_objects_in_a_folder(tmp_path: Path) -> None:
    doc = mixed_list()
    by_kind: dict[str, list[Any]] = {}
    for item in doc["items"]:
        kind = item["kind"]
        # as the API lists them: the items without kind and apiVersion
        by_kind.setdefault(kind, []).append({k: v for k, v in item.items() if k != "kind"})
    for kind, items in by_kind.items():
        listed = {"apiVersion": "v1", "kind": f"{kind}List", "items": items}
        (tmp_path / f"{kind}.json").write_text(json.dumps(listed))
    (tmp_path / "Pod.json").unlink()  # the pods as single objects, one YAML file each
    for i, item in enumerate(i for i in doc["items"] if i["kind"] == "Pod"):
        (tmp_path / f"pod-{i}.yaml").write_text(yaml.safe_dump(item))
    combined = parse_snapshot(combine_directory(str(tmp_path)), pod_subnets=(SUBNET,))
    assert combined.snapshot == native(NATIVE).snapshot


def test_a_bad_pod_ip_names_its_place_in_the_list() -> None:
    doc = mixed_list()
    doc["items"].append(k8s_pod("x", "z", "w1", "10.244.1.300"))
    assert problems(doc) == ["items[8].status.podIPs[0].ip: '10.244.1.300' is not an IP address"]


# -- the checks ------------------------------------------------------------------------------


def test_labels_are_checked_as_the_api_does_naming_the_place() -> None:
    doc = copy.deepcopy(NATIVE)
    doc["namespaces"][0]["labels"]["-bad"] = "x"
    doc["pods"][0]["labels"]["app"] = "a" * 64
    doc["pods"][1]["labels"]["Example.com/x"] = "ok"
    doc["pods"][1]["labels"]["ok"] = 5
    assert problems(doc) == [
        "namespaces[0].labels.-bad: label key '-bad': its name must be 63 characters at most, "
        "alphanumeric at both ends, with '-', '_', '.' between",
        f"pods[0].labels.app: label value '{'a' * 64}': 63 characters at most, alphanumeric at "
        "both ends, with '-', '_', '.' between",
        "pods[1].labels.Example.com/x: label key 'Example.com/x': its prefix must be a DNS "
        "subdomain (lowercase, 253 at most)",
        "pods[1].labels.ok: label value 5 is not a string",
    ]


def test_a_bad_label_in_a_list_names_its_place_in_the_list() -> None:
    doc = mixed_list()
    doc["items"][4]["metadata"]["labels"]["a/b/c"] = "x"
    assert problems(doc) == ["items[4].metadata.labels.a/b/c: label key 'a/b/c': at most one '/'"]


def test_port_names_are_checked_and_used_once_per_pod() -> None:
    doc = copy.deepcopy(NATIVE)
    doc["pods"][0]["ports"][1]["name"] = "serve-80-tcp"
    doc["pods"][1]["ports"][0]["name"] = "8080"
    doc["pods"][1]["ports"][1]["name"] = "a--b"
    assert problems(doc) == [
        "pods[0].ports[1].name: port name 'serve-80-tcp' is also ports[0]'s",
        "pods[1].ports[0].name: port name '8080' needs at least one letter",
        "pods[1].ports[1].name: port name 'a--b' has '--'",
    ]


def test_a_duplicate_namespace_is_a_problem() -> None:
    doc = copy.deepcopy(NATIVE)
    doc["namespaces"].append({"name": "x"})
    assert problems(doc) == ["namespaces[2].name: duplicate namespace 'x' (also namespaces[0])"]


def test_pods_known_from_the_api_are_not_checked_against_podcidrs() -> None:
    doc = copy.deepcopy(NATIVE)
    doc["pods"][0]["ips"] = ["10.99.0.5"]  # another CNI's address: a peer all the same
    assert [str(p.ips[0]) for p in native(doc).snapshot.pods if p.name == "a"] == ["10.99.0.5"]
    doc["pods"][0]["hostInterface"] = "veth1"  # a local endpoint: it must be in the PodCIDR
    assert problems(doc) == [
        "pods[0].ips[0]: 10.99.0.5 is outside the PodCIDR of node w1 (10.244.1.0/24)"
    ]


def test_host_network_pods_share_their_nodes_ip_and_have_no_veth() -> None:
    doc = copy.deepcopy(NATIVE)
    doc["pods"].append({**doc["pods"][2], "name": "proxy-2"})  # the same node IP: fine
    assert len(native(doc).snapshot.pods) == 4
    doc["pods"][2]["hostInterface"] = "veth9"
    assert problems(doc) == ["pods[2].hostInterface: a hostNetwork pod has no veth of its own"]


def test_two_pods_with_one_ip_strict_and_tolerant() -> None:
    doc = copy.deepcopy(NATIVE)
    doc["pods"][1]["ips"] = ["10.244.1.5"]
    assert problems(doc) == ["pods[1].ips[0]: 10.244.1.5 is also the IP of pod x/a"]
    listed = mixed_list()
    listed["items"][5]["status"]["podIPs"] = [{"ip": "10.244.1.5"}]
    loaded = parse(listed)
    assert [p.name for p in loaded.snapshot.pods] == ["proxy", "a"]
    assert [str(w) for w in loaded.warnings] == [
        "items[5]: 10.244.1.5 is also the IP of pod x/a; pod y/b left out (one of them is stale)"
    ]
    with pytest.raises(InvalidInputError, match=r"^items\[5\]\.status\.podIPs\[0\]\.ip: "):
        parse(listed, strict=True)


def test_a_pod_on_an_unknown_node_strict_and_tolerant() -> None:
    doc = copy.deepcopy(NATIVE)
    doc["pods"][1]["node"] = "w9"
    assert problems(doc) == ["pods[1].node: no node named 'w9'"]
    listed = mixed_list()
    listed["items"][5]["spec"]["nodeName"] = "w9"
    assert [str(w) for w in parse(listed).warnings] == [
        "items[5].spec.nodeName: no node named 'w9'; the pod is kept as a peer"
    ]


def test_strict_leaves_out_the_pods_of_a_node_it_skips() -> None:
    """validate --strict skips a joining node (no PodCIDR yet): its DaemonSet pods go with it."""
    listed = mixed_list()
    del listed["items"][0]["spec"]  # w1 joins: no PodCIDR yet
    loaded = parse(listed, strict=True)
    assert [p.name for p in loaded.snapshot.pods] == ["b"]
    assert [str(w) for w in loaded.warnings] == [
        "items[0] (node w1): no PodCIDR yet; skipped",
        "items[4]: pod x/a: its node w1 is not in the snapshot; skipped",
        "items[6]: pod kube-system/proxy: its node w1 is not in the snapshot; skipped",
    ]
    assert [p.name for p in parse(listed).snapshot.pods] == ["proxy", "a", "b"]  # tolerant


def test_only_local_endpoints_get_plumbing() -> None:
    doc = copy.deepcopy(NATIVE)
    facts = HostFacts("eth0")
    known = compile_desired(native(doc).snapshot, "w1", facts)
    assert known.addresses == ()
    assert [str(r.dst) for r in known.routes] == ["10.244.2.0/24"]  # the peer only
    doc["pods"][0]["hostInterface"] = "veth1"
    local = compile_desired(native(doc).snapshot, "w1", facts)
    assert [(a.ifname, str(a.address)) for a in local.addresses] == [("veth1", "10.244.1.1")]
    assert [str(r.dst) for r in local.routes] == ["10.244.1.5/32", "10.244.2.0/24"]


# -- the command line ------------------------------------------------------------------------


def kindplan(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "kindplan.cli", *args], input=stdin, capture_output=True, check=False
    )


def test_render_of_a_list_is_the_render_of_the_native_snapshot(tmp_path: Path) -> None:
    (tmp_path / "list.yaml").write_text(yaml.safe_dump(mixed_list()))
    (tmp_path / "native.json").write_text(json.dumps(NATIVE))
    outputs = []
    for name, extra in (("list.yaml", ["--pod-subnet", SUBNET]), ("native.json", [])):
        out = tmp_path / f"out-{name}"
        out.mkdir()
        args = ["render", str(tmp_path / name), "--node", "w1", "--out", str(out), *extra]
        result = kindplan(*args)
        assert result.returncode == 0, result.stderr
        outputs.append({p.name: p.read_bytes() for p in sorted(out.iterdir())})
    assert outputs[0] == outputs[1]
    assert len(outputs[0]) >= 3


def test_validate_reads_a_list_on_stdin() -> None:
    result = kindplan(
        "validate", "-", "--pod-subnet", SUBNET, stdin=json.dumps(mixed_list()).encode()
    )
    assert (result.returncode, result.stderr) == (0, b"")
    assert result.stdout == b"ok: 2 nodes, 3 pods, IPv4\n"


def test_trace_names_a_pod_known_only_from_the_api(tmp_path: Path) -> None:
    (tmp_path / "list.json").write_text(json.dumps(mixed_list()))
    args = ["trace", str(tmp_path / "list.json"), "--pod-subnet", SUBNET, "--from", "w1"]
    result = kindplan(*args, "--to", "10.244.2.6")
    assert (result.returncode, result.stdout) == (64, b"")
    assert result.stderr == (
        b"error: --to: pod y/b has no host veth in the snapshot (hostInterface; on its node, "
        b"--cni-cache-dir gives it): trace walks between local endpoints\n"
    )
    assert kindplan(*args, "--to", "w2").returncode == 0
