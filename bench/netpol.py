"""bench/run.py's NetworkPolicy figures: 5,000 nodes x 30 pods and 1,000 policies, one node's
policy table: its compile, the transaction's size, the first apply, a converged round, and a
one-label change (set elements only).

    sudo .venv/bin/python bench/netpol.py [--nodes 5000] [--pods 30] [--policies 1000]

The cluster is generated (seeded): 200 namespaces labelled by name, team (20) and env; pods
labelled app (50), tier and pod, serving named ports http (TCP 8080), metrics (TCP 9090), and
dns (UDP 53) for ns-000's app-0 pods (the cluster's DNS, ~15 pods); policies of five kinds, 200
each: a namespace's default deny of both directions that lets DNS out by its port's name
(resolved over every pod of the cluster), allow from pods by label on a named port, allow from
the namespaces of a team, an ipBlock with except to a port range (endPort), and (for tier=web
pods) a namespace and pod selector in one peer on a named port. Each namespace's pods are
spread over the nodes (30 pods a node from 200 namespaces: most policies select none of a
node's pods).

The table is compile_policy's when this tree has it and its snapshot schema takes the policies;
until then (the "stand-in" source) it is built here in the shape a policy table has (sets of
selected pods, of peers, of address . protocol . port; one rule per policy rule, with its
comment), so that the node's side (nft, the diff, the generation) is measured all the same.
The figures say which source they come from.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from builders import cluster_doc  # noqa: E402

from kindplan.core.model import Snapshot  # noqa: E402
from kindplan.core.nfttable import NftChain, NftSet, NftTable  # noqa: E402

BASE = "type filter hook forward priority filter; policy accept;"
PORTS = {"http": (8080, "TCP"), "metrics": (9090, "TCP"), "dns": (53, "UDP")}


def policy_doc(nodes: int, pods: int, policies: int, seed: int = 24) -> dict[str, Any]:
    """A ClusterSnapshot document with namespaces, labelled pods and NetworkPolicies."""
    rng = random.Random(seed)
    doc = cluster_doc(nodes)
    namespaces = [
        {
            "name": f"ns-{i:03d}",
            "labels": {
                "ns": f"ns-{i:03d}",
                "team": f"t{i % 20}",
                "env": "prod" if i % 3 else "dev",
            },
        }
        for i in range(200)
    ]
    doc["namespaces"] = namespaces
    doc["pods"] = []
    for n, node in enumerate(doc["nodes"]):
        cidr = ipaddress.ip_network(node["podCIDRs"][0])
        for k in range(pods):
            ns = namespaces[rng.randrange(200)]["name"]
            name = f"p{n:04d}-{k:02d}"
            app = rng.randrange(50)
            doc["pods"].append(
                {
                    "namespace": ns,
                    "name": name,
                    "node": node["name"],
                    "ips": [str(cidr.network_address + 2 + k)],
                    "labels": {
                        "app": f"app-{app}",
                        "tier": rng.choice(("web", "api", "db")),
                        "pod": name,
                    },
                    "ports": [
                        {"name": p, "containerPort": port, "protocol": proto}
                        for p, (port, proto) in PORTS.items()
                        if p != "dns" or (app == 0 and ns == "ns-000")  # the cluster's DNS
                    ],
                }
            )
    doc["networkPolicies"] = [_policy(i, rng) for i in range(policies)]
    return doc


def _policy(i: int, rng: random.Random) -> dict[str, Any]:
    ns = f"ns-{i // 5 % 200:03d}"
    kind = i % 5
    app = {"matchLabels": {"app": f"app-{rng.randrange(50)}"}}
    web = {"matchLabels": {"tier": "web"}}  # the fifth kind: selects a third of a namespace
    rules: list[dict[str, Any]] = [
        [],  # default deny
        [
            {
                "from": [{"podSelector": {"matchLabels": {"app": f"app-{rng.randrange(50)}"}}}],
                "ports": [{"port": "http", "protocol": "TCP"}],
            }
        ],
        [{"from": [{"namespaceSelector": {"matchLabels": {"team": f"t{rng.randrange(20)}"}}}]}],
        [
            {
                "from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                "ports": [{"port": 8000, "endPort": 8080, "protocol": "TCP"}],
            }
        ],
        [
            {
                "from": [
                    {
                        "namespaceSelector": {"matchLabels": {"env": "prod"}},
                        "podSelector": {"matchLabels": {"tier": "api"}},
                    }
                ],
                "ports": [{"port": "metrics", "protocol": "TCP"}],
            }
        ],
    ][kind]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"namespace": ns, "name": f"pol-{i:04d}"},
        "spec": {
            "podSelector": {} if kind in (0, 2) else web if kind == 4 else app,
            "policyTypes": ["Ingress", "Egress"] if kind == 0 else ["Ingress"],
            "ingress": rules,
            # the default deny of both directions lets DNS out, by its port's name: resolved
            # over every pod of the cluster that declares it
            **({"egress": [{"ports": [{"port": "dns", "protocol": "UDP"}]}]} if kind == 0 else {}),
        },
    }


# -- the table: compile_policy's, or the stand-in -------------------------------------------------


_BARE: list[Snapshot] = []  # a tree before the policy schema: its nodes only, loaded once


def load(doc: dict[str, Any]) -> tuple[Snapshot, bool]:
    """The snapshot, and whether its policies are in it (this tree's schema takes them)."""
    from kindplan.errors import KindplanError
    from kindplan.inputs.kinds import parse_snapshot

    if not _BARE:
        try:
            return parse_snapshot(json.dumps(doc).encode()).snapshot, True
        except KindplanError:  # the schema does not know namespaces, labels or policies yet
            bare = {k: v for k, v in doc.items() if k not in ("namespaces", "networkPolicies")}
            bare["pods"] = []
            _BARE.append(parse_snapshot(json.dumps(bare).encode()).snapshot)
    return _BARE[0], False


def table_for(doc: dict[str, Any], node: str) -> tuple[NftTable | None, str, float]:
    """The node's table, where it came from, and the seconds its compile took."""
    from kindplan.core.policy.compile import compile_policy

    snapshot, loaded = load(doc)
    started = time.perf_counter()
    table = compile_policy(snapshot, snapshot.node(node))
    took = time.perf_counter() - started
    if loaded and table is not None:
        return table, "compile_policy", took
    started = time.perf_counter()
    table = stand_in(doc, node)
    return (
        table,
        f"stand-in (compile_policy: {took * 1000:.2f} ms, a stub)",
        time.perf_counter() - started,
    )


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


class _Cluster:
    def __init__(self, doc: dict[str, Any]) -> None:
        self.ns_labels = {n["name"]: n["labels"] for n in doc["namespaces"]}
        self.by_ns: dict[str, list[dict[str, Any]]] = {n: [] for n in self.ns_labels}
        for pod in doc["pods"]:
            self.by_ns[pod["namespace"]].append(pod)

    def peers(self, peer: dict[str, Any], ns: str) -> set[str]:
        if "ipBlock" in peer:
            block = ipaddress.ip_network(peer["ipBlock"]["cidr"])
            nets = [block]
            for cut in map(ipaddress.ip_network, peer["ipBlock"].get("except", ())):
                nets = [
                    r for n in nets for r in (n.address_exclude(cut) if cut.subnet_of(n) else [n])
                ]
            return {str(n) for n in nets}
        spaces = [ns]
        if "namespaceSelector" in peer:
            chosen = peer["namespaceSelector"]
            spaces = [n for n, labels in self.ns_labels.items() if _matches(chosen, labels)]
        pods = peer.get("podSelector", {})
        return {p["ips"][0] for n in spaces for p in self.by_ns[n] if _matches(pods, p["labels"])}


def stand_in(doc: dict[str, Any], node: str) -> NftTable | None:
    """The table in the shape a policy table has, for `node`'s pods (see the module's words)."""
    cluster = _Cluster(doc)
    local = [p for p in doc["pods"] if p["node"] == node]
    sets: list[NftSet] = []
    rules: list[str] = []
    isolated: set[str] = set()
    for policy in doc["networkPolicies"]:
        meta, spec = policy["metadata"], policy["spec"]
        chosen = [
            p
            for p in local
            if p["namespace"] == meta["namespace"] and _matches(spec["podSelector"], p["labels"])
        ]
        if not chosen:
            continue
        name = meta["name"]
        isolated |= {p["ips"][0] for p in chosen}
        sets.append(NftSet(f"{name}-pods", "ipv4_addr", (), frozenset(p["ips"][0] for p in chosen)))
        for j, rule in enumerate(spec["ingress"]):
            rules.append(
                _rule(cluster, name, j, rule, chosen=chosen, ns=meta["namespace"], sets=sets)
            )
    if not isolated:
        return None
    sets.append(NftSet("isolated", "ipv4_addr", (), frozenset(isolated)))
    forward = (
        'ct state established,related accept comment "replies"',
        'ip daddr @isolated jump ingress comment "isolated pods"',
    )
    ingress = (*rules, 'drop comment "isolated: no rule admits it"')
    chains = (NftChain("forward", BASE, forward), NftChain("ingress", "", ingress))
    return NftTable("inet", "kindplan-policy", tuple(sorted(sets, key=lambda s: s.name)), chains)


def _rule(
    cluster: _Cluster,
    name: str,
    j: int,
    rule: dict[str, Any],
    *,
    chosen: list[dict[str, Any]],
    ns: str,
    sets: list[NftSet],
) -> str:
    peers: set[str] = set()
    for peer in rule["from"]:
        peers |= cluster.peers(peer, ns)
    interval = any("ipBlock" in peer for peer in rule["from"])
    sets.append(
        NftSet(f"{name}-r{j}", "ipv4_addr", ("interval",) if interval else (), frozenset(peers))
    )
    match = f"ip saddr @{name}-r{j}"
    comment = f'comment "{ns}/{name} rule {j}"'
    if not rule.get("ports"):
        return f"ip daddr @{name}-pods {match} accept {comment}"
    ports: set[str] = set()
    for port in rule["ports"]:
        for pod in chosen:
            number, proto = PORTS.get(port["port"], (port["port"], port["protocol"]))
            span = f"{number}-{port['endPort']}" if "endPort" in port else str(number)
            ports.add(f"{pod['ips'][0]} . {proto.lower()} . {span}")
    flags = ("interval",) if any("-" in p for p in ports) else ()
    sets.append(
        NftSet(
            f"{name}-r{j}-ports", "ipv4_addr . inet_proto . inet_service", flags, frozenset(ports)
        )
    )
    return f"{match} ip daddr . meta l4proto . th dport @{name}-r{j}-ports accept {comment}"


def relabelled(doc: dict[str, Any], node: str) -> dict[str, Any]:
    """`doc` with one label changed: the first pod of another node in a namespace labelled
    env=prod whose tier is not api becomes tier=api, so that it joins the peers of every policy
    of the fifth kind (namespaceSelector env=prod with podSelector tier=api) on `node`."""
    changed = json.loads(json.dumps(doc))
    prod = {n["name"] for n in doc["namespaces"] if n["labels"]["env"] == "prod"}
    for pod in changed["pods"]:
        if pod["node"] != node and pod["namespace"] in prod and pod["labels"]["tier"] != "api":
            pod["labels"]["tier"] = "api"
            return changed
    raise RuntimeError("no pod to relabel")


# -- the figures --------------------------------------------------------------------------------


def bench_netpol(
    nodes: int, pods: int, policies: int, bench_ns: Callable[[], AbstractContextManager[str]]
) -> dict[str, Any]:
    """The figures of one node (node-0000) in a fresh namespace."""
    from kindplan.core.policychanges import policy_payload
    from kindplan.core.policydiff import diff_policy
    from kindplan.node.netns import enter_netns
    from kindplan.node.nftables import Nftables

    doc = policy_doc(nodes, pods, policies)
    node = "node-0000"
    table, source, compile_s = table_for(doc, node)
    assert table is not None
    r: dict[str, Any] = {
        "source": source,
        "compile_s": compile_s,
        "sets": len(table.sets),
        "rules": sum(len(c.rules) for c in table.chains),
        "elements": sum(len(s.elements) for s in table.sets),
    }
    with bench_ns() as ns, enter_netns(ns):
        nft = Nftables()
        r |= _write(nft, table, diff_policy, policy_payload)
        r |= _converged(nft, table, diff_policy)
        changed, _, _ = table_for(relabelled(doc, node), node)
        assert changed is not None and changed.structure() == table.structure()
        assert changed != table, "the label changed no element of this node's table"
        r |= {f"label_{k}": v for k, v in _write(nft, changed, diff_policy, policy_payload).items()}
    return r


def _states(want: NftTable | None, nft: Any) -> tuple[Any, Any]:
    from dataclasses import replace

    from kindplan.core.model import CniConfig, CniSettings, DesiredState, ObservedState

    read = nft.read_policy()
    desired = DesiredState(
        "node-0000", (), (), (), CniConfig(CniSettings(), 1500, ()), (), policy=want
    )
    observed = replace(
        ObservedState((), (), (), (), None),
        policy=read.table,
        policy_unread=read.unread,
        policy_foreign=read.foreign,
    )
    return desired, observed


def _write(nft: Any, table: NftTable, diff: Any, payload_of: Any) -> dict[str, Any]:
    """Observe, diff and apply `table`: the transaction's size and the time from observing to
    committed."""
    started = time.perf_counter()
    (change,), _ = diff(*_states(table, nft))
    payload = payload_of(change)
    sending = time.perf_counter()
    nft.run(payload)
    took = time.perf_counter() - started
    nft_s = time.perf_counter() - sending
    added = len(getattr(change, "add", ()))
    deleted = len(getattr(change, "delete", ()))
    return {
        "apply_s": took,
        "nft_s": nft_s,  # of which nft -f (the rest: observe, diff, payload)
        "tx_bytes": len(payload.encode()),
        "tx_lines": payload.count("\n"),
        "change": type(change).__name__,
        "elements_added": added,
        "elements_deleted": deleted,
    }


def _converged(nft: Any, table: NftTable, diff: Any) -> dict[str, Any]:
    """A full read of a fresh runner (one listing, parsed, diffed: a one-shot apply whose
    converged record does not match), a one-shot apply's read that does (the generation alone,
    node/observe.py's observed_digest), and a watch round (the runner kept: the generation
    held), all finding nothing to do."""
    from kindplan.node.nftables import Nftables

    fresh = Nftables()
    started = time.perf_counter()
    changes, _ = diff(*_states(table, fresh))
    one_shot = time.perf_counter() - started
    assert changes == [], changes
    stamp = Nftables()
    started = time.perf_counter()
    assert stamp.policy_generation().generation is not None
    record = time.perf_counter() - started
    nft.read_policy()  # the write's own read back, as the apply's verification
    before = nft.listings + nft.transactions
    started = time.perf_counter()
    changes, _ = diff(*_states(table, nft))
    watch = time.perf_counter() - started
    assert changes == []
    return {
        "one_shot_converged_s": one_shot,
        "record_converged_s": record,
        "record_converged_processes": stamp.listings + stamp.transactions,
        "watch_converged_s": watch,
        "watch_converged_processes": nft.listings + nft.transactions - before,
    } | _foreign(nft, table, diff)


FOREIGN = "add table ip kube-proxy-like\nadd set ip kube-proxy-like svc { type ipv4_addr; }\n"
FOREIGN_ROUNDS = 20


def _foreign(nft: Any, table: NftTable, diff: Any) -> dict[str, Any]:
    """Watch rounds while another component commits to a table of its own (kube-proxy's
    nftables mode commits every sync): one round after one such commit, then FOREIGN_ROUNDS
    rounds with a process committing in a loop (a commit every 10 ms) the whole time."""
    import subprocess

    subprocess.run(["nft", "-f", "-"], input=FOREIGN, text=True, check=True)
    before = nft.listings
    started = time.perf_counter()
    changes, _ = diff(*_states(table, nft))
    one = time.perf_counter() - started
    one_listings = nft.listings - before
    assert changes == []
    loop = (
        "i=0; while :; do i=$((i+1)); "
        'echo "add element ip kube-proxy-like svc { 10.96.$((i/250%250)).$((i%250+1)) }" '
        "| nft -f - || exit 1; sleep 0.01; done"
    )
    committer = subprocess.Popen(["sh", "-c", loop])  # in this namespace, ended below by pid
    try:
        time.sleep(0.5)
        rounds = []
        for _ in range(FOREIGN_ROUNDS):
            started = time.perf_counter()
            changes, _ = diff(*_states(table, nft))
            rounds.append(time.perf_counter() - started)
            assert changes == []
            time.sleep(0.05)
    finally:
        committer.kill()
        committer.wait()
    return {
        "watch_foreign_s": one,
        "watch_foreign_listings": one_listings,
        "watch_loop_mean_s": sum(rounds) / len(rounds),
        "watch_loop_max_s": max(rounds),
        "watch_loop_rounds": len(rounds),
        "watch_loop_listings": nft.listings - before - one_listings,
    }


def report_rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    return [
        (
            "netpol: one node's table",
            f"{r['sets']} sets, {r['rules']} rules",
            f"{r['elements']} elements",
            r["source"],
        ),
        ("netpol: compile", f"{r['compile_s'] * 1000:.0f} ms", "", ""),
        (
            "netpol: first apply (one transaction)",
            f"{r['apply_s']:.3f} s (nft {r['nft_s']:.3f} s)",
            f"{r['tx_bytes'] / 1e6:.1f} MB",
            f"{r['tx_lines']} lines",
        ),
        (
            "netpol: converged, one-shot, record matches (generation)",
            f"{r['record_converged_s'] * 1000:.1f} ms",
            f"{r['record_converged_processes']} processes",
            "",
        ),
        (
            "netpol: full read (nft list, parse, diff)",
            f"{r['one_shot_converged_s'] * 1000:.0f} ms",
            "",
            "",
        ),
        (
            "netpol: converged, watch round",
            f"{r['watch_converged_s'] * 1000:.1f} ms",
            f"{r['watch_converged_processes']} processes",
            "",
        ),
        (
            "netpol: converged, watch round after a foreign commit",
            f"{r['watch_foreign_s'] * 1000:.1f} ms",
            f"{r['watch_foreign_listings']} listings",
            "",
        ),
        (
            f"netpol: {r['watch_loop_rounds']} watch rounds, foreign commits every 10 ms",
            f"mean {r['watch_loop_mean_s'] * 1000:.1f} ms",
            f"max {r['watch_loop_max_s'] * 1000:.1f} ms",
            f"{r['watch_loop_listings']} listings",
        ),
        (
            "netpol: one label changed",
            f"{r['label_apply_s'] * 1000:.0f} ms (nft {r['label_nft_s'] * 1000:.0f} ms)",
            f"+{r['label_elements_added']} -{r['label_elements_deleted']} elements",
            f"{r['label_tx_bytes']} bytes, {r['label_change']}",
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--pods", type=int, default=30)
    parser.add_argument("--policies", type=int, default=1000)
    args = parser.parse_args()
    from run import bench_ns  # bench/run.py's namespaces: kpb-<pid>-<n>, removed at the end

    r = bench_netpol(args.nodes, args.pods, args.policies, bench_ns)
    print(json.dumps(r, indent=2))
    for row in report_rows(r):
        print("  ".join(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
