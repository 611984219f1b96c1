"""What policies select: label selectors, the pods a policy applies to, the pods and addresses a
rule's peers name, and an ipBlock minus its exceptions as non-overlapping prefixes.

A hostNetwork pod is never selected and is no pod peer (its address is its node's: only an
ipBlock can name it), and a pod without an address can be neither.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from ipaddress import collapse_addresses

from kindplan.core.addresses import IPAddress, IPNetwork, net_order
from kindplan.core.model import Pod, Snapshot
from kindplan.core.policyvalues import (
    IPBlock,
    Labels,
    LabelSelector,
    NetworkPolicy,
    PolicyPeer,
    Requirement,
)


def matches(selector: LabelSelector, labels: Labels) -> bool:
    """matchLabels and every matchExpressions requirement hold for `labels`."""
    have = dict(labels)
    if any(have.get(k) != v for k, v in selector.match_labels):
        return False
    return all(_holds(r, have) for r in selector.match_expressions)


def _holds(requirement: Requirement, have: dict[str, str]) -> bool:
    value = have.get(requirement.key)
    if requirement.operator == "In":
        return value is not None and value in requirement.values
    if requirement.operator == "NotIn":  # as the API: a pod without the key is not in
        return value is None or value not in requirement.values
    if requirement.operator == "Exists":
        return value is not None
    return value is None  # DoesNotExist


class Selection:
    """Pods and namespaces of a snapshot, indexed once for many selector evaluations."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.pods = tuple(p for p in snapshot.pods if p.ips and not p.host_network)
        self.namespace_labels: dict[str, Labels] = {n.name: n.labels for n in snapshot.namespaces}
        for pod in snapshot.pods:  # a namespace not listed has no labels but its name
            self.namespace_labels.setdefault(pod.namespace, ())
        for policy in snapshot.policies:
            self.namespace_labels.setdefault(policy.namespace, ())
        self._peer_cache: dict[tuple[str, PolicyPeer], tuple[Pod, ...]] = {}
        self._built: _Index | None = None
        self._namespace_cache: dict[str, Labels] = {}

    def labels_of_namespace(self, name: str) -> Labels:
        found = self._namespace_cache.get(name)
        if found is None:
            found = self._namespace_cache[name] = _with_name(
                name, self.namespace_labels.get(name, ())
            )
        return found

    def selected(self, policy: NetworkPolicy) -> tuple[Pod, ...]:
        """The pods `policy` applies to."""
        return tuple(p for p in self.pods if selects(policy, p))

    def peer_pods(self, namespace: str, peer: PolicyPeer) -> tuple[Pod, ...]:
        """The pods a selector peer of a policy in `namespace` names (none for an ipBlock), in
        snapshot order: what names_pod says of each pod, found through label indexes.

        Remembered: many policies and rules name the same peers, and a node's compile asks
        for each of them (a pod list of a whole cluster)."""
        key = (namespace, peer)
        found = self._peer_cache.get(key)
        if found is None:
            found = self._peer_pods(namespace, peer)
            self._peer_cache[key] = found
        return found

    def _peer_pods(self, namespace: str, peer: PolicyPeer) -> tuple[Pod, ...]:
        if peer.ip_block is not None:
            return ()
        index = self._index()
        if peer.namespace_selector is None:
            pool = index.by_namespace.get(namespace, _NONE)
        else:
            selector = peer.namespace_selector
            pool = set().union(
                *(
                    members
                    for name, members in index.by_namespace.items()
                    if matches(selector, self.labels_of_namespace(name))
                )
            )
        chosen = pool if peer.pod_selector is None else index.matching(peer.pod_selector, pool)
        return tuple(self.pods[i] for i in sorted(chosen))

    def _index(self) -> _Index:
        if self._built is None:
            self._built = _Index(self.pods)
        return self._built

    def names_pod(self, policy: NetworkPolicy, peer: PolicyPeer, pod: Pod) -> bool:
        """The selector peer `peer` of `policy` names `pod` (a selectable pod)."""
        return self._names(policy.namespace, peer, pod)

    def _names(self, namespace: str, peer: PolicyPeer, pod: Pod) -> bool:
        if peer.ip_block is not None or not selectable(pod):
            return False
        if peer.namespace_selector is None:
            in_namespace = pod.namespace == namespace
        else:
            labels = self.labels_of_namespace(pod.namespace)
            in_namespace = matches(peer.namespace_selector, labels)
        if not in_namespace:
            return False
        return peer.pod_selector is None or matches(peer.pod_selector, pod.labels)


