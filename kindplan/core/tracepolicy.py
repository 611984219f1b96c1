"""NetworkPolicy in a packet's walk (trace.py): the verdict of a node's policy table on the hop,
computed by the table evaluator over the node's compiled desired table (the snapshot's truth).

A node's table is consulted where the kernel would: a packet routed through the node (in on a
pod's veth or the uplink, out again) meets the forward hook, one for the node itself meets the
input hook, and one the node sends meets neither (the node always reaches its pods). Only the
first packet of a connection is judged; replies pass. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kindplan.core.addresses import IPAddress

if TYPE_CHECKING:
    from kindplan.core.policy.tableeval import HookVerdict, TableEvaluator
    from kindplan.core.traceworld import World


@dataclass(frozen=True, slots=True)
class PolicyCheck:
    node: str
    hook: str  # "forward" or "input"
    allowed: bool
    text: str  # "allowed by x/allow-y ingress rule 0", "dropped: x/a is isolated ..."
    chains: tuple[tuple[str, bool, str | None], ...]  # (base chain, accepted, deciding comment)


def policy_check(
    world: World,
    node: str,
    *,
    local: bool,
    packet: tuple[IPAddress, IPAddress, str, int | None],
) -> PolicyCheck | None:
    """The node's table's verdict on a packet routed through it (`local`: for the node
    itself), or None when the node has no policy table."""
    evaluator = _evaluator(world, node)
    if evaluator is None:
        return None
    from kindplan.core.policy.tableeval import Packet

    src, dst, proto, port = packet
    hook = "input" if local else "forward"
    verdict = evaluator.evaluate(hook, Packet(src, dst, proto.upper(), port or 0))
    chains = tuple((c.chain, c.accepted, c.comment) for c in verdict.chains)
    return PolicyCheck(node, hook, verdict.accepted, _text(world, verdict, packet), chains)


def _evaluator(world: World, node: str) -> TableEvaluator | None:
    if not world.snapshot.policies:  # no policy: core/policy is never loaded
        return None
    cache: dict[str, TableEvaluator | None] = world.policy_tables
    if node not in cache:
        from kindplan.core.policy.compile import compile_policy
        from kindplan.core.policy.tableeval import TableEvaluator

        found = world.snapshot.node(node)
        table = compile_policy(world.snapshot, found) if found is not None else None
        cache[node] = TableEvaluator(table) if table is not None else None
    return cache[node]


def _text(
    world: World, verdict: HookVerdict, packet: tuple[IPAddress, IPAddress, str, int | None]
) -> str:
    src, dst, proto, port = packet
    decided = [c.comment for c in verdict.chains if c.accepted and c.comment]
    if verdict.accepted:
        if decided:
            return "allowed by " + " and ".join(decided)
        return "allowed: no pod of this node is isolated for it"
    dropped = verdict.chains[-1]
    direction = "ingress" if dropped.comment == "ingress isolation" else "egress"
    pod, peer = (dst, src) if direction == "ingress" else (src, dst)
    what = f"{proto.upper()} {port}" if port is not None else f"{proto.upper()} without --port"
    word = "from" if direction == "ingress" else "to"
    return (
        f"dropped: {_name(world, pod)} is isolated for {direction} "
        f"(policies: {', '.join(_isolating(world, pod, direction))}) and no rule admits "
        f"{what} {word} {_name(world, peer)}"
    )


def _name(world: World, address: IPAddress) -> str:
    for pod in world.snapshot.pods:
        if address in pod.ips and not pod.host_network:
            return f"{pod.namespace}/{pod.name}"
    for node in world.snapshot.nodes:
        if address in node.internal_ips:
            return f"node {node.name}"
    return str(address)


def _isolating(world: World, address: IPAddress, direction: str) -> list[str]:
    from kindplan.core.policy.select import selects

    pod = next((p for p in world.snapshot.pods if address in p.ips), None)
    if pod is None:
        return []
    return [
        f"{p.namespace}/{p.name}"
        for p in world.snapshot.policies
        if direction.capitalize() in p.policy_types and selects(p, pod)
    ]
