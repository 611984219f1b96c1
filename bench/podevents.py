"""What a pod event costs the --kube source at 5,000 nodes x 30 pods (150,000 pods), in process:
the store taking the event (kindplan/inputs/kubestore.py) and, when the change matters to the
node, the new snapshot made of everything (kubestore.load_cluster).

    .venv/bin/python bench/podevents.py [--nodes 5000] [--pods 30] [--policies 1]

Prints one line per figure: the median of several runs.
"""

from __future__ import annotations

import argparse
import copy
import gc
import ipaddress
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

from kindplan.inputs.kubestore import NAMESPACES, NODES, PODS, POLICIES, Store, load_cluster


def node(i: int) -> dict[str, Any]:
    cidr = ipaddress.ip_network((int(ipaddress.ip_address("10.0.0.0")) + (i << 8), 24))
    return {
        "metadata": {"name": f"node-{i:04d}"},
        "spec": {"podCIDR": str(cidr), "podCIDRs": [str(cidr)]},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": str(ipaddress.ip_address("198.18.0.10") + i)}
            ],
            "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": "t0"}],
        },
    }


def pod(i: int, j: int, version: str = "1") -> dict[str, Any]:
    ip = ipaddress.ip_address("10.0.0.0") + (i << 8) + 2 + j
    return {
        "metadata": {
            "namespace": f"ns-{j % 10}",
            "name": f"web-{i:04d}-{j:02d}",
            "resourceVersion": version,
            "labels": {"app": f"web-{j % 10}", "pod-template-hash": "6f8d7b9c5"},
        },
        "spec": {
            "nodeName": f"node-{i:04d}",
            "containers": [
                {"name": "web", "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}]}
            ],
        },
        "status": {
            "phase": "Running",
            "podIP": str(ip),
            "podIPs": [{"ip": str(ip)}],
            "conditions": [{"type": "Ready", "status": "True", "lastProbeTime": None}],
        },
    }


def policy(k: int) -> dict[str, Any]:
    return {
        "metadata": {"namespace": f"ns-{k % 10}", "name": f"allow-{k}"},
        "spec": {"podSelector": {"matchLabels": {"app": f"web-{k % 10}"}}, "ingress": [{}]},
    }


def median_seconds(run: Callable[[], object], times: int) -> float:
    samples = []
    for _ in range(times):
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--pods", type=int, default=30)
    parser.add_argument("--policies", type=int, default=1)
    args = parser.parse_args()
    store = Store("node-0000")
    store.replace_all(NODES, [node(i) for i in range(args.nodes)])
    store.replace_all(NAMESPACES, [{"metadata": {"name": f"ns-{k}"}} for k in range(10)])
    store.replace_all(PODS, [pod(i, j) for i in range(args.nodes) for j in range(args.pods)])
    store.replace_all(POLICIES, [])
    gc.freeze()
    heartbeat = pod(17, 3, "2")
    heartbeat["status"]["conditions"][0]["lastProbeTime"] = "t1"  # a status update, nothing else
    relabelled = copy.deepcopy(heartbeat)
    relabelled["metadata"]["labels"]["app"] = "other"
    back = pod(17, 3, "3")
    flip = [relabelled, back]

    def label_change() -> None:
        store.apply(PODS, "MODIFIED", flip[0])
        flip.reverse()

    held_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.nodes} nodes x {args.pods} pods, {len(store.objects[PODS])} pods held")
    print(f"  the process's peak memory with them held (trimmed): {held_mb:.0f} MB")
    t = median_seconds(lambda: store.apply(PODS, "MODIFIED", heartbeat), 2001)
    print(f"  a pod's status heartbeat (no change that counts): {t * 1e6:.1f} us, no snapshot")
    before = store.version
    t = median_seconds(label_change, 2001)
    assert store.version == before  # another node's pod, no policy: nothing to rebuild
    print(f"  another node's pod relabelled, no NetworkPolicy: {t * 1e6:.1f} us, no snapshot")
    store.replace_all(POLICIES, [policy(k) for k in range(args.policies)])
    t = median_seconds(label_change, 2001)
    print(f"  the same with {args.policies} NetworkPolicy: {t * 1e6:.1f} us, then a snapshot:")
    subnets = ("10.0.0.0/8",)
    objects = {r: dict(held) for r, held in store.objects.items()}
    t = median_seconds(lambda: load_cluster(objects, subnets), 1)
    print(f"  the snapshot, every pod checked again (the whole List): {t:.2f} s")
    pods = store.pods
    t = median_seconds(lambda: load_cluster(objects, subnets, (pods, pods.take_dirty())), 1)
    print(f"  the first snapshot of the loop (every pod checked, kept): {t:.2f} s")

    def one_changed() -> None:
        label_change()
        objects = {r: dict(held) for r, held in store.objects.items()}
        load_cluster(objects, subnets, (pods, pods.take_dirty()))

    t = median_seconds(one_changed, 5)
    print(f"  a pod relabelled, then the snapshot (one pod checked again): {t:.2f} s")


if __name__ == "__main__":
    main()