_NONE: frozenset[int] = frozenset()


class _Index:
    """Pods (by position) by namespace, by label and by label key: a selector over a cluster's
    pods narrows by the sets of its matchLabels, In and Exists, then checks the few left."""

    def __init__(self, pods: tuple[Pod, ...]) -> None:
        self.labels = [dict(p.labels) for p in pods]
        self.by_namespace: dict[str, set[int]] = {}
        self.by_label: dict[tuple[str, str], set[int]] = {}
        self.by_key: dict[str, set[int]] = {}
        for i, pod in enumerate(pods):
            self.by_namespace.setdefault(pod.namespace, set()).add(i)
            for key, value in pod.labels:
                self.by_label.setdefault((key, value), set()).add(i)
                self.by_key.setdefault(key, set()).add(i)

    def matching(self, selector: LabelSelector, pool: AbstractSet[int]) -> AbstractSet[int]:
        narrowing: list[AbstractSet[int]] = [pool]
        narrowing += [self.by_label.get(pair, _NONE) for pair in selector.match_labels]
        rest = []
        for r in selector.match_expressions:
            if r.operator == "In":
                narrowing.append(
                    set().union(*(self.by_label.get((r.key, v), _NONE) for v in r.values))
                )
            elif r.operator == "Exists":
                narrowing.append(self.by_key.get(r.key, _NONE))
            else:  # NotIn, DoesNotExist: what is left is checked one by one
                rest.append(r)
        narrowing.sort(key=len)
        base = set(narrowing[0]).intersection(*narrowing[1:])
        if not rest:
            return base
        return {i for i in base if all(_holds(r, self.labels[i]) for r in rest)}


def _with_name(name: str, labels: Labels) -> Labels:
    # The API server labels every namespace with its name (kubernetes.io/metadata.name, 1.21+);
    # a namespace listed without it is given it, so that selectors on it work everywhere.
    if any(k == "kubernetes.io/metadata.name" for k, _ in labels):
        return labels
    return tuple(sorted((*labels, ("kubernetes.io/metadata.name", name))))


def selects(policy: NetworkPolicy, pod: Pod) -> bool:
    """`policy` applies to `pod`: same namespace, its podSelector matches, a pod network pod."""
    return (
        pod.namespace == policy.namespace
        and not pod.host_network
        and bool(pod.ips)
        and matches(policy.pod_selector, pod.labels)
    )


def selectable(pod: Pod) -> bool:
    return bool(pod.ips) and not pod.host_network


def in_block(block: IPBlock, address: IPAddress) -> bool:
    """`address` lies in the block's cidr and in none of its exceptions."""
    return (
        address.version == block.cidr.version
        and address in block.cidr
        and not any(address in e for e in block.except_)
    )


def block_prefixes(block: IPBlock) -> list[IPNetwork]:
    """The block's cidr minus its exceptions, as non-overlapping prefixes in address order."""
    remaining: list[IPNetwork] = [block.cidr]
    for excluded in block.except_:
        kept: list[IPNetwork] = []
        for net in remaining:
            if excluded.subnet_of(net):  # type: ignore[arg-type]
                kept.extend(net.address_exclude(excluded))  # type: ignore[arg-type]
            elif not net.subnet_of(excluded):  # type: ignore[arg-type]
                kept.append(net)
        remaining = kept
    return sorted(remaining, key=net_order)


def prefixes(nets: Iterable[IPNetwork]) -> list[IPNetwork]:
    """The union of `nets` (one family) as the fewest non-overlapping prefixes."""
    return list(collapse_addresses(nets))  # type: ignore[type-var]
