"""The upstream e2e suite's model as a Snapshot, for NetworkPolicy tests: namespaces x, y, z
labelled `ns: x`..., pods a, b, c in each labelled `pod: a`..., spread over three nodes, each
declaring TCP, UDP and SCTP on 80 and 81 (`serve-80-tcp`...); dual-stack on request."""

from __future__ import annotations

from ipaddress import ip_address, ip_network
from typing import Any

from kindplan.core.model import Cluster, Node, Pod, Snapshot
from kindplan.core.policy.evaluate import Endpoint
from kindplan.core.policy.parse import parse_policy
from kindplan.core.policyvalues import ContainerPort, Namespace

NODES = tuple(
    Node(
        f"kind-worker{i or ''}",
        (ip_address(f"172.18.0.{2 + i}"), ip_address(f"fc00:f853:ccd:e793::{2 + i}")),
        (ip_network(f"10.244.{i}.0/24"), ip_network(f"fd00:10:244:{i}::/64")),
    )
    for i in range(3)
)
PORTS = tuple(
    ContainerPort(port, protocol, f"serve-{port}-{protocol.lower()}")
    for port in (80, 81)
    for protocol in ("TCP", "UDP", "SCTP")
)


def model(policies: list[dict[str, Any]], *, dual: bool = False) -> Snapshot:
    pods = []
    for n, namespace in enumerate("xyz"):
        for p, name in enumerate("abc"):
            node = NODES[p]
            host = 10 + n * 3 + p
            ips = (node.pod_cidrs[0].network_address + host,)
            if dual:
                ips += (node.pod_cidrs[1].network_address + host,)
            pods.append(
                Pod(
                    namespace,
                    name,
                    node.name,
                    ips,
                    f"veth{namespace}{name}",
                    labels=(("pod", name),),
                    ports=PORTS,
                )
            )
    subnets = (ip_network("10.244.0.0/16"),) + ((ip_network("fd00:10:244::/48"),) if dual else ())
    nodes = (
        NODES if dual else tuple(Node(n.name, n.internal_ips[:1], n.pod_cidrs[:1]) for n in NODES)
    )
    parsed = [parse_policy(raw, f"networkPolicies[{i}]")[0] for i, raw in enumerate(policies)]
    return Snapshot(
        Cluster(subnets),
        nodes,
        tuple(pods),
        tuple(Namespace(n, (("ns", n),)) for n in "xyz"),
        tuple(sorted(parsed, key=lambda p: p.key)),
    )


def pod_end(snapshot: Snapshot, label: str, version: int = 4) -> Endpoint:
    namespace, name = label.split("/")
    pod = next(p for p in snapshot.pods if p.key == (namespace, name))
    return Endpoint(next(ip for ip in pod.ips if ip.version == version), pod)


def policy(namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"namespace": namespace, "name": name},
        "spec": spec,
    }


# A bit of everything the compiler writes: named ports, endPort, except, SCTP, both selectors in
# one peer, matchExpressions, an empty ingress list, egress to an ipBlock, a policy not understood.
VARIETY = [
    policy(
        "x",
        "allow-y",
        podSelector={"matchLabels": {"pod": "a"}},
        ingress=[
            {
                "from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
                "ports": [{"port": "serve-80-tcp"}, {"port": 81, "protocol": "UDP"}],
            }
        ],
    ),
    policy(
        "x",
        "range",
        podSelector={"matchExpressions": [{"key": "pod", "operator": "In", "values": ["b", "c"]}]},
        ingress=[
            {
                "from": [
                    {
                        "namespaceSelector": {"matchLabels": {"ns": "z"}},
                        "podSelector": {"matchLabels": {"pod": "c"}},
                    },
                    {"ipBlock": {"cidr": "10.244.0.0/16", "except": ["10.244.1.0/24"]}},
                ],
                "ports": [{"port": 80, "endPort": 81}, {"protocol": "SCTP"}],
            }
        ],
    ),
    policy("y", "deny-all", podSelector={}, ingress=[]),
    policy(
        "z",
        "egress",
        podSelector={"matchLabels": {"pod": "a"}},
        policyTypes=["Egress"],
        egress=[
            {
                "to": [{"ipBlock": {"cidr": "10.244.0.0/16", "except": ["10.244.2.0/24"]}}],
                "ports": [{"port": "serve-81-udp", "protocol": "UDP"}],
            },
            {"to": [{"podSelector": {}}]},
        ],
    ),
    policy(
        "z", "broken", podSelector={"matchLabels": {"pod": "b"}}, ingress=[{"ports": [{"port": 0}]}]
    ),
]
