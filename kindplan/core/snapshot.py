"""Check a ClusterSnapshot document: validate it against the schema, then check that it makes sense.

Pure: a document in (kindplan/inputs turns bytes and every kind of input into one), a Snapshot
out. Every problem is collected before anything is raised, so a user sees them all at once.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from ipaddress import IPv6Address, ip_network
from typing import TYPE_CHECKING, Any

from kindplan.core.addresses import (
    IPAddress,
    IPNetwork,
    net_order,
    parse_cidr,
    parse_ip,
)
from kindplan.core.model import Cluster, CniSettings, Node, Snapshot
from kindplan.core.plainnode import by_family, not_a_gateway, plain_node, within
from kindplan.core.schemacheck import Check, compile_schema
from kindplan.core.snapshotpods import PodChecks, check_namespaces
from kindplan.errors import InvalidInputError, Problem
from kindplan.resources import load_schema

if TYPE_CHECKING:
    from kindplan.core.policyvalues import NetworkPolicy

SCHEMA_FILE = "snapshot.schema.json"
SNAPSHOT_KIND = "ClusterSnapshot"
IPV6_MIN_MTU = 1280


@dataclass(frozen=True, slots=True)
class Loaded:
    snapshot: Snapshot
    warnings: tuple[Problem, ...] = ()


def check_snapshot(
    doc: dict[str, Any],
    *,
    where: Mapping[str, str] | None = None,
    tolerant: bool = False,
    warnings: Sequence[Problem] = (),
) -> Loaded:
    """Check a ClusterSnapshot document for meaning (schema first), as converted from the input.

    `where` maps snapshot paths back to the input's places (a node list's), so that a problem
    names what the user wrote. Tolerant (a node list, which describes a live cluster that is never
    quite clean), a node that can be used only in part (no PodCIDR or no InternalIP yet, a family
    the cluster does not have, a PodCIDR without an InternalIP of its family) is used as far as it
    can be and warned about, never a reason to reject the snapshot. `warnings` (the converter's)
    come first in the result's.
    """
    locate = _Locator(dict(where or {}))
    problems = [Problem(locate(p.where), p.what) for p in _schema_problems(doc)]
    if problems:
        raise InvalidInputError(problems)
    checker = _Checker(locate, tolerant=tolerant)
    snapshot = checker.check(doc)
    if checker.problems:
        raise InvalidInputError(checker.problems)
    return Loaded(snapshot, tuple(warnings) + tuple(checker.warnings))


class _Locator:
    """Names a place in the user's input: a snapshot path, or where it came from in a node list."""

    def __init__(self, where: dict[str, str]) -> None:
        self._where = where

    def __call__(self, path: str) -> str:
        if not self._where:
            return path
        prefix = path
        while prefix:
            if prefix in self._where:
                return self._where[prefix] + path[len(prefix) :]
            prefix = prefix.rpartition(".")[0] if "." in prefix else prefix.rpartition("[")[0]
        return path


@cache
def _fast_check() -> Check:
    return compile_schema(load_schema(SCHEMA_FILE))


def _schema_problems(doc: dict[str, Any]) -> list[Problem]:
    if _fast_check()(doc):
        return []
    from jsonschema import Draft202012Validator  # the reference, for the messages

    validator = Draft202012Validator(load_schema(SCHEMA_FILE))
    errors = sorted(validator.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path])
    return [Problem(_json_path(e.absolute_path) or "(top)", _schema_message(e)) for e in errors]


def _json_path(parts: Iterable[str | int]) -> str:
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _schema_message(error: Any) -> str:
    title = error.schema.get("title") if isinstance(error.schema, dict) else None
    if error.validator == "pattern":
        return f"{error.instance!r} is not {title or 'in the expected form'}"
    message = str(error.message)
    return message if len(message) <= 160 else message[:157] + "..."


