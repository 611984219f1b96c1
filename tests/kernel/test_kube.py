"""The Kubernetes API source against a fake API server, all inside a throw-away network namespace.

No real API server can run here: tests/kubeapi.py serves hand-assembled responses in
kube-apiserver's wire format (tests/data/kube, see the README there) and records the requests.
The server and the source are started while this thread is inside the namespace, so their threads
(which inherit it) use only the namespace's own loopback: no traffic reaches the host's network.
Waits are selects on the source's descriptor with deadlines, never fixed sleeps.
"""

from __future__ import annotations

import copy
import json
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubeapi import DATA, PATHS, TOKEN, FakeKubeAPI, events, load, write_kubeconfig

from kindplan.core.snapshot import Loaded
from kindplan.errors import InvalidInputError, SourceError
from kindplan.inputs.files import load_snapshot
from kindplan.inputs.kubewatch import KubeSource
from kindplan.node.netns import NETNS_RUN_DIR, enter_netns

pytestmark = pytest.mark.root

NODE = "kind-worker"
SUBNETS = ("10.244.0.0/16",)
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
LISTS = (
    "nodelist.json",
    "namespacelist.json",
    "podlist-kind-worker.json",
    "networkpolicylist.json",
)


@dataclass
class Cluster:
    api: FakeKubeAPI
    source: KubeSource
    logs: list[str] = field(default_factory=list)


@pytest.fixture
def start(
    netns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Cluster]]:
    """Start a fake API server and a KubeSource on it, inside `netns`; stop both at teardown."""
    for name in PROXY_VARIABLES:  # the client would send loopback traffic to a proxy
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    servers: list[FakeKubeAPI] = []
    sources: list[KubeSource] = []

    def start(
        nodes: Any = None,
        *,
        server: str | None = None,
        watch_timeout: int = 300,
        policies: Any = None,
        forbidden: tuple[str, ...] = (),
    ) -> Cluster:
        with enter_netns(netns):
            api = FakeKubeAPI(nodes=nodes, policies=policies)
            api.forbidden.update(forbidden)
            api.start()
            servers.append(api)
            kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", server or api.url)
            logs: list[str] = []
            source = KubeSource(
                NODE, SUBNETS, str(kubeconfig), log=logs.append, watch_timeout=watch_timeout
            )
            sources.append(source)
        namespace = os.stat(f"{NETNS_RUN_DIR}/{netns}").st_ino
        threads = ours()
        assert len(threads) >= 5  # the server, a watch of each of the four kinds
        for thread in threads:  # safety: every thread that talks HTTP is inside the namespace
            assert os.stat(f"/proc/self/task/{thread.native_id}/ns/net").st_ino == namespace
        return Cluster(api, source, logs)

    yield start
    for source in sources:
        source.close()
    for api in servers:
        api.stop()
    alive = [t.name for t in ours()]
    assert not alive, f"threads left running: {alive}"


def ours() -> list[threading.Thread]:
    """The source's and the fake server's threads."""
    return [t for t in threading.enumerate() if t.name.startswith(("kube ", "fake-kube"))]


def read_when(source: KubeSource, ready: Callable[[Loaded], bool], timeout: float = 3.0) -> Loaded:
    """The first snapshot that is `ready`, waiting on the source's descriptor between reads."""
    deadline = time.monotonic() + timeout
    fd = source.fileno()
    assert fd is not None
    last: object = None
    while True:
        try:
            loaded = source.read()
            if ready(loaded):
                return loaded
            last = loaded
        except SourceError as e:
            last = e
        left = deadline - time.monotonic()
        assert left > 0, f"not ready after {timeout}s; last read: {last}"
        select.select([fd], [], [], left)
        source.poll()


def names(loaded: Loaded) -> list[str]:
    return [n.name for n in loaded.snapshot.nodes]


def cidrs(loaded: Loaded, name: str) -> list[str]:
    return next([str(c) for c in n.pod_cidrs] for n in loaded.snapshot.nodes if n.name == name)


def woken_within(source: KubeSource, seconds: float) -> bool:
    fd = source.fileno()
    assert fd is not None
    readable, _, _ = select.select([fd], [], [], seconds)
    return bool(readable) and source.poll()


def node_event(kind: str, name: str) -> dict[str, Any]:
    return next(
        e
        for e in events("watch-nodes.jsonl")
        if e["type"] == kind and e["object"]["metadata"].get("name") == name
    )


def watching(api: FakeKubeAPI) -> None:
    """Wait until the four watches are open (the lists are done, their wake-ups sent)."""
    api.wait_for(
        "a watch of each kind", lambda seen: {r.path for r in seen if r.watch} == set(PATHS)
    )


