"""One definition of the observed node: read_observed reads it, and the saved plan's fingerprint
and the converged record's digest are digests of every field of what it read.

No root: the node's reads come from small stand-ins of Kernel and Iptables and from files in a
temporary folder (tests/kernel/test_observed_inputs.py changes each input in a real namespace).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest

from kindplan.core.masq.value import MasqObserved, MasqRule, Masquerade
from kindplan.core.model import Link, ObservedState, Pod, Sysctl
from kindplan.core.nexthops import Nexthop
from kindplan.core.nfttable import NftChain, NftSet, NftTable
from kindplan.core.routes import Route, RouteSpecial
from kindplan.core.tunnel import FdbEntry, Neighbour, Vxlan
from kindplan.node.observe import Where, digest, fingerprint, observed_digest, read_observed
from kindplan.node.tunnels import TunnelsSeen

NODE = ObservedState(
    links=(
        Link("eth0", 2, 1500, True, ((ip_address("198.18.0.10"), 15),)),
        Link("veth1", 10, 1500, True, ((ip_address("10.244.2.1"), 32),), "veth"),
    ),
    routes=(Route(ip_network("10.244.1.0/24"), "eth0", ip_address("198.18.0.11"), proto=75),),
    sysctls=(Sysctl("net.ipv4.ip_forward", "1"),),
    masq=(MasqObserved(4, Masquerade(4, (MasqRule("masquerade"),)), 2, (1, 2)),),
    conflist="{}\n",
)
POD = Pod("shop", "cart-1", "node-2", (ip_address("10.244.2.30"),), "veth1")

# Each field of ObservedState with another value: the same node, one input changed.
OTHER = {
    "links": (replace(NODE.links[0], kind="dummy"), NODE.links[1]),  # the same index, another kind
    "routes": (NODE.routes[0]._replace(metric=100),),
    "sysctls": (Sysctl("net.ipv4.ip_forward", "0"),),
    "masq": (replace(NODE.masq[0], hooks_at=(1, 3)),),  # as many hooks, another position
    "conflist": "{ }\n",
    "iptables_backend": "legacy",
    "masq_tools": ("nftables",),  # the iptables tools gone: auto's choice may change
    "conflist_error": "/etc/cni/net.d/10-kindnet.conflist: cannot read: not a regular file",
    "local_pods": (POD,),
    "cache_warnings": ("/cache/kindnet-bad-eth0: unreadable CNI cache entry; skipped",),
    "tunnels": (Vxlan("kindplan.vxlan4", 4, ip_address("198.18.0.10"), "0a:58:c6:12:00:0a", 1450),),
    "neighbours": (Neighbour("kindplan.vxlan4", ip_address("10.244.1.0"), "0a:58:c6:12:00:0b"),),
    "fdb": (FdbEntry("kindplan.vxlan4", "0a:58:c6:12:00:0b", ip_address("198.19.0.11")),),
    "nexthops": (Nexthop(1, 4, ip_address("198.18.0.11"), "eth0", 75),),
    "policy": NftTable(
        "inet",
        "kindplan-policy",
        (NftSet("peers", "ipv4_addr", ("interval",), frozenset({"10.244.1.5"})),),
        (NftChain("forward", "type filter hook forward priority filter; policy accept;", ()),),
    ),
    "policy_unread": ("set peers: auto-merge",),
    "policy_foreign": True,
    "policy_generation": 7,
}


def test_the_table_has_every_field_of_the_observed_node() -> None:
    assert set(OTHER) == {f.name for f in fields(ObservedState)}


@pytest.mark.parametrize("name", OTHER)
def test_any_field_changed_changes_the_fingerprint_and_the_converged_digest(name: str) -> None:
    changed = replace(NODE, **{name: OTHER[name]})
    assert changed != NODE
    dumped = hashlib.sha256(b"the route table as dumped").digest()
    if name == "policy_generation":  # a stamp of the policy table for the converged record
        assert fingerprint(changed) == fingerprint(NODE)  # a saved plan compares the content
        assert digest(changed, dumped, stamped=True) != digest(NODE, dumped, stamped=True)
        return
    assert fingerprint(changed) != fingerprint(NODE)
    if name in ("routes", "nexthops"):  # the converged digest takes the routes (and nexthop
        # objects) as dumped (their bytes' hash), not as parsed; that a changed dump changes
        # it: the "a route's metric" and "a nexthop object" rows below
        assert digest(changed, dumped) == digest(NODE, dumped)
    else:
        assert digest(changed, dumped) != digest(NODE, dumped)


def test_the_converged_digest_takes_the_policy_table_by_its_generation() -> None:
    # A one-shot apply reads the generation alone (no nft list of a table of 100,000s of
    # elements): at the same generation, the table is the one the record was made from.
    dumped = hashlib.sha256(b"the route table as dumped").digest()
    at = replace(NODE, policy=OTHER["policy"], policy_generation=7)
    alone = replace(NODE, policy_generation=7)  # what the one-shot apply's read gives
    assert digest(at, dumped, stamped=True) == digest(alone, dumped, stamped=True)
    assert digest(at, dumped) != digest(alone, dumped)  # unstamped: the content


# Each field of a route that a dump shows, changed.
ROUTE_FIELDS = {
    "dst": ip_network("10.244.9.0/24"),
    "ifname": "eth1",
    "gateway": ip_address("198.18.0.12"),
    "scope": "link",
    "metric": 100,
    "proto": 3,
    "table": 100,
    "special": RouteSpecial(tos=4),
}


def test_the_route_table_has_every_field_of_a_route_but_its_label() -> None:
    assert set(ROUTE_FIELDS) == set(Route._fields) - {"peer", "key"}  # the key: derived


@pytest.mark.parametrize("name", ROUTE_FIELDS)
def test_any_field_of_a_route_changed_changes_the_fingerprint(name: str) -> None:
    routes = (NODE.routes[0]._replace(**{name: ROUTE_FIELDS[name]}),)
    assert fingerprint(replace(NODE, routes=routes)) != fingerprint(NODE)


def test_the_fingerprint_is_of_the_node_not_of_the_routes_labels() -> None:
    """A route's peer label names a snapshot's node (a dump's routes have none): not the node's."""
    labelled = replace(NODE, routes=tuple(r._replace(peer="node-1") for r in NODE.routes))
    assert fingerprint(labelled) == fingerprint(NODE)


@dataclass
class StandInKernel:
    """The reads of node.kernel.Kernel, from values."""

    links: tuple[Link, ...] = NODE.links
    routes: tuple[Route, ...] = NODE.routes
    sysctls: dict[str, str] = field(default_factory=lambda: {"net.ipv4.ip_forward": "1"})
    nexthops: tuple[Nexthop, ...] = ()

    def read_links(self) -> tuple[Link, ...]:
        return self.links

    def read_routes(self) -> tuple[Route, ...]:
        return self.routes

    def route_digest(self) -> bytes:
        return hashlib.sha256(repr((self.routes, self.nexthops)).encode()).digest()

    def read_nexthops(self) -> tuple[Nexthop, ...]:
        return self.nexthops

    def read_sysctls(self, names: tuple[str, ...]) -> tuple[Sysctl, ...]:
        return tuple(Sysctl(name, self.sysctls[name]) for name in names)

    def read_tunnels(self) -> TunnelsSeen:
        return (), (), ()


@dataclass
class StandInIptables:
    """iptables-save of the nat table per family. Backend "": the system's own iptables, which
    has no variants, so read_masq asks this stand-in and nothing on the host."""

    saved: dict[int, str] = field(
        default_factory=lambda: dict.fromkeys((4, 6), "*nat\n:KIND-MASQ-AGENT - [0:0]\nCOMMIT\n")
    )
    backend: str = ""
    present: bool = True
    nftables: None = None  # no nft: nothing on the host is read

    def save_nat(self, version: int) -> str:
        return self.saved[version]

    def nat_families(self) -> frozenset[int]:
        return frozenset(self.saved)

    def others(self) -> tuple[str, ...]:
        return ()  # no variants to look at

    def for_backend(self, backend: str) -> StandInIptables:
        assert backend == self.backend
        return self


def cache_entry(ip: str) -> str:
    return json.dumps(
        {
            "networkName": "kindnet",
            "cniArgs": [["K8S_POD_NAMESPACE", "shop"], ["K8S_POD_NAME", "cart-1"]],
            "result": {"interfaces": [{"name": "veth1"}], "ips": [{"address": f"{ip}/24"}]},
        }
    )


Change = Callable[[StandInKernel, StandInIptables, Where], object]
CHANGES: dict[str, tuple[tuple[str, ...], Change]] = {
    "an address removed": (("links",), lambda k, i, w: setattr(k, "links", NODE.links[:1])),
    "a route's metric": (("routes",), lambda k, i, w: setattr(k, "routes", OTHER["routes"])),
    "a nexthop object": (
        ("nexthops",),
        lambda k, i, w: setattr(k, "nexthops", OTHER["nexthops"]),
    ),
    "forwarding off": (
        ("sysctls",),
        lambda k, i, w: k.sysctls.update({"net.ipv4.ip_forward": "0"}),
    ),
    "the IPv6 chain flushed": (("masq",), lambda k, i, w: i.saved.update({6: "*nat\nCOMMIT\n"})),
    "the conflist edited": (("conflist",), lambda k, i, w: w.conflist.write_text("{ }\n")),
    "the conflist a directory": (
        ("conflist", "conflist_error"),  # nothing read, and why
        lambda k, i, w: (w.conflist.unlink(), w.conflist.mkdir()),
    ),
    "a pod in the CNI cache": (
        ("local_pods",),
        lambda k, i, w: (w.cni_cache / "kindnet-c0ffee-eth0").write_text(
            cache_entry("10.244.2.30")
        ),
    ),
    "a broken CNI cache entry": (
        ("cache_warnings",),
        lambda k, i, w: (w.cni_cache / "kindnet-bad-eth0").write_text("{"),
    ),
}


@pytest.mark.parametrize("change", CHANGES)
def test_the_converged_digest_is_a_digest_of_what_read_observed_reads(
    tmp_path: Path, change: str
) -> None:
    (tmp_path / "cache").mkdir()
    where = Where(tmp_path / "10-kindnet.conflist", (4,), tmp_path / "cache", "node-2", "kindnet")
    where.conflist.write_text("{}\n")
    kernel, iptables = StandInKernel(), StandInIptables()

    def read() -> tuple[ObservedState, str]:
        observed = read_observed(kernel, iptables, where)
        converged = observed_digest(kernel, iptables, where)
        assert converged == digest(observed, kernel.route_digest())
        return observed, converged

    before, converged = read()
    names, edit = CHANGES[change]
    edit(kernel, iptables, where)
    after, converged_after = read()
    assert all(getattr(after, name) != getattr(before, name) for name in names)
    assert replace(after, **{name: getattr(before, name) for name in names}) == before, (
        "only that input changed"
    )
    assert converged_after != converged
    assert fingerprint(after) != fingerprint(before)
