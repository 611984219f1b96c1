"""deploy/: the DaemonSet manifest is valid Kubernetes and keeps what kindplan needs on a node.

Validation is offline, against the newest schemas that kubernetes-validate bundles, in strict
mode: a misspelled or unknown field fails, as with the API server's strict field validation. The
image is not built here (CI cannot run a container engine): its Containerfile is checked as text.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S_VERSION = kubernetes_validate.latest_version()
# (apiVersion, kind, name, namespace) of every document, in order.
DOCUMENTS = [
    ("v1", "ServiceAccount", "kindplan", "kube-system"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole", "kindplan", None),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "kindplan", None),
    ("apps/v1", "DaemonSet", "kindplan", "kube-system"),
]

Doc = dict[str, Any]


@pytest.fixture(scope="module")
def docs() -> dict[str, Doc]:
    loaded = list(yaml.safe_load_all((DEPLOY / "kindplan.yaml").read_text()))
    assert [
        (d["apiVersion"], d["kind"], d["metadata"]["name"], d["metadata"].get("namespace"))
        for d in loaded
    ] == DOCUMENTS
    return {d["kind"]: d for d in loaded}


@pytest.fixture(scope="module")
def pod(docs: dict[str, Doc]) -> Doc:
    return docs["DaemonSet"]["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def container(pod: Doc) -> Doc:
    (only,) = pod["containers"]
    assert only["name"] == "kindplan"
    return only


@pytest.mark.parametrize("kind", [kind for _, kind, _, _ in DOCUMENTS])
def test_document_is_valid_kubernetes(docs: dict[str, Doc], kind: str) -> None:
    kubernetes_validate.validate(docs[kind], K8S_VERSION, strict=True)


def _set(path: list[str | int], value: object) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        *parents, last = path
        for key in parents:
            doc = doc[key]
        doc[last] = value

    return mutate


POD = ["spec", "template", "spec"]
CONTAINER = [*POD, "containers", 0]


@pytest.mark.parametrize(
    "mutate",
    [
        _set([*POD, "hostNetwrok"], True),
        _set([*POD, "hostNetwork"], "yes"),
        _set([*CONTAINER, "securityContext", "privilegd"], False),
        _set([*CONTAINER, "args"], "apply --watch"),
        _set([*POD, "volumes", 0, "hostPath", "typ"], "Directory"),
    ],
    ids=["misspelled-field", "wrong-type", "misspelled-nested", "args-not-list", "unknown-field"],
)
def test_validator_rejects_a_broken_daemonset(
    docs: dict[str, Doc], mutate: Callable[[Doc], None]
) -> None:
    broken = copy.deepcopy(docs["DaemonSet"])
    mutate(broken)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_container_watches_the_api_for_its_own_node(container: Doc) -> None:
    args = container["args"]
    assert args[0] == "apply"
    assert {"--watch", "--kube", "--node=$(NODE_NAME)"} <= set(args)
    assert any(a.startswith("--pod-subnet=") for a in args)
    # $(NODE_NAME) expands only from an env var of the container: the downward API's node name.
    assert {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}} in (
        container["env"]
    )


def test_pod_runs_in_the_node_network_on_every_node(docs: dict[str, Doc], pod: Doc) -> None:
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["priorityClassName"] == "system-node-critical"
    assert {"operator": "Exists"} in pod["tolerations"]
    assert pod["serviceAccountName"] == docs["ServiceAccount"]["metadata"]["name"]


def test_container_has_network_capabilities_only(container: Doc) -> None:
    security = container["securityContext"]
    assert security["privileged"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert {"NET_ADMIN", "NET_RAW"} <= set(security["capabilities"]["add"])
    assert security["capabilities"]["drop"] == ["ALL"]


@pytest.mark.parametrize(
    ("path", "read_only"),
    [
        ("/etc/cni/net.d", False),  # the conflist is written here
        ("/run/xtables.lock", False),  # iptables takes the host's lock
        ("/var/lib/cni", True),  # libcni's result cache: the local pods' veths
        ("/var/lib/kindplan", False),  # rollback journal and converged record
        ("/run/kindplan", False),  # the apply lock, shared with a kindplan run on the host
    ],
)
def test_host_path_is_mounted_in_place(
    pod: Doc, container: Doc, path: str, read_only: bool
) -> None:
    (volume,) = [v for v in pod["volumes"] if v.get("hostPath", {}).get("path") == path]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["mountPath"] == path
    assert mount.get("readOnly", False) is read_only


def test_cluster_role_reads_the_four_kinds_only(docs: dict[str, Doc]) -> None:
    granted = {
        (group, resource, verb)
        for rule in docs["ClusterRole"]["rules"]
        for group, resource, verb in itertools.product(
            rule.get("apiGroups", []), rule.get("resources", []), rule["verbs"]
        )
    }
    verbs = ["get", "list", "watch"]
    assert granted == set(itertools.product([""], ["nodes", "namespaces", "pods"], verbs)) | set(
        itertools.product(["networking.k8s.io"], ["networkpolicies"], verbs)
    )
    assert all(
        set(rule) <= {"apiGroups", "resources", "verbs"} for rule in docs["ClusterRole"]["rules"]
    )
    binding = docs["ClusterRoleBinding"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "kindplan",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "kindplan", "namespace": "kube-system"}
    ]


@pytest.mark.parametrize("probe", ["livenessProbe", "readinessProbe"])
def test_probe_asks_healthz_on_the_metrics_port(container: Doc, probe: str) -> None:
    (metrics,) = [p for p in container["ports"] if p["name"] == "metrics"]
    get = container[probe]["httpGet"]
    assert get["path"] == "/healthz"
    assert get["port"] in (metrics["containerPort"], metrics["name"])
    assert f"--metrics-addr=0.0.0.0:{metrics['containerPort']}" in container["args"]


def test_containerfile_installs_the_kube_extra_and_runs_kindplan() -> None:
    lines = [
        line.strip()
        for line in (DEPLOY / "Containerfile").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert lines[0].startswith("FROM ")
    assert [line for line in lines if line.startswith("ENTRYPOINT")] == ['ENTRYPOINT ["kindplan"]']
    assert any(re.search(r"pip install .*'\.\[kube\]'", line) for line in lines)
    assert any("iproute2 iptables" in line for line in lines)
    assert not [line for line in lines if line.startswith("USER")]  # root: netlink, iptables