def api_lists(tmp_path: Path) -> Path:
    """The fake server's four lists as files of one folder, which kindplan reads together."""
    folder = tmp_path / "lists"
    folder.mkdir()
    for name in LISTS:
        (folder / name).write_text((DATA / name).read_text())
    return folder


def test_first_read_lists_the_four_kinds(start: Callable[..., Cluster], tmp_path: Path) -> None:
    cluster = start()
    assert cluster.source.wait_listed(3.0)
    loaded = cluster.source.read()
    assert names(loaded) == ["kind-control-plane", "kind-worker", "kind-worker2"]
    # The same as the four lists in files, read together as a folder
    assert loaded == load_snapshot(str(api_lists(tmp_path)), pod_subnets=SUBNETS)
    assert [(p.name, p.host_network) for p in loaded.snapshot.pods] == [
        ("web-6f8d7b9c5-hx2lq", False),
        ("kindnet-7xk2p", True),
        ("kube-proxy-q8m4v", True),
    ]
    assert [n.name for n in loaded.snapshot.namespaces][:2] == ["default", "kube-node-lease"]
    assert cluster.source.read() is loaded  # nothing changed: the same object, not a new check
    watching(cluster.api)
    requests = cluster.api.requests
    assert {r.authorization for r in requests} == {f"Bearer {TOKEN}"}
    pods = [r for r in requests if r.path == "/api/v1/pods"]
    assert len(pods) == 2 and all("fieldSelector" not in r.query for r in pods)  # every pod
    node_watch = next(r for r in requests if r.path == "/api/v1/nodes" and r.watch)
    assert node_watch.query["resourceVersion"] == "1432"  # from the list: no event is missed
    assert cluster.api.lists("nodes")[0].query["resourceVersion"] == "0"  # the server's cache
    assert cluster.logs == []


def test_watch_events_wake_the_loop_and_change_the_snapshot(
    start: Callable[..., Cluster],
) -> None:
    cluster = start()
    source, api = cluster.source, cluster.api
    first = read_when(source, lambda _: True)
    watching(api)
    source.poll()

    api.send("nodes", node_event("ADDED", "kind-worker3"))
    assert woken_within(source, 1.0)
    joined = source.read()
    assert names(joined) == sorted([*names(first), "kind-worker3"])  # a node while it joins
    assert cidrs(joined, "kind-worker3") == []
    assert [str(w) for w in joined.warnings] == [
        "items[3] (node kind-worker3): no PodCIDR yet; no route to its pods until it has one"
    ]

    api.send("nodes", node_event("MODIFIED", "kind-worker3"))
    assert woken_within(source, 1.0)
    assigned = source.read()
    assert cidrs(assigned, "kind-worker3") == ["10.244.3.0/24"]

    api.send("nodes", node_event("MODIFIED", "kind-worker"))  # a heartbeat: nothing to redo
    api.send("nodes", node_event("DELETED", "kind-worker3"))
    assert woken_within(source, 1.0)
    assert names(source.read()) == names(first)

    for event in events("watch-pods.jsonl"):  # a pod on this node is a reason to look at once
        api.send("pods", event)
        assert woken_within(source, 1.0)
    assert source.read() == first
    assert cluster.logs == []


def test_expired_watch_lists_again(start: Callable[..., Cluster]) -> None:
    cluster = start()
    source, api = cluster.source, cluster.api
    read_when(source, lambda _: True)
    watching(api)
    # Events the client never saw: kind-worker2 left, kind-worker3 came with its PodCIDR.
    changed = load("nodelist.json")
    obj = node_event("MODIFIED", "kind-worker3")["object"]
    joined = {k: v for k, v in obj.items() if k not in {"kind", "apiVersion"}}  # as list items
    changed["items"] = [*changed["items"][:2], joined]
    changed["metadata"]["resourceVersion"] = "1688"
    api.set_list("nodes", changed)
    api.send("nodes", events("watch-error-410.jsonl")[0])

    relisted = read_when(source, lambda loaded: "kind-worker3" in names(loaded))
    assert names(relisted) == ["kind-control-plane", "kind-worker", "kind-worker3"]
    second_list = api.lists("nodes")[1]
    assert "resourceVersion" not in second_list.query  # after a 410: a consistent read
    api.wait_for(
        "a watch from the new list",
        lambda seen: any(r.watch and r.query.get("resourceVersion") == "1688" for r in seen),
    )
    assert cluster.logs == ["nodes: resourceVersion expired (410 Gone); listing again"]


