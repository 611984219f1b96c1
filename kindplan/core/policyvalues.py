"""NetworkPolicy (networking.k8s.io/v1) and what it selects on, as frozen values: namespaces
with their labels, pods' labels and ports (core/model.py's Pod), and the policies themselves.

The model is normalised so that the semantics read plainly: policyTypes is resolved (its
default applied), an absent or empty `from`/`to` is the empty tuple of peers (everyone), an
absent or empty `ports` is the empty tuple of ports (every port), and an absent `ingress` /
`egress` is the empty tuple of rules (nothing admitted, when the policy isolates that way).
A policy kindplan cannot understand keeps what it could read and names the rest in `problem`:
it fails closed (the pods it selects are isolated in the directions it names, with no rule).
"""

from __future__ import annotations

from dataclasses import dataclass

from kindplan.core.addresses import IPNetwork

Labels = tuple[tuple[str, str], ...]  # sorted by key

INGRESS = "Ingress"
EGRESS = "Egress"
PROTOCOLS = ("TCP", "UDP", "SCTP")


@dataclass(frozen=True, slots=True)
class Namespace:
    name: str
    labels: Labels = ()


@dataclass(frozen=True, slots=True)
class ContainerPort:
    """A port a pod's container declares; `name` is what a policy's named port resolves to."""

    port: int
    protocol: str = "TCP"  # TCP, UDP or SCTP
    name: str = ""  # "" when unnamed


@dataclass(frozen=True, slots=True)
class Requirement:
    """One matchExpressions entry: In, NotIn (values), Exists, DoesNotExist (no values)."""

    key: str
    operator: str
    values: tuple[str, ...] = ()  # sorted


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """matchLabels and matchExpressions, AND'ed; both empty selects everything."""

    match_labels: Labels = ()
    match_expressions: tuple[Requirement, ...] = ()


@dataclass(frozen=True, slots=True)
class IPBlock:
    cidr: IPNetwork
    except_: tuple[IPNetwork, ...] = ()


@dataclass(frozen=True, slots=True)
class PolicyPeer:
    """One entry of `from` / `to`: podSelector and namespaceSelector (AND'ed when both are
    given; a podSelector alone means the policy's own namespace), or an ipBlock alone."""

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None


@dataclass(frozen=True, slots=True)
class PolicyPort:
    protocol: str = "TCP"  # TCP, UDP or SCTP
    # A number, a name (resolved on the destination pod), or None: every port.
    port: int | str | None = None
    end_port: int | None = None  # with a numeric port: the range port..end_port


@dataclass(frozen=True, slots=True)
class PolicyRule:
    peers: tuple[PolicyPeer, ...] = ()  # empty: every source (ingress) / destination (egress)
    ports: tuple[PolicyPort, ...] = ()  # empty: every port and protocol


@dataclass(frozen=True, slots=True)
class NetworkPolicy:
    namespace: str
    name: str
    pod_selector: LabelSelector
    policy_types: tuple[str, ...]  # resolved: a subset of (INGRESS, EGRESS), in that order
    ingress: tuple[PolicyRule, ...] = ()
    egress: tuple[PolicyRule, ...] = ()
    problem: str | None = None  # not understood: the rules are dropped, the isolation kept

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)
