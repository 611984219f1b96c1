"""Fuzz campaign: hostile NetworkPolicy inputs. A snapshot with namespaces, labelled pods with
ports, and policies using the whole v1 API is mutated where policy lives (a policy's metadata
or spec, a pod's labels or ports, a namespace's labels: values replaced by hostile ones, keys
deleted or added, items duplicated), then read, compiled for every node, written as nft
transactions and evaluated, and rendered through the real command line in-process. What must
hold for each:

- never a traceback: reading raises InvalidInputError or gives a snapshot; compiling, the nft
  text (check_table, the transaction) and the table evaluator raise nothing; `kindplan render`
  exits 0 or 65, its stderr only one-line `error:`/`warning:` messages;
- exit 65 only for what is bad input: a mutation inside a policy's spec never is (it is a
  warning and fails closed); a policy's metadata, pods' labels and ports may be;
- fail closed: a policy read with a problem has no rule in any node's table (no rule comment
  names it), and every local pod it selects is in the isolated sets of its directions.

Each input is given as a ClusterSnapshot or as a kubectl List of the four kinds (the List
converters). Size: KINDPLAN_FUZZ_EXAMPLES=N (default 120, a few seconds), as test_fuzz_cli.py.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
from builders import cluster_doc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kindplan.cli import main
from kindplan.core.model import Snapshot
from kindplan.core.policy.compile import compile_policy
from kindplan.core.policy.render import render_table
from kindplan.core.policy.select import selects
from kindplan.core.policy.tableeval import TableEvaluator
from kindplan.core.policytable import table_payload
from kindplan.errors import InvalidInputError

SUBNETS = ("10.244.0.0/16",)  # a List carries no cluster settings
EXAMPLES = int(os.environ.get("KINDPLAN_FUZZ_EXAMPLES") or 120)


def _pod(namespace: str, name: str, node: int, host: int, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "namespace": namespace,
        "name": name,
        "node": f"node-{node:04d}",
        "ips": [f"10.244.{node}.{host}"],
        "hostInterface": f"veth{namespace}{name}",
        "labels": labels,
        "ports": [
            {"name": "serve-80-tcp", "containerPort": 80, "protocol": "TCP"},
            {"name": "serve-81-udp", "containerPort": 81, "protocol": "UDP"},
            {"name": "dns", "containerPort": 53, "protocol": "UDP"},
        ],
    }


def _policy(namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"namespace": namespace, "name": name},
        "spec": spec,
    }


def base_doc() -> dict[str, Any]:
    doc = cluster_doc(3)
    doc["namespaces"] = [
        {"name": "x", "labels": {"ns": "x", "team": "a"}},
        {"name": "y", "labels": {"ns": "y"}},
    ]
    doc["pods"] = [
        _pod(ns, name, node, 10 + i, {"pod": name, "tier": "web" if name == "a" else "db"})
        for i, (ns, name, node) in enumerate(
            [("x", "a", 0), ("x", "b", 1), ("x", "c", 2), ("y", "a", 1), ("y", "b", 2)]
        )
    ]
    doc["networkPolicies"] = [
        _policy("x", "deny-all", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        _policy(
            "x",
            "allow-b",
            {
                "podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [
                    {
                        "from": [
                            {"podSelector": {"matchLabels": {"pod": "b"}}},
                            {
                                "namespaceSelector": {
                                    "matchExpressions": [
                                        {"key": "ns", "operator": "In", "values": ["y"]}
                                    ]
                                },
                                "podSelector": {
                                    "matchExpressions": [{"key": "tier", "operator": "Exists"}]
                                },
                            },
                        ],
                        "ports": [
                            {"port": "serve-80-tcp"},
                            {"port": 8000, "endPort": 8080},
                            {"protocol": "SCTP"},
                        ],
                    }
                ],
            },
        ),
        _policy(
            "y",
            "egress",
            {
                "podSelector": {
                    "matchExpressions": [{"key": "pod", "operator": "NotIn", "values": ["b"]}]
                },
                "policyTypes": ["Egress"],
                "egress": [
                    {"to": [{"ipBlock": {"cidr": "10.244.0.0/16", "except": ["10.244.1.0/24"]}}]},
                    {"ports": [{"port": "dns", "protocol": "UDP"}]},
                ],
            },
        ),
        _policy(
            "y", "empty-ingress", {"podSelector": {"matchLabels": {"pod": "b"}}, "ingress": []}
        ),
    ]
    return doc


HOSTILE: list[Any] = [
    None,
    True,
    0,
    -1,
    65536,
    70000,
    1.5,
    "",
    "-",
    "--",
    "a--b",
    "80",
    "TCP",
    "tcp",
    "ICMP",
    "Ingress",
    "Sideways",
    "In",
    "Near",
    "10.0.0.0/33",
    "10.244.0.5",
    "::ffff:10.0.0.0/104",
    "010.0.0.0/8",
    "0.0.0.0/0",
    "fd00::/8",
    "serve-80-tcp",
    "x" * 300,
    'a"; flush ruleset #',
    "ü",
    "bad key!",
    [],
    [None],
    [{}],
    {},
    {"": ""},
    {"a": None},
    {"matchLabels": 5},
    {"ipBlock": {"cidr": "0.0.0.0/0"}, "podSelector": {}},
    {"port": 80, "endPort": 10},
]
scalars = st.one_of(
    st.sampled_from(HOSTILE),
    st.integers(-(2**63), 2**63),
    # printable only: the document's own rule refuses a control character anywhere (bad input)
    st.text(
        st.characters(whitelist_categories=("L", "M", "N", "P", "S"), whitelist_characters=" "),
        max_size=20,
    ),
    st.floats(allow_nan=False, allow_infinity=False),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.text("abcfromtpx-", max_size=8), inner, max_size=3),
    ),
    max_leaves=6,
)


def _paths(doc: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path below `doc` (dict keys, list indexes), `doc` itself first."""
    found = [at]
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += _paths(value, (*at, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            found += _paths(value, (*at, i))
    return found


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        doc = doc[step]
    return doc


@st.composite
def mutated(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A base document mutated 1-3 times where policy lives; what was mutated ("spec" when
    every mutation was inside a policy's spec)."""
    doc = base_doc()
    areas: set[str] = set()
    for _ in range(draw(st.integers(1, 3))):
        root = draw(
            st.sampled_from(
                [("networkPolicies", draw(st.integers(0, 3)), "spec")] * 4
                + [("networkPolicies", draw(st.integers(0, 3)), "metadata")]
                + [("pods", draw(st.integers(0, 4)), f) for f in ("labels", "ports")]
                + [("namespaces", draw(st.integers(0, 1)), "labels")]
            )
        )
        path = (*root, *draw(st.sampled_from(_paths(_get(doc, root)))))
        areas.add(root[2] if root[0] == "networkPolicies" else root[0])
        parent, key = _get(doc, path[:-1]), path[-1]
        edit = draw(st.sampled_from(["replace", "replace", "delete", "add", "duplicate"]))
        target = _get(doc, path)
        if edit == "delete" and isinstance(parent, dict) and len(path) > 3:
            del parent[key]
        elif edit == "add" and isinstance(target, dict):
            target[
                draw(st.sampled_from(["from", "to", "ports", "x", "fromm", "except", "port"]))
            ] = copy.deepcopy(draw(values))
        elif edit == "duplicate" and isinstance(target, list) and target:
            target.append(copy.deepcopy(target[0]))
        else:
            parent[key] = copy.deepcopy(draw(values))
    return doc, "spec" if areas == {"spec"} else ",".join(sorted(areas))


def as_list(doc: dict[str, Any]) -> dict[str, Any]:
    """The (mutated) document as `kubectl get nodes,namespaces,pods,networkpolicies -A -o json`
    gives it: the List converters read the same policies, labels and ports."""
    items: list[Any] = [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": n["name"]},
            "spec": {"podCIDRs": n["podCIDRs"]},
            "status": {"addresses": [{"type": "InternalIP", "address": n["internalIPs"][0]}]},
        }
        for n in doc["nodes"]
    ]
    items += [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": ns["name"], "labels": ns.get("labels")},
        }
        for ns in doc["namespaces"]
    ]
    items += [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"namespace": p["namespace"], "name": p["name"], "labels": p.get("labels")},
            "spec": {"nodeName": p["node"], "containers": [{"name": "c", "ports": p.get("ports")}]},
            "status": {"phase": "Running", "podIPs": [{"ip": ip} for ip in p["ips"]]},
        }
        for p in doc["pods"]
    ]
    items += doc["networkPolicies"]
    return {"apiVersion": "v1", "kind": "List", "items": items}


