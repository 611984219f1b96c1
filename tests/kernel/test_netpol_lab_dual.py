"""The upstream cases in a dual-stack policy lab: every pod has an IPv4 and an IPv6 address, the
nodes one `inet kindplan-policy` table for both, and a pair counts as reachable only when it is
reachable in both families (`lab probe`'s combined matrix), so a case passes only if IPv6 is
enforced exactly as IPv4 is. The cases with an ipBlock are left to the IPv4 lab: their blocks
name IPv4 addresses, which say nothing of IPv6 peers."""

from __future__ import annotations

import json
from collections.abc import Iterator

import netpolcases
import pytest
from test_netpol_lab import PolicyLab, run_case

pytestmark = pytest.mark.root

CASES = [
    c for c in netpolcases.all_cases() if "ipBlock" not in json.dumps([s.policies for s in c.steps])
]


@pytest.fixture(scope="module")
def dual_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PolicyLab]:
    made = PolicyLab(tmp_path_factory.mktemp("netpol6") / "labs")
    made.name += "6"
    up = made.run("up", "--cluster", str(netpolcases.MODEL), "--dual-stack")
    assert up.returncode == 0, up.stdout + up.stderr
    yield made
    made.run("down")


def test_every_pod_has_both_families(dual_lab: PolicyLab) -> None:
    families = {p.label: tuple(sorted(":" in ip for ip in p.ips)) for p in dual_lab.pods()}
    assert families == dict.fromkeys(netpolcases.PODS, (False, True))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_case_in_both_families(dual_lab: PolicyLab, case: netpolcases.Case) -> None:
    failures = run_case(dual_lab, case)
    assert not failures, "\n".join(failures)