def _all_printable(value: Any) -> bool:
    if isinstance(value, str):
        return value.isprintable()
    if isinstance(value, dict):
        return all(map(_all_printable, value.values()))
    if isinstance(value, list):
        return all(map(_all_printable, value))
    return True


_start = operator.itemgetter(0, 1)  # (family, first address) of an overlap-check entry


def _family(version: int) -> str:
    return f"IPv{version}"


class _Checker:
    """The meaning checks that a schema cannot express; collects problems instead of stopping."""

    def __init__(self, locate: _Locator, *, tolerant: bool = False) -> None:
        self.locate = locate
        self.tolerant = tolerant  # a node that is usable in part is used so, with a warning
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self.doubtful_nodes: set[str] = set()
        self.subnets_doubtful = False  # a pod subnet is wrong: PodCIDRs are not checked against it
        self.subnet_paths: dict[IPNetwork, str] = {}
        self.subnet_of: dict[int, IPNetwork] = {}  # the cluster's pod subnet of each family
        self.owner_of_ip: dict[IPAddress, str] = {}  # InternalIP -> node name
        # (family, first address, cidr, node, the node's path, index) of every PodCIDR, for the
        # overlap check (the PodCIDR's path is made only for a problem)
        self.cidr_owners: list[tuple[int, int, IPNetwork, str, str, int]] = []

    def problem(self, path: str, what: str) -> None:
        self.problems.append(Problem(self.locate(path), what))

    def warning(self, path: str, what: str) -> None:
        self.warnings.append(Problem(self.locate(path), what))

    def check(self, doc: dict[str, Any]) -> Snapshot:
        self._control_characters(doc)
        cluster = self._cluster(doc["cluster"])
        nodes = self._nodes(doc["nodes"], cluster)
        namespaces = check_namespaces(self, doc["namespaces"]) if "namespaces" in doc else ()
        pods = PodChecks(self, {n.name: n for n in nodes}).check(doc.get("pods", []))
        policies: tuple[NetworkPolicy, ...] = ()
        if "networkPolicies" in doc:  # only then: start-up pays nothing
            from kindplan.core.policy.inputs import read_policies

            policies = read_policies(doc["networkPolicies"], self.problem, self.warning)
        return Snapshot(
            cluster,
            tuple(sorted(nodes, key=lambda n: n.name)),
            tuple(sorted(pods, key=lambda p: p.key)),
            namespaces,
            policies,
        )

    def _control_characters(self, doc: dict[str, Any]) -> None:
        """Refuse control characters anywhere: JSON Schema's `$` lets a trailing newline pass a
        pattern, and a newline in an interface or file name would break the rendered files."""
        if _all_printable(doc):  # the common case, without building a path for every value
            return
        stack: list[tuple[Any, str]] = [(doc, "")]
        while stack:
            value, path = stack.pop()
            if isinstance(value, str):
                if not value.isprintable():
                    self.problem(path, f"{value!r} contains a control character")
            elif isinstance(value, dict):
                stack.extend((v, f"{path}.{k}" if path else k) for k, v in value.items())
            elif isinstance(value, list):
                stack.extend((v, f"{path}[{i}]") for i, v in enumerate(value))

    # -- parsing single values -------------------------------------------------------------

    def cidr(self, path: str, text: str) -> IPNetwork | None:
        address, _, prefix = text.partition("/")
        if "%" in address:
            self.problem(path, f"{text!r} has a zone index; a CIDR has none")
            return None
        if not (prefix.isascii() and prefix.isdigit()):
            self.problem(path, f"{text!r} is not a CIDR (address/prefix-length)")
            return None
        try:
            return parse_cidr(text)
        except ValueError:
            try:
                fixed = ip_network(text, strict=False)
            except ValueError:
                self.problem(path, f"{text!r} is not a CIDR ({why_not_cidr(text)})")
                return None
            self.problem(path, f"{text} has host bits set (the network is {fixed})")
            return None

    def ip(self, path: str, text: str) -> IPAddress | None:
        try:
            addr = parse_ip(text)
        except ValueError:
            self.problem(path, f"{text!r} is not an IP address")
            return None
        if isinstance(addr, IPv6Address) and addr.scope_id:
            self.problem(path, f"{text!r} has a zone index; use a global address")
            return None
        return addr

    def one_per_family(
        self, path: str, values: Sequence[tuple[int, IPAddress | IPNetwork]], what: str
    ) -> bool:
        seen: set[int] = set()
        for index, value in values:
            if value.version in seen:
                self.problem(f"{path}[{index}]", f"more than one {_family(value.version)} {what}")
                return False
            seen.add(value.version)
        return True

    # -- the three sections ----------------------------------------------------------------

    def _cluster(self, raw: dict[str, Any]) -> Cluster:
        subnets = self._cidrs("cluster.podSubnets", raw["podSubnets"])
        first: dict[int, IPNetwork] = {}
        for i, net in subnets:
            if net.version in first:
                self.problem(
                    f"cluster.podSubnets[{i}]",
                    f"{net} is a second {_family(net.version)} pod subnet besides "
                    f"{first[net.version]} (kindnet takes one per family)",
                )
            else:
                first[net.version] = net
        # Else every PodCIDR would seem outside the pod subnet too: one problem, said once.
        self.subnets_doubtful = len(first) != len(raw["podSubnets"])
        self.subnet_paths = {net: f"cluster.podSubnets[{i}]" for i, net in subnets}
        extra = self._cidrs("cluster.nonMasqueradeCIDRs", raw.get("nonMasqueradeCIDRs", []))
        mtu = raw.get("mtu")
        mtu = int(mtu) if mtu is not None else None  # JSON Schema's integer admits 1500.0
        if mtu is not None and mtu < IPV6_MIN_MTU and any(n.version == 6 for _, n in subnets):
            self.problem("cluster.mtu", f"{mtu} is below IPv6's minimum MTU {IPV6_MIN_MTU}")
        cni = raw.get("cni", {})
        defaults = CniSettings()
        settings = CniSettings(
            conf_dir=cni.get("confDir", defaults.conf_dir),
            conf_file=cni.get("confFile", defaults.conf_file),
            network_name=cni.get("networkName", defaults.network_name),
            cni_version=cni.get("cniVersion", defaults.cni_version),
            ipam_data_dir=cni.get("ipamDataDir", defaults.ipam_data_dir),
        )
        return Cluster(
            pod_subnets=tuple(sorted((n for _, n in subnets), key=net_order)),
            non_masquerade_cidrs=tuple(n for _, n in extra),
            mtu=mtu,
            cni=settings,
            masq_backend=raw.get("masqBackend", "auto"),
            cross_subnet=raw.get("crossSubnet", "none"),
            route_style=raw.get("routeStyle"),
        )

    def _cidrs(self, path: str, texts: list[str]) -> list[tuple[int, IPNetwork]]:
        parsed = [(i, self.cidr(f"{path}[{i}]", t)) for i, t in enumerate(texts)]
        return [(i, n) for i, n in parsed if n is not None]

    def _nodes(self, raw_nodes: list[dict[str, Any]], cluster: Cluster) -> list[Node]:
        self.subnet_of = {n.version: n for n in cluster.pod_subnets}
        names: dict[str, int] = {}
        nodes = []
        for i, raw in enumerate(raw_nodes):
            at, name = f"nodes[{i}]", raw["name"]
            if name in names:
                self.problem(
                    f"{at}.name", f"duplicate node name {name!r} (also nodes[{names[name]}])"
                )
                continue
            names[name] = i
            node = self._plain_node(at, raw)
            if node is None:  # something to say about it: checked again, naming every place
                node = self._node(at, raw)
            if node is not None:
                nodes.append(node)
        self._check_overlaps(self.cidr_owners)
        self._warn_unused_subnets(nodes, cluster)
        return nodes

    def _plain_node(self, at: str, raw: dict[str, Any]) -> Node | None:
        """A node about which there is nothing to say (plainnode.py), checked without naming
        any place; None if there is something: _node then checks it again, naming each place."""
        plain = plain_node(raw, self.owner_of_ip, self.subnet_of, tolerant=self.tolerant)
        if plain is None or self.subnets_doubtful:
            return None
        name, (ips, cidrs) = raw["name"], plain
        for ip in ips:
            self.owner_of_ip[ip] = name
        for j, cidr in enumerate(cidrs):
            self.cidr_owners.append((cidr.version, int(cidr.network_address), cidr, name, at, j))
        return Node(name, by_family(ips), tuple(cidrs))

    def _node(self, at: str, raw: dict[str, Any]) -> Node | None:
        """One node, its addresses and PodCIDRs checked; None when its PodCIDRs are unusable."""
        name = raw["name"]
        before = len(self.problems)
        ips = self._node_ips(at, name, raw["internalIPs"], self.owner_of_ip, self.subnet_of)
        ips_parsed = len(self.problems) == before  # else "no InternalIP" would only be noise
        cidrs = self._cidrs(f"{at}.podCIDRs", raw["podCIDRs"])
        if not self.one_per_family(f"{at}.podCIDRs", cidrs, "PodCIDR"):
            self.doubtful_nodes.add(name)
            return None
        if not self.tolerant:  # a node list says so as a warning (inputs/nodes.py)
            for key, what in (("internalIPs", "InternalIP"), ("podCIDRs", "PodCIDR")):
                if not raw[key]:
                    self.problem(f"{at}.{key}", f"node {name} has no {what}")
        routed_ips = ips if ips_parsed else []
        usable = []  # a loop, not a comprehension: this runs for each of 5,000 nodes
        for j, cidr in cidrs:
            if self._pod_cidr(at, j, cidr, name, routed_ips):
                usable.append(cidr)
        if len(self.problems) != before:
            self.doubtful_nodes.add(name)  # its pods' checks would only repeat the problem
        # At most one of each family (checked above). The PodCIDRs keep the node's order:
        # host-local hands out a pod's addresses in the order of its ranges, so the first
        # listed family is the pod's first IP (as with kindnetd).
        return Node(name, by_family(ips), tuple(usable))

    def _pod_cidr(self, at: str, j: int, cidr: IPNetwork, name: str, ips: list[IPAddress]) -> bool:
        """Check PodCIDR `j` of node `name` against the cluster and the node's InternalIPs;
        False when it goes unused (tolerant: a family the cluster has no pod subnet of)."""
        path = f"{at}.podCIDRs[{j}]"
        subnet = self.subnet_of.get(cidr.version)
        family = _family(cidr.version)
        if subnet is None and self.tolerant:
            # kindnetd reads only spec.podCIDR in a single-stack cluster: the same.
            self.warning(
                path, f"{cidr} is {family} but the cluster has no {family} pod subnet; unused"
            )
            return False
        self._check_pod_cidr(path, cidr, subnet)
        # With no InternalIP at all, that was said already (above, or in inputs/nodes.py).
        if ips and not any(ip.version == cidr.version for ip in ips):
            what = f"node {name} has an {family} PodCIDR but no {family} InternalIP"
            if self.tolerant:
                self.warning(at, f"{what}; no {family} route to its pods")
            else:
                self.problem(at, what)
        self.cidr_owners.append((cidr.version, int(cidr.network_address), cidr, name, at, j))
        return True

    def _warn_unused_subnets(self, nodes: list[Node], cluster: Cluster) -> None:
        used = {cidr.version for node in nodes for cidr in node.pod_cidrs}
        for subnet in cluster.pod_subnets:
            if nodes and subnet.version not in used:
                family = _family(subnet.version)
                self.warnings.append(
                    Problem(
                        self.locate(self.subnet_paths[subnet]),
                        f"{subnet} is {family} but no node has an {family} PodCIDR; "
                        f"kindplan still writes the {family} SNAT chain",
                    )
                )

    def _node_ips(
        self,
        at: str,
        name: str,
        texts: list[str],
        owner_of_ip: dict[IPAddress, str],
        subnets: dict[int, IPNetwork],
    ) -> list[IPAddress]:
        ips: dict[int, IPAddress] = {}
        for j, text in enumerate(texts):
            path = f"{at}.internalIPs[{j}]"
            ip = self.ip(path, text)
            if ip is None:
                continue
            unusable = not_a_gateway(ip)
            if unusable:
                self.problem(path, f"{ip} is {unusable}: no route can go through it")
                continue
            if ip in owner_of_ip:
                self.problem(path, f"{ip} is also the InternalIP of node {owner_of_ip[ip]}")
                continue
            owner_of_ip[ip] = name
            subnet = subnets.get(ip.version)
            if subnet is not None and ip in subnet:
                self.problem(path, f"{ip} lies inside the cluster's pod subnet")
            if ip.version in ips:
                self.warnings.append(
                    Problem(
                        self.locate(path),
                        (
                            f"node {name} has a second {_family(ip.version)} InternalIP {ip}; "
                            f"using the first, {ips[ip.version]}"
                        ),
                    )
                )
                continue
            ips[ip.version] = ip
        return list(ips.values())

    def _check_pod_cidr(self, path: str, cidr: IPNetwork, subnet: IPNetwork | None) -> None:
        """A PodCIDR lies in the cluster's pod subnet of its family and has room for pods."""
        family = _family(cidr.version)
        if self.subnets_doubtful:
            pass
        elif subnet is None:
            self.problem(path, f"{cidr} is {family} but the cluster has no {family} pod subnet")
        elif not within(cidr, subnet):
            self.problem(path, f"{cidr} is outside the cluster's pod subnet {subnet}")
        if cidr.prefixlen > cidr.max_prefixlen - 2:
            self.problem(
                path,
                f"{cidr} is too small for pods (it needs a gateway and at least one pod address)",
            )

    def _check_overlaps(self, owners: list[tuple[int, int, IPNetwork, str, str, int]]) -> None:
        # Sorted by start address, a network overlaps an earlier one exactly when it starts
        # before the furthest end seen so far: O(n log n) for 5,000 nodes.
        owners.sort(key=_start)
        reach: tuple[int, int, IPNetwork, str] | None = None  # (version, last address, net, node)
        for _, first, net, node, at, j in owners:
            last = first + (1 << (net.max_prefixlen - net.prefixlen)) - 1
            if reach and reach[0] == net.version and first <= reach[1]:
                self.problem(f"{at}.podCIDRs[{j}]", f"{net} overlaps {reach[2]} of node {reach[3]}")
            if not reach or reach[0] != net.version or last > reach[1]:
                reach = (net.version, last, net, node)


def why_not_cidr(text: str) -> str:
    """Why `text` is no network, without repeating it (the message names it once already).

    >>> why_not_cidr("10.244.0.300/24"), why_not_cidr("fd00::/129")
    ('its address is not an IPv4 or IPv6 address', 'a prefix length is 0 to 128 for IPv6')
    """
    address, _, prefix = text.partition("/")
    try:
        version = parse_ip(address).version
    except ValueError:
        return "its address is not an IPv4 or IPv6 address"
    bits = 32 if version == 4 else 128
    if not (prefix.isascii() and prefix.isdigit()) or int(prefix) > bits:
        return f"a prefix length is 0 to {bits} for IPv{version}"
    try:
        return f"host bits set; the network is {ip_network(text, strict=False)}"
    except ValueError:
        return "not address/prefix-length"