def check_fails_closed(snapshot: Snapshot) -> None:
    for node in snapshot.nodes:
        table = compile_policy(snapshot, node)
        if table is None:
            assert not snapshot.policies
            continue
        render_table(table)
        table_payload(table, replacing=True)  # check_table: nothing ends its nft command
        TableEvaluator(table)
        rules = [r for c in table.chains for r in c.rules]
        sets = {s.name: s.elements for s in table.sets}
        for policy in snapshot.policies:
            if policy.problem is None:
                continue
            named = f'comment "{policy.namespace}/{policy.name} '
            assert not any(named in r for r in rules), f"{policy.key} admits: {policy.problem}"
            for pod in snapshot.pods:
                if pod.node != node.name or not selects(policy, pod):
                    continue
                for direction in policy.policy_types:
                    isolated = sets[f"{direction.lower()}-isolated-v4"]
                    assert all(str(ip) in isolated for ip in pod.ips), (pod.key, direction)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(case=mutated(), form=st.sampled_from(["snapshot", "list"]))
def test_hostile_policy_inputs(
    case: tuple[dict[str, Any], str],
    form: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from kindplan.inputs.kinds import parse_snapshot

    doc, area = case
    data = json.dumps(doc if form == "snapshot" else as_list(doc)).encode()
    loaded, refused = None, None
    try:
        loaded = parse_snapshot(data, pod_subnets=SUBNETS if form == "list" else ())
    except InvalidInputError as e:
        refused = e
    if refused is not None:
        assert area != "spec", f"a policy's spec made bad input: {refused}"
        assert all("\n" not in str(p) for p in refused.problems)
    if loaded is not None:
        assert all("\n" not in str(w) for w in loaded.warnings)
        check_fails_closed(loaded.snapshot)
    path = tmp_path / "snapshot.json"
    path.write_bytes(data)
    out = tmp_path / "out"
    capsys.readouterr()
    subnet = ["--pod-subnet", SUBNETS[0]] if form == "list" else []
    status = main(["render", str(path), *subnet, "--node", "node-0001", "--out", str(out)])
    err = capsys.readouterr().err
    assert status == (65 if loaded is None else 0), err
    assert all(line.startswith(("error: ", "warning: ")) for line in err.splitlines()), err


def test_the_base_document_is_fully_understood() -> None:
    """The campaign starts from policies kindplan reads without a warning."""
    from kindplan.inputs.kinds import parse_snapshot

    loaded = parse_snapshot(json.dumps(base_doc()).encode())
    assert loaded.warnings == ()
    assert [p.problem for p in loaded.snapshot.policies] == [None] * 4
    check_fails_closed(loaded.snapshot)
    listed = parse_snapshot(json.dumps(as_list(base_doc())).encode(), pod_subnets=SUBNETS)
    assert listed.warnings == ()
    assert listed.snapshot.policies == loaded.snapshot.policies
    assert [(p.key, p.labels, p.ports) for p in listed.snapshot.pods] == [
        (p.key, p.labels, p.ports) for p in loaded.snapshot.pods
    ]
