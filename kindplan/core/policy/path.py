"""Which policy tables a new connection crosses, and their verdicts on it.

With ptp, a pod's packets are routed by its node: the source pod's node sees them in its forward
hook, unless they are for the node itself (input); the destination pod's node sees them in its
forward hook too. What a node sends itself leaves through output, which no policy table hooks
(the node always reaches its pods). So a connection crosses at most two nodes' tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kindplan.core.nfttable import NftTable
from kindplan.core.policy.evaluate import Endpoint
from kindplan.core.policy.tableeval import HookVerdict, Packet, TableEvaluator


@dataclass(frozen=True, slots=True)
class PolicyHop:
    node: str
    verdict: HookVerdict

    @property
    def accepted(self) -> bool:
        return self.verdict.accepted


def crossings(src: Endpoint, dst: Endpoint) -> list[tuple[str, str]]:
    """The (node, hook) pairs a new connection from `src` to `dst` passes a table at."""
    out: list[tuple[str, str]] = []
    src_node = _pod_node(src)
    dst_node = _pod_node(dst)
    if src_node is not None:  # leaves a pod: its node routes it
        to_self = dst.node == src_node
        out.append((src_node, "input" if to_self else "forward"))
        if to_self or dst_node == src_node:
            return out
    if dst_node is not None:
        if src.node != dst_node:  # from its own node: output, no table
            out.append((dst_node, "forward"))
    elif dst.node is not None and src.node != dst.node:
        out.append((dst.node, "input"))
    return out


def _pod_node(end: Endpoint) -> str | None:
    """The node of a pod on the pod network (a hostNetwork pod is its node)."""
    if end.pod is None or end.pod.host_network or end.node is not None:
        return None
    return end.pod.node


def path_verdicts(
    tables: Mapping[str, NftTable | None],
    src: Endpoint,
    dst: Endpoint,
    protocol: str,
    port: int,
    *,
    evaluators: dict[str, TableEvaluator] | None = None,
) -> list[PolicyHop]:
    """The verdict of each table crossed, in order, up to the first that drops."""
    packet = Packet(src.address, dst.address, protocol, port)
    cache = {} if evaluators is None else evaluators
    hops = []
    for node, hook in crossings(src, dst):
        table = tables.get(node)
        if table is None:
            continue
        evaluator = cache.get(node)
        if evaluator is None:
            evaluator = cache[node] = TableEvaluator(table)
        hop = PolicyHop(node, evaluator.evaluate(hook, packet))
        hops.append(hop)
        if not hop.accepted:
            break
    return hops
