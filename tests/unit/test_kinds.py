"""The table from an object's kind to its converter (kindplan/inputs/kinds.py): a document, a
list's items and a folder's files all go through it, so a new kind is one converter and one row;
a kind it does not hold is named in one line (exit 65), or skipped with a warning inside a list."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kubeapi import load

from kindplan.errors import InvalidInputError
from kindplan.inputs import kinds
from kindplan.inputs.converted import Converted
from kindplan.inputs.files import combine_directory
from kindplan.inputs.kinds import ITEMS, KINDS, parse_snapshot

SUBNETS = ("10.244.0.0/16",)
ALL_KINDS = (
    "ClusterSnapshot, List, NodeList, Node, NamespaceList, Namespace, PodList, Pod, "
    "NetworkPolicyList, NetworkPolicy"
)
ITEM_KINDS = "Node, Namespace, Pod, NetworkPolicy"


def kindplan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kindplan.cli", *args], capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize(
    ("kind", "named"),
    [
        ("Service", "'Service'"),
        (["NodeList"], "['NodeList']"),  # not even a string: no lookup may fail on it
        (None, "None"),
    ],
    ids=["unknown", "not-a-string", "missing"],
)
def test_an_unknown_kind_is_one_line_and_exit_65(tmp_path: Path, kind: Any, named: str) -> None:
    path = tmp_path / "in.json"
    doc = {"apiVersion": "v1", "items": []} | ({"kind": kind} if kind is not None else {})
    path.write_text(json.dumps(doc))
    result = kindplan("validate", str(path), "--pod-subnet", SUBNETS[0])
    assert (result.returncode, result.stdout) == (65, "")
    assert result.stderr == f"error: kind: {named} is not one of {ALL_KINDS}\n"


def test_an_item_of_unknown_kind_is_skipped_with_a_warning() -> None:
    doc = load("nodelist.json")
    doc["items"].insert(1, {"kind": "Service", "metadata": {"name": "web"}})
    doc["items"].insert(2, {"kind": {"not": "a string"}})
    loaded = parse_snapshot(json.dumps(doc).encode(), pod_subnets=SUBNETS)
    assert [n.name for n in loaded.snapshot.nodes] == [
        "kind-control-plane",
        "kind-worker",
        "kind-worker2",
    ]
    assert [str(w) for w in loaded.warnings] == [
        f"items[1]: kind 'Service' is not one of {ITEM_KINDS}; skipped",
        f"items[2]: kind {{'not': 'a string'}} is not one of {ITEM_KINDS}; skipped",
    ]


def add_machine(item: dict[str, Any], at: str, out: Converted, strict: bool) -> None:
    """A made-up kind: a node written flat, {name, ip, cidr}."""
    del strict
    index = len(out.document["nodes"])
    out.document["nodes"].append(
        {"name": item["name"], "internalIPs": [item["ip"]], "podCIDRs": [item["cidr"]]}
    )
    out.where[f"nodes[{index}]"] = at
    out.where[f"nodes[{index}].podCIDRs[0]"] = f"{at}.cidr"


MACHINE = {"kind": "Machine", "name": "m1", "ip": "172.18.0.9", "cidr": "10.244.9.0/24"}


def test_a_new_kind_is_one_converter_and_one_row(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(ITEMS, "Machine", add_machine)  # in a list
    monkeypatch.setitem(KINDS, "Machine", KINDS["Node"])  # and alone, as a Node is
    # In a list beside Nodes
    doc = load("nodelist.json")
    doc["items"].append(MACHINE)
    listed = parse_snapshot(json.dumps(doc).encode(), pod_subnets=SUBNETS).snapshot
    assert "m1" in [n.name for n in listed.nodes]
    # Alone, its places named without the list's items[0]
    alone = parse_snapshot(json.dumps(MACHINE).encode(), pod_subnets=SUBNETS).snapshot
    assert [(n.name, str(n.pod_cidrs[0])) for n in alone.nodes] == [("m1", "10.244.9.0/24")]
    wrong = {**MACHINE, "cidr": "10.245.0.0/24"}
    with pytest.raises(InvalidInputError, match=r"^cidr: 10\.245\.0\.0/24 is outside the cluster"):
        parse_snapshot(json.dumps(wrong).encode(), pod_subnets=SUBNETS)
    # In a folder, beside a node list
    (tmp_path / "a-nodes.json").write_text(json.dumps(load("nodelist.json")))
    (tmp_path / "b-machine.json").write_text(json.dumps(MACHINE))
    combined = parse_snapshot(combine_directory(str(tmp_path)), pod_subnets=SUBNETS).snapshot
    assert [n.name for n in combined.nodes] == [n.name for n in listed.nodes]
    # The messages name the kinds of the table
    with pytest.raises(InvalidInputError, match=r"is not one of .*, NetworkPolicy, Machine$"):
        parse_snapshot(b'{"kind": "Service"}')
    doc["items"].append({"kind": "Service"})
    warned = parse_snapshot(json.dumps(doc).encode(), pod_subnets=SUBNETS).warnings
    assert str(warned[-1]) == (
        f"items[4]: kind 'Service' is not one of {ITEM_KINDS}, Machine; skipped"
    )


def test_a_folder_takes_only_kinds_that_combine(tmp_path: Path) -> None:
    """A ClusterSnapshot carries its own cluster settings: it cannot be one of several files."""
    (tmp_path / "a.json").write_text(json.dumps(load("nodelist.json")))
    (tmp_path / "b.json").write_text('{"kind": "ClusterSnapshot"}')
    (tmp_path / "c.json").write_text('{"kind": "Service"}')
    with pytest.raises(InvalidInputError) as info:
        combine_directory(str(tmp_path))
    alone = f"with several files, each must be a Kubernetes list or object ({ITEM_KINDS})"
    assert [str(p) for p in info.value.problems] == [
        f"{tmp_path}/b.json: ClusterSnapshot: {alone}",
        f"{tmp_path}/c.json: kind 'Service': {alone}",
    ]
    assert kinds.objects_of([]) is None