def test_watch_that_times_out_resumes_without_a_list(start: Callable[..., Cluster]) -> None:
    cluster = start(watch_timeout=1)  # the server ends each watch after a second
    source, api = cluster.source, cluster.api
    read_when(source, lambda _: True)
    watching(api)
    api.send("nodes", node_event("ADDED", "kind-worker3"))  # resourceVersion 1470
    read_when(source, lambda loaded: len(loaded.warnings) == 1)
    api.wait_for(
        "a watch resumed after the timeout",
        lambda seen: any(r.watch and r.query["resourceVersion"] == "1470" for r in seen),
    )
    assert [r.query["timeoutSeconds"] for r in api.requests if r.watch][:2] == ["1", "1"]
    assert len(api.lists("nodes")) == 1
    assert cluster.logs == []


def test_reload_lists_again(start: Callable[..., Cluster]) -> None:
    cluster = start()
    source, api = cluster.source, cluster.api
    first = read_when(source, lambda _: True)
    watching(api)
    source.poll()
    source.reload()
    api.wait_for("a second node list", lambda _: len(api.lists("nodes")) == 2)
    assert woken_within(source, 1.0)
    again = source.read()
    assert again == first
    assert again is not first  # checked afresh
    assert cluster.logs == []


def test_unreachable_server_is_a_one_line_source_error(
    start: Callable[..., Cluster], netns: str, capfd: pytest.CaptureFixture[str]
) -> None:
    with enter_netns(netns), socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    cluster = start(server=f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 3
    message = ""
    while "connecting" in message or not message:
        assert time.monotonic() < deadline, "no connection error reported"
        with pytest.raises(SourceError) as info:
            cluster.source.read()
        message = str(info.value)
        time.sleep(0.02)  # errors do not wake the loop: poll, within the deadline
    assert message == (
        f"kubernetes API: no node list yet: 127.0.0.1:{port}: cannot connect: Connection refused"
    )
    assert f"nodes: 127.0.0.1:{port}: cannot connect: Connection refused; retrying in 0.5s" in (
        cluster.logs
    )
    assert all("\n" not in line for line in cluster.logs)
    cluster.source.close()
    assert capfd.readouterr().err == ""  # the threads printed no traceback


def test_invalid_node_list_is_reported_as_for_a_file(
    start: Callable[..., Cluster], tmp_path: Path
) -> None:
    doc = load("nodelist.json")
    clash = copy.deepcopy(doc)
    clash["items"][2]["spec"]["podCIDR"] = "10.244.2.0/24"  # kind-worker2 takes kind-worker's
    clash["items"][2]["spec"]["podCIDRs"] = ["10.244.2.0/24"]
    file = tmp_path / "nodes.json"
    file.write_text(json.dumps(clash))
    with pytest.raises(InvalidInputError) as from_file:
        load_snapshot(str(file), pod_subnets=SUBNETS)

    cluster = start(nodes=clash)
    deadline = time.monotonic() + 3
    while True:
        try:
            cluster.source.read()
        except InvalidInputError as e:
            from_api = e
            break
        except SourceError:
            assert time.monotonic() < deadline, "the node list never came"
            woken_within(cluster.source, 0.5)
    assert str(from_api) == str(from_file.value)
    assert str(from_api) == (
        "items[2].spec.podCIDRs[0]: 10.244.2.0/24 overlaps 10.244.2.0/24 of node kind-worker"
    )


def pod_event(kind: str, name: str, node: str, ip: str, version: str, **labels: str) -> Any:
    """A watch event of a running pod in default (labels app=web unless given)."""
    return {
        "type": kind,
        "object": {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {
                "name": name,
                "namespace": "default",
                "resourceVersion": version,
                "labels": labels or {"app": "web"},
            },
            "spec": {"nodeName": node, "containers": [{"name": "web", "ports": []}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
        },
    }


def policy_event(kind: str, name: str, version: str) -> dict[str, Any]:
    obj = copy.deepcopy(load("networkpolicylist.json")["items"][0])
    obj["metadata"] |= {"name": name, "resourceVersion": version}
    return {"type": kind, "object": {"kind": "NetworkPolicy", **obj}}


def pod_names(loaded: Loaded) -> list[str]:
    return [p.name for p in loaded.snapshot.pods]


def test_an_event_of_each_kind_changes_the_snapshot(start: Callable[..., Cluster]) -> None:
    cluster = start()
    source, api = cluster.source, cluster.api
    first = read_when(source, lambda _: True)
    watching(api)
    source.poll()

    # A namespace's labels (the cluster has a NetworkPolicy: they may select)
    ns = copy.deepcopy(load("namespacelist.json")["items"][0])
    ns["metadata"]["labels"]["team"] = "web"
    ns["metadata"]["resourceVersion"] = "1500"
    api.send("namespaces", {"type": "MODIFIED", "object": {"kind": "Namespace", **ns}})
    assert woken_within(source, 1.0)
    labelled = source.read()
    assert labelled.snapshot.namespaces[0].labels == (
        ("kubernetes.io/metadata.name", "default"),
        ("team", "web"),
    )
    # A pod on another node (a peer), one the node list does not have yet
    api.send("pods", pod_event("ADDED", "web-2", "kind-worker3", "10.244.3.7", "1501"))
    assert woken_within(source, 1.0)
    peer = source.read()
    assert "web-2" in pod_names(peer)
    assert [str(w) for w in peer.warnings] == [
        "items[9].spec.nodeName: no node named 'kind-worker3'; the pod is kept as a peer"
    ]
    # A NetworkPolicy: the store takes it, the snapshot is made again
    api.send("networkpolicies", policy_event("ADDED", "second", "1502"))
    assert woken_within(source, 1.0)
    assert source.read() is not peer
    # A node
    api.send("nodes", node_event("ADDED", "kind-worker3"))
    assert woken_within(source, 1.0)
    joined = source.read()
    assert names(joined) == sorted([*names(first), "kind-worker3"])
    assert not any("kept as a peer" in str(w) for w in joined.warnings)
    assert cluster.logs == []


def test_without_policies_another_nodes_pod_changes_nothing(
    start: Callable[..., Cluster],
) -> None:
    empty = {"kind": "NetworkPolicyList", "apiVersion": "networking.k8s.io/v1", "items": []}
    cluster = start(policies=empty | {"metadata": {"resourceVersion": "1432"}})
    source, api = cluster.source, cluster.api
    first = read_when(source, lambda _: True)
    watching(api)
    source.poll()
    api.send("pods", pod_event("ADDED", "web-2", "kind-worker2", "10.244.1.7", "1501"))
    # No wake-up and no new snapshot: nothing on this node depends on that pod
    assert not woken_within(source, 0.3)
    assert source.read() is first
    # A pod on this node still wakes the loop (its CNI cache entry)
    api.send("pods", pod_event("ADDED", "web-3", NODE, "10.244.2.9", "1502"))
    assert woken_within(source, 1.0)
    assert "web-3" in pod_names(source.read())
    # The first policy: the snapshot has every pod as it is now
    api.send("networkpolicies", policy_event("ADDED", "first", "1503"))
    assert woken_within(source, 1.0)
    assert {"web-2", "web-3"} <= set(pod_names(source.read()))


def test_expired_pod_watch_lists_the_pods_again(start: Callable[..., Cluster]) -> None:
    cluster = start()
    source, api = cluster.source, cluster.api
    read_when(source, lambda _: True)
    watching(api)
    missed = load("podlist-kind-worker.json")  # a pod came while the client did not look
    missed["items"].append(
        pod_event("ADDED", "web-9", "kind-worker2", "10.244.1.9", "1700")["object"]
    )
    missed["metadata"]["resourceVersion"] = "1700"
    api.set_list("pods", missed)
    api.send("pods", events("watch-error-410.jsonl")[0])
    relisted = read_when(source, lambda loaded: "web-9" in pod_names(loaded))
    assert "web-6f8d7b9c5-hx2lq" in pod_names(relisted)
    assert "resourceVersion" not in api.lists("pods")[1].query  # a consistent read
    assert cluster.logs == ["pods: resourceVersion expired (410 Gone); listing again"]


def test_a_kind_it_may_not_list_is_said_and_nothing_is_read(
    start: Callable[..., Cluster],
) -> None:
    cluster = start(forbidden=("networkpolicies",))  # an older ClusterRole
    deadline = time.monotonic() + 3
    while True:
        with pytest.raises(SourceError) as info:
            cluster.source.read()
        if "connecting" not in str(info.value) and "node list" not in str(info.value):
            break
        assert time.monotonic() < deadline, f"no 403 reported: {info.value}"
        woken_within(cluster.source, 0.2)
    assert str(info.value) == (
        "kubernetes API: no networkpolicies list yet: HTTP 403: networkpolicies is forbidden: "
        'User "system:serviceaccount:kube-system:kindplan" cannot list resource '
        '"networkpolicies" at the cluster scope'
    )
