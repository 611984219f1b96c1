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
