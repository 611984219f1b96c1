"""The reference evaluator: is a new connection allowed, read straight from the API's semantics.

Written to be obviously right rather than fast: compile.py's table and tableeval.py are held to
it by property tests. A connection is allowed when the source's egress and the destination's
ingress both admit it. A pod is isolated in a direction when any policy that selects it names
that direction; an isolated pod admits what any rule of any of those policies admits (rules and
peers are OR'ed). The node a pod runs on always reaches it (kubelet probes); replies of an
allowed connection pass (conntrack), so only the first packet is judged here.
"""

from __future__ import annotations

from dataclasses import dataclass

from kindplan.core.addresses import IPAddress
from kindplan.core.model import Pod, Snapshot
from kindplan.core.policy.select import Selection, in_block, selects
from kindplan.core.policyvalues import EGRESS, INGRESS, NetworkPolicy, PolicyPort, PolicyRule


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One end of a connection: an address, the pod that holds it if any, and the node it is
    if it is a node itself (its InternalIP, or a hostNetwork pod's address)."""

    address: IPAddress
    pod: Pod | None = None
    node: str | None = None

    @property
    def label(self) -> str:
        return f"{self.pod.namespace}/{self.pod.name}" if self.pod else str(self.address)


@dataclass(frozen=True, slots=True)
class Side:
    """One direction's judgement: who isolates the pod, and the rule that admits (if any)."""

    direction: str  # INGRESS or EGRESS
    isolating: tuple[str, ...] = ()  # "ns/name" of every policy isolating the pod this way
    admitted_by: str | None = None  # "ns/name ingress rule 0"; None when none admits

    @property
    def allowed(self) -> bool:
        return not self.isolating or self.admitted_by is not None


@dataclass(frozen=True, slots=True)
class Verdict:
    egress: Side
    ingress: Side
    reason: str = ""  # set when neither side was judged (the node to its pod)

    @property
    def allowed(self) -> bool:
        return self.egress.allowed and self.ingress.allowed


def policy_comment(policy: NetworkPolicy) -> str:
    """The policy as its pods set's comment names it: `ns/name` (at most 128 bytes)."""
    text = f"{policy.namespace}/{policy.name}"
    return text if len(text) <= 128 else text[:125] + "..."


def rule_comment(policy: NetworkPolicy, direction: str, index: int) -> str:
    """How a rule is named everywhere: plan, trace, and the nft comment (at most 128 bytes)."""
    text = f"{policy.namespace}/{policy.name} {direction.lower()} rule {index}"
    if len(text.encode()) <= 128:
        return text
    tail = f" {direction.lower()} rule {index}"
    return f"{policy.namespace}/{policy.name}"[: 125 - len(tail)] + "..." + tail


def evaluate(snapshot: Snapshot, src: Endpoint, dst: Endpoint, protocol: str, port: int) -> Verdict:
    """The verdict on a new connection from `src` to `dst` (protocol TCP, UDP or SCTP)."""
    selection = Selection(snapshot)
    if dst.pod is not None and src.node is not None and src.node == dst.pod.node:
        return Verdict(Side(EGRESS), Side(INGRESS), reason="from the pod's own node")
    egress = _side(selection, EGRESS, src, dst, (protocol, port))
    ingress = _side(selection, INGRESS, dst, src, (protocol, port))
    return Verdict(egress, ingress)


def _side(
    selection: Selection, direction: str, pod_end: Endpoint, peer: Endpoint, packet: tuple[str, int]
) -> Side:
    pod = pod_end.pod
    if pod is None or pod.host_network:
        return Side(direction)
    policies = [
        p for p in selection.snapshot.policies if direction in p.policy_types and selects(p, pod)
    ]
    isolating = tuple(f"{p.namespace}/{p.name}" for p in policies)
    # The destination's ports resolve named ports: the pod itself for ingress, the peer for egress.
    dst_pod = pod if direction == INGRESS else peer.pod
    for policy in policies:
        rules = policy.ingress if direction == INGRESS else policy.egress
        for index, rule in enumerate(rules):
            if _admits(selection, policy, rule, peer, dst_pod=dst_pod, packet=packet):
                return Side(direction, isolating, rule_comment(policy, direction, index))
    return Side(direction, isolating)


def _admits(
    selection: Selection,
    policy: NetworkPolicy,
    rule: PolicyRule,
    peer: Endpoint,
    *,
    dst_pod: Pod | None,
    packet: tuple[str, int],
) -> bool:
    if rule.ports and not any(port_matches(p, dst_pod, *packet) for p in rule.ports):
        return False
    if not rule.peers:
        return True
    for candidate in rule.peers:
        if candidate.ip_block is not None:
            if in_block(candidate.ip_block, peer.address):
                return True
        elif peer.pod is not None and selection.names_pod(policy, candidate, peer.pod):
            return True
    return False


def port_matches(port: PolicyPort, dst_pod: Pod | None, protocol: str, number: int) -> bool:
    """A rule's port admits `protocol`/`number`, a named port resolved on the destination pod."""
    if port.protocol != protocol:
        return False
    if port.port is None:
        return True
    if isinstance(port.port, str):
        if dst_pod is None or not dst_pod.ips or dst_pod.host_network:
            return False
        return any(
            c.name == port.port and c.protocol == protocol and c.port == number
            for c in dst_pod.ports
        )
    return port.port <= number <= (port.end_port or port.port)
