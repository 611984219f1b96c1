"""Every input of the observed node, changed alone, shows in the plan, the saved plan's
fingerprint and the converged record's digest: the three read the node the same way.

An input that one of them missed would let `apply --plan` apply a plan made for another node,
or let a one-shot apply answer "No changes." from a stale record.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from nodes import Node, cni_cache_entry
from shell import sh

from kindplan.core.masq.iptables import jump_rule
from kindplan.core.model import Options
from kindplan.inputs.kinds import parse_snapshot
from kindplan.node.engine import conflist_left_alone, observe_where, plan_node
from kindplan.node.observe import observed_digest
from kindplan.node.opener import open_node

pytestmark = pytest.mark.root


def two_jumps(node: Node) -> None:
    sh("iptables", "-t", "nat", *shlex.split(jump_rule()), ns=node.ns)


def legacy_rules(node: Node) -> None:
    """Rules in legacy tables make legacy the backend in use (as kube-proxy's wrapper decides)."""
    for port in range(8):
        sh("iptables-legacy", "-t", "filter", "-A", "INPUT", "-p", "tcp", "--dport",
           str(9000 + port), "-j", "ACCEPT", ns=node.ns)  # fmt: skip


def conflist_made_a_directory(node: Node) -> None:
    node.conflist.unlink()
    node.conflist.mkdir()


@dataclass(frozen=True)
class Drift:
    change: Callable[[Node], object]
    before: Callable[[Node], object] = lambda node: None  # the state the change starts from


DRIFTS = {
    "links: uplink MTU": Drift(
        lambda n: sh("ip", "-n", n.ns, "link", "set", "eth0", "mtu", "1400")
    ),
    "links: a pod's gateway address removed": Drift(
        lambda n: sh("ip", "-n", n.ns, "addr", "del", "10.244.2.1/32", "dev", "vetha1079faf")
    ),
    "routes: a peer route deleted": Drift(
        lambda n: sh("ip", "-n", n.ns, "route", "del", "10.244.0.0/24")
    ),
    "sysctls: forwarding off": Drift(
        lambda n: sh("ip", "netns", "exec", n.ns, "sysctl", "-qw", "net.ipv4.ip_forward=0")
    ),
    "masq: the SNAT chain flushed": Drift(
        lambda n: sh("iptables", "-t", "nat", "-F", "KIND-MASQ-AGENT", ns=n.ns)
    ),
    # as many jumps as before, at other positions (a rollback puts them back where they were)
    "masq: a foreign rule between two jumps": Drift(
        lambda n: sh("iptables", "-t", "nat", "-I", "POSTROUTING", "2", "-j", "RETURN", ns=n.ns),
        before=two_jumps,
    ),
    "iptables backend: legacy rules appear": Drift(legacy_rules),
    "conflist: edited": Drift(
        lambda n: n.conflist.write_text(n.conflist.read_text().replace("00", "01"))
    ),
    "conflist: removed": Drift(lambda n: n.conflist.unlink()),
    "conflist: a directory in its place": Drift(conflist_made_a_directory),
    "CNI cache: a pod's entry added": Drift(
        lambda n: (n.tmp / "cache" / "kindnet-c0ffee-eth0").write_text(
            json.dumps(cni_cache_entry("veth4b2c9d10", "10.244.2.30"))
        )
    ),
    "CNI cache: an unreadable entry": Drift(
        lambda n: (n.tmp / "cache" / "kindnet-bad-eth0").write_text("{")
    ),
}


def observe(node: Node) -> tuple[object, str, str]:
    """What plan shows (the plan and a conflist left alone), the fingerprint a saved plan
    would hold, and the digest a converged record would hold, of the node as it is now."""
    snapshot = parse_snapshot(node.snapshot.read_bytes()).snapshot
    options = Options(
        node=node.name, conf_dir=str(node.tmp / "cni"), cni_cache_dir=str(node.tmp / "cache")
    )
    planned = plan_node(snapshot, options, node.ns)
    with open_node(node.ns, None) as handles:
        digest = observed_digest(handles.kernel, handles.iptables, observe_where(snapshot, options))
    return (planned.plan, conflist_left_alone(planned.observed)), planned.fingerprint, digest


@pytest.mark.parametrize("drift", DRIFTS, ids=list(DRIFTS))
def test_each_input_changed_alone_shows_in_the_plan_the_fingerprint_and_the_record(
    seed_worker2: Node, drift: str
) -> None:
    node = seed_worker2
    (node.tmp / "cache").mkdir()
    assert node.apply().returncode == 0
    DRIFTS[drift].before(node)
    shown, fingerprint, digest = observe(node)
    assert observe(node) == (shown, fingerprint, digest), "the same node observed again"

    DRIFTS[drift].change(node)
    shown_now, fingerprint_now, digest_now = observe(node)
    assert shown_now != shown, "plan does not show it"
    assert fingerprint_now != fingerprint, "the saved plan's fingerprint misses it"
    assert digest_now != digest, "the converged record's digest misses it"
