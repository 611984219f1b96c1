"""Saved plans: what save_plan writes, parse_plan reads back as the same value."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from kindplan.core.model import Options
from kindplan.errors import InvalidInputError
from kindplan.node.saved import SavedPlan, parse_plan, save_plan

SAVED = SavedPlan(
    fingerprint="sha256:0123",
    options=Options(node="k8s-guide-worker2", conf_dir="/tmp/cni", mtu=1450, adopt=True),
    netns="kp-worker2",
    snapshot=b"cluster:\n  podSubnets: [10.244.0.0/16]\n\xc3\xa9\x00",  # any bytes, kept exactly
    source="cluster.yaml",
    pod_subnets=["10.244.0.0/16, fd00:10:244::/56"],
    plan={"changes": [{"op": "add", "kind": "route"}], "empty": False},
)


def test_a_saved_plan_reads_back_as_the_same_value(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    save_plan(path, SAVED)
    assert parse_plan(path.read_bytes(), str(path)) == SAVED
    assert path.stat().st_mode & 0o777 == 0o600


def test_the_hosts_own_namespace_reads_back_as_none(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    save_plan(path, replace(SAVED, netns=None))
    assert parse_plan(path.read_bytes(), str(path)).netns is None


def test_a_saved_plan_without_its_netns_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    save_plan(path, SAVED)
    text = path.read_text().replace('"netns": "kp-worker2",', "")
    with pytest.raises(InvalidInputError, match=r"inputs\.netns: missing"):
        parse_plan(text.encode(), str(path))


def test_the_masquerade_options_are_saved_and_a_plan_from_before_them_still_reads(
    tmp_path: Path,
) -> None:
    path = tmp_path / "plan.json"
    options = replace(SAVED.options, masq_backend="nftables", no_masquerade=("192.0.2.0/24",))
    save_plan(path, replace(SAVED, options=options))
    assert parse_plan(path.read_bytes(), str(path)).options == options
    save_plan(path, SAVED)
    old = path.read_text().replace('"masq_backend": null,', "").replace('"no_masquerade": [],', "")
    assert "masq_backend" not in old
    assert parse_plan(old.encode(), str(path)).options == SAVED.options


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("masq_backend", "pf", "not a masquerade backend"),
        ("no_masquerade", ["10.0.0.1/8"], "host bits set"),
        ("no_masquerade", [7], "not a list of CIDRs"),
    ],
)
def test_bad_masquerade_options_in_a_saved_plan_are_refused(
    tmp_path: Path, field: str, value: object, message: str
) -> None:
    import json

    path = tmp_path / "plan.json"
    save_plan(path, SAVED)
    doc = json.loads(path.read_text())
    doc["inputs"]["options"][field] = value
    with pytest.raises(InvalidInputError, match=message):
        parse_plan(json.dumps(doc).encode(), str(path))
