"""Compile the cluster's NetworkPolicies into one node's nftables table, `inet kindplan-policy`.

The structure (sets declared, chains, rules) is a function of the policies and the cluster's
families only; everything that depends on pods (which local pods a policy selects, which
addresses a peer names, what a named port resolves to) is a set element. So a pod that comes or
goes, or a label that changes, rewrites elements and never a rule (NftTable.structure() holds).

Layout (policies numbered in (namespace, name) order; F is v4 or v6; the rule comments name the
policy and rule, see evaluate.rule_comment):
  set pN-pods-F          the node's local pods policy N selects            (addresses; its
                         comment is the policy's ns/name)
  set pN-iR-F / pN-eR-F  the peers of ingress / egress rule R              (interval: prefixes)
                         (a later rule naming the same peers uses the first one's set)
  set pN-iR-named-F ...  named ports: destination . protocol . port        (concatenation)
                         (a peer or named-port set is empty while no policy using it selects a
                         local pod: declared all the same, so the structure stays pod-free)
  set ingress-isolated-F / egress-isolated-F: the local pods isolated that way
  chain forward-egress   hook forward priority filter - 2: replies accepted, then `jump egress`
  chain forward-ingress  hook forward priority filter - 1: replies, the ingress rules, isolation
  chain input-egress     hook input priority filter - 2: a pod's egress to its own node
                         (IPv6's neighbour discovery accepted first)
  chain egress           the egress rules, then the egress isolation's drop

Why these hooks: with ptp every packet between pods is routed by the node, so the forward hook
sees pod to pod within the node and across it, after the prerouting DNAT of a Service (policy
judges the backend pod, as the API means). A pod talking to its own node (its InternalIP,
hostNetwork pods, the gateway) reaches the input hook, not forward: without input-egress a pod
isolated for egress would reach every service of its node. Traffic from the node to its pods
leaves through output, where nothing is checked: the node always reaches its pods (kubelet).
Why these priorities: a drop in any base chain is final and an accept ends only its own chain,
so kube-proxy's nftables chains and iptables-nft's FORWARD (priority filter) still see what we
accept, and cannot undo what we drop; running just ahead of filter makes the order with
iptables-nft deterministic, and egress before ingress makes trace name the source's verdict
first. Every base chain accepts established and related packets first: replies pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from kindplan.core.addresses import IPAddress, IPNetwork, format_ip
from kindplan.core.model import Node, Pod, Snapshot
from kindplan.core.nfttable import NftChain, NftSet, NftTable
from kindplan.core.policy.evaluate import policy_comment, rule_comment
from kindplan.core.policy.select import Selection, block_prefixes, in_block, prefixes, selects
from kindplan.core.policyvalues import (
    EGRESS,
    INGRESS,
    NetworkPolicy,
    PolicyPeer,
    PolicyPort,
    PolicyRule,
)

TABLE = "kindplan-policy"
ESTABLISHED = "ct state established,related accept"
# A pod resolves its gateway (an address of the node) by neighbour discovery, which conntrack
# does not track: egress isolation must not cut a pod off its node's neighbour table (IPv4's
# ARP is no IP packet and meets no hook).
# One rule per type, not an anonymous set: a rule holds no braces, so the journal's reader can
# refuse any text that could end its nft command (core/policytable.py).
ND_TYPES = ("nd-router-solicit", "nd-neighbor-solicit", "nd-neighbor-advert")
NEIGHBOUR_DISCOVERY = tuple(
    f'icmpv6 type {kind} accept comment "neighbour discovery"' for kind in ND_TYPES
)
BASE_CHAINS = {
    "forward-egress": "type filter hook forward priority filter - 2; policy accept;",
    "forward-ingress": "type filter hook forward priority filter - 1; policy accept;",
    "input-egress": "type filter hook input priority filter - 2; policy accept;",
}
ISOLATION_COMMENT = {INGRESS: "ingress isolation", EGRESS: "egress isolation"}
_FAMILY = {4: ("v4", "ip", "ipv4_addr"), 6: ("v6", "ip6", "ipv6_addr")}
_SHORT = {INGRESS: "i", EGRESS: "e"}


def compile_policy(snapshot: Snapshot, node: Node) -> NftTable | None:
    """The policy table of `node` (its local pods only); None when the cluster has no policy."""
    if not snapshot.policies:
        return None
    return _Compiler(snapshot, node.name).table()


def element(net: IPNetwork) -> str:
    """A prefix as nft prints it: a whole-length prefix as the bare address."""
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address)
    return str(net)


@dataclass(frozen=True, slots=True)
class _At:
    """Where a rule is: policy number `index`, its direction and rule number `r`."""

    index: int
    policy: NetworkPolicy
    direction: str
    r: int
    rule: PolicyRule

    @property
    def name(self) -> str:
        return f"p{self.index}-{_SHORT[self.direction]}{self.r}"

    @property
    def comment(self) -> str:
        return f'comment "{rule_comment(self.policy, self.direction, self.r)}"'


class _Compiler:
    def __init__(self, snapshot: Snapshot, node: str) -> None:
        self.selection = Selection(snapshot)
        self.families = snapshot.families or (4,)
        self.local = tuple(p for p in self.selection.pods if p.node == node)
        self.sets: list[NftSet] = []
        self.rules: dict[str, list[str]] = {INGRESS: [], EGRESS: []}
        self.texts: dict[IPAddress, str] = {}
        self.peer_sets: dict[tuple[str, tuple[PolicyPeer, ...], int], str] = {}
        # Each peer set's first user (whose elements it gets), and the sets some user of which
        # selects a local pod: only those are filled (see _peer_set).
        self.peer_users: dict[str, tuple[NetworkPolicy, PolicyRule, int]] = {}
        self.peer_filled: set[str] = set()
        self.by_port_name: dict[str, list[int]] | None = None  # a name -> pods declaring it
        self.isolated: dict[str, set[str]] = {
            f"{d}-isolated-{_FAMILY[v][0]}": set() for d in ("ingress", "egress") for v in (4, 6)
        }

    def table(self) -> NftTable:
        for index, policy in enumerate(self.selection.snapshot.policies):
            self._policy(index, policy)
        for name, (policy, rule, version) in self.peer_users.items():
            filled = name in self.peer_filled
            elements = self._peer_elements(policy, rule, version) if filled else set()
            self.sets.append(NftSet(name, _FAMILY[version][2], ("interval",), frozenset(elements)))
        for name, elements in self.isolated.items():
            version = 4 if name.endswith("v4") else 6
            if version in self.families:
                self.sets.append(NftSet(name, _FAMILY[version][2], (), frozenset(elements)))
        chains = [
            NftChain("egress", "", (*_dedup(self.rules[EGRESS]), *self._drops(EGRESS, "saddr"))),
            NftChain("forward-egress", BASE_CHAINS["forward-egress"], (ESTABLISHED, "jump egress")),
            NftChain(
                "forward-ingress",
                BASE_CHAINS["forward-ingress"],
                (ESTABLISHED, *_dedup(self.rules[INGRESS]), *self._drops(INGRESS, "daddr")),
            ),
            NftChain(
                "input-egress",
                BASE_CHAINS["input-egress"],
                (
                    ESTABLISHED,
                    *(NEIGHBOUR_DISCOVERY if 6 in self.families else ()),
                    "jump egress",
                ),
            ),
        ]
        return NftTable(
            "inet", TABLE, tuple(sorted(self.sets, key=lambda s: s.name)), tuple(chains)
        )

    def _drops(self, direction: str, field: str) -> Iterator[str]:
        for version in self.families:
            suffix, keyword, _ = _FAMILY[version]
            yield (
                f"{keyword} {field} @{direction.lower()}-isolated-{suffix} drop "
                f'comment "{ISOLATION_COMMENT[direction]}"'
            )

    def _policy(self, index: int, policy: NetworkPolicy) -> None:
        selected = [p for p in self.local if selects(policy, p)]
        for version in self.families:
            suffix, _, addr_type = _FAMILY[version]
            addresses = frozenset(
                format_ip(ip) for p in selected for ip in p.ips if ip.version == version
            )
            # The comment names the policy: `show` and a reader of `nft list table` find
            # which pods a policy selects, even one with no rule (a deny-all).
            self.sets.append(
                NftSet(f"p{index}-pods-{suffix}", addr_type, (), addresses, policy_comment(policy))
            )
            for direction in policy.policy_types:
                self.isolated[f"{direction.lower()}-isolated-{suffix}"] |= addresses
        for direction in policy.policy_types:
            rules = policy.ingress if direction == INGRESS else policy.egress
            for r, rule in enumerate(rules):
                at = _At(index, policy, direction, r, rule)
                for version in self.families:
                    # Only ipBlocks of the other family: nothing of this one can match.
                    if not rule.peers or _may_name(rule, version):
                        self._rule(at, version, selected)

    def _rule(self, at: _At, version: int, selected: list[Pod]) -> None:
        suffix, keyword, _ = _FAMILY[version]
        rule = at.rule
        own, other = ("daddr", "saddr") if at.direction == INGRESS else ("saddr", "daddr")
        head = f"{keyword} {own} @p{at.index}-pods-{suffix}"
        if rule.peers:
            head += f" {keyword} {other} @{self._peer_set(at, version, bool(selected))}"
        out = self.rules[at.direction]
        if not rule.ports:
            out.append(f"{head} accept {at.comment}")
        for port in rule.ports:
            if not isinstance(port.port, str):
                out.append(f"{head} {_port_match(port)} accept {at.comment}")
        if any(isinstance(p.port, str) for p in rule.ports):
            out.append(self._named_rule(at, version, selected))

    def _named_rule(self, at: _At, version: int, selected: list[Pod]) -> str:
        """Named ports resolve per destination pod: one concatenated set of destination .
        protocol . port, whose elements follow the pods and their declared ports."""
        suffix, keyword, addr_type = _FAMILY[version]
        if at.direction == INGRESS:  # the destinations are the selected local pods
            destinations = [(p, ip) for p in selected for ip in p.ips]
            peers = self._peer_set(at, version, bool(selected)) if at.rule.peers else ""
            prefix = f"{keyword} saddr @{peers} " if peers else ""
        else:  # the destinations are the peers (maybe every pod), resolved into the elements:
            # none when the rule's own pods are none here (its rule cannot match: see _peer_set)
            destinations = self._egress_destinations(at.policy, at.rule) if selected else []
            prefix = f"{keyword} saddr @p{at.index}-pods-{suffix} "
        named = [p for p in at.rule.ports if isinstance(p.port, str)]
        set_name = f"{at.name}-named-{suffix}"
        elements = frozenset(_named_elements(destinations, named, version))
        concat = f"{addr_type} . inet_proto . inet_service"
        self.sets.append(NftSet(set_name, concat, (), elements))
        match = f"{keyword} daddr . meta l4proto . th dport @{set_name}"
        return f"{prefix}{match} accept {at.comment}"

    def _peer_set(self, at: _At, version: int, selecting: bool) -> str:
        """The name of the set of a rule's peers: rules naming the same peers (in the same
        namespace, where a peer depends on it) share the first one's set, so that a pod named
        by many policies is one element, not one per rule.

        `selecting`: the rule's policy selects a local pod. A rule matches only packets of its
        policy's selected local pods (its pN-pods set comes first), so a set whose every user
        selects none here is declared (the structure does not depend on pods) but left empty:
        on a big cluster most policies select none of a node's pods, and their peers would be
        most of the table. A pod that arrives fills it (elements only, as ever)."""
        rule = at.rule
        local = any(p.ip_block is None and p.namespace_selector is None for p in rule.peers)
        key = (at.policy.namespace if local else "", rule.peers, version)
        name = self.peer_sets.get(key)
        if name is None:
            name = self.peer_sets[key] = f"{at.name}-{_FAMILY[version][0]}"
            self.peer_users[name] = (at.policy, rule, version)
        if selecting:
            self.peer_filled.add(name)
        return name

    def _peer_elements(self, policy: NetworkPolicy, rule: PolicyRule, version: int) -> set[str]:
        blocks = prefixes(
            net
            for peer in rule.peers
            if peer.ip_block is not None and peer.ip_block.cidr.version == version
            for net in block_prefixes(peer.ip_block)
        )
        elements = {element(net) for net in blocks}
        texts = self.texts
        for peer in rule.peers:
            for pod in self.selection.peer_pods(policy.namespace, peer):
                for ip in pod.ips:
                    if ip.version == version and not (blocks and any(ip in n for n in blocks)):
                        text = texts.get(ip)
                        if text is None:  # each address formatted once, whatever names it
                            text = texts[ip] = format_ip(ip)
                        elements.add(text)
        return elements

    def _egress_destinations(
        self, policy: NetworkPolicy, rule: PolicyRule
    ) -> list[tuple[Pod, IPAddress]]:
        """The addresses an egress rule's named ports may resolve on: those of the pods its
        selector peers name, those of pods inside an ipBlock; every pod's when it names none.
        Only pods declaring one of the rule's names are looked at (an index: a rule without
        peers would otherwise walk every pod of the cluster, for each policy)."""
        found = []
        for pod in self._declaring(rule.ports):
            for ip in pod.ips:
                if not rule.peers or any(
                    self.selection.names_pod(policy, peer, pod)
                    or (peer.ip_block is not None and in_block(peer.ip_block, ip))
                    for peer in rule.peers
                ):
                    found.append((pod, ip))
        return found

    def _declaring(self, ports: tuple[PolicyPort, ...]) -> list[Pod]:
        """The selectable pods declaring a port of one of `ports`' names, in snapshot order."""
        if self.by_port_name is None:
            self.by_port_name = {}
            for i, pod in enumerate(self.selection.pods):
                for declared in pod.ports:
                    self.by_port_name.setdefault(declared.name, []).append(i)
        chosen = {
            i for p in ports if isinstance(p.port, str) for i in self.by_port_name.get(p.port, ())
        }
        return [self.selection.pods[i] for i in sorted(chosen)]


def _may_name(rule: PolicyRule, version: int) -> bool:
    return any(p.ip_block is None or p.ip_block.cidr.version == version for p in rule.peers)


def _port_match(port: PolicyPort) -> str:
    protocol = port.protocol.lower()
    if port.port is None:
        return f"meta l4proto {protocol}"
    if port.end_port is not None and port.end_port != port.port:
        return f"{protocol} dport {port.port}-{port.end_port}"
    return f"{protocol} dport {port.port}"


def _named_elements(
    destinations: Iterable[tuple[Pod, IPAddress]], named: list[PolicyPort], version: int
) -> Iterator[str]:
    wanted = {(p.port, p.protocol) for p in named}
    for pod, ip in destinations:
        if ip.version == version:
            for declared in pod.ports:
                if (declared.name, declared.protocol) in wanted:
                    yield f"{format_ip(ip)} . {declared.protocol.lower()} . {declared.port}"


def _dedup(rules: list[str]) -> list[str]:
    return list(dict.fromkeys(rules))
