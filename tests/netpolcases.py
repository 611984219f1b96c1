"""The NetworkPolicy cases of tests/netpol/cases: loaded, their expected matrices built the way the
upstream e2e suite builds them, and the difference printed as upstream prints it.

A case file holds `policies` and `probes` (or `steps`, each with `policies` and/or `labels`,
then `probes`). A probe names a port and protocol and its expected matrix: `reachable` is the
default of every cell (`.` or `X`, upstream's NewReachability(pods, true|false)), and each line
of `except` is `FROM -> TO MARK`, applied in order as upstream's Expect* calls are: `x/a` is a
pod, `x/*` a namespace's pods, `*/a` pod a of every namespace, `*` every pod. A pod's own cell is
not judged (upstream's ignoreLoopback). `{x/a}` in a policy stands for x/a's pod IP.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CASES = Path(__file__).parent / "netpol" / "cases"
MODEL = Path(__file__).parent / "netpol" / "model.yaml"
PODS = tuple(f"{ns}/{pod}" for ns in "xyz" for pod in "abc")
_RULE = re.compile(r"\s*(\S+)\s*->\s*(\S+)\s+([.X])\s*")
_IP = re.compile(r"\{([a-z0-9-]+/[a-z0-9-]+)\}")

Matrix = dict[tuple[str, str], bool]


@dataclass(frozen=True)
class Probe:
    port: int
    protocol: str
    expected: Matrix


@dataclass(frozen=True)
class Step:
    policies: list[dict[str, Any]] | None  # None: the step keeps the policies it had
    labels: tuple[tuple[str, tuple[str, ...]], ...]  # (target, KEY=VALUE...) for lab label
    probes: tuple[Probe, ...]


@dataclass(frozen=True)
class Case:
    name: str
    upstream: str | None  # the upstream test's It() text; None for a case the suite lacks
    steps: tuple[Step, ...]


def load_case(path: Path) -> Case:
    doc = yaml.safe_load(path.read_text())
    raw_steps = doc.get("steps", [doc])
    steps = []
    for raw in raw_steps:
        labels = tuple((line.split()[0], tuple(line.split()[1:])) for line in raw.get("labels", ()))
        probes = tuple(
            Probe(p["port"], p["protocol"], expected_matrix(p["reachable"], p.get("except", ())))
            for p in raw["probes"]
        )
        steps.append(Step(raw.get("policies"), labels, probes))
    return Case(path.stem, doc.get("upstream"), tuple(steps))


def all_cases() -> list[Case]:
    return [load_case(path) for path in sorted(CASES.glob("*.yaml"))]


def _matches(peer: str, pod: str) -> bool:
    if peer == "*":
        return True
    namespace, _, name = peer.partition("/")
    ns, _, pod_name = pod.partition("/")
    return namespace in ("*", ns) and name in ("*", pod_name)


def expected_matrix(default: str, rules: list[str] | tuple[str, ...]) -> Matrix:
    """Every cell `default`, then each rule over the cells it matches, in order."""
    matrix = {(src, dst): default == "." for src in PODS for dst in PODS}
    for rule in rules:
        match = _RULE.fullmatch(rule)
        if match is None:
            raise ValueError(f"{rule!r} is not `FROM -> TO MARK`")
        src_peer, dst_peer, mark = match.groups()
        for src, dst in matrix:
            if _matches(src_peer, src) and _matches(dst_peer, dst):
                matrix[src, dst] = mark == "."
    return matrix


def with_ips(policies: list[dict[str, Any]], ips: dict[str, str]) -> list[dict[str, Any]]:
    """The policies with every `{ns/name}` replaced by that pod's IP."""

    def fill(value: Any) -> Any:
        if isinstance(value, str):
            return _IP.sub(lambda m: ips[m.group(1)], value)
        if isinstance(value, list):
            return [fill(v) for v in value]
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        return value

    result: list[dict[str, Any]] = fill(policies)
    return result


def pretty(matrix: Matrix) -> str:
    """Upstream's truth table: `-` and the columns, then a row per source; . true, X false."""
    lines = ["\t".join(["-", *PODS])]
    lines += ["\t".join([s, *("." if matrix[s, d] else "X" for d in PODS)]) for s in PODS]
    return "\n".join(lines)


def wrong_cells(expected: Matrix, observed: Matrix) -> list[tuple[str, str]]:
    """The cells where they differ, a pod's own cell not judged (upstream's ignoreLoopback)."""
    return [k for k in expected if k[0] != k[1] and expected[k] != observed[k]]


def summary(expected: Matrix, observed: Matrix) -> str:
    """As upstream's PrintSummary: correct/incorrect counts, expected, observed, comparison."""
    wrong = wrong_cells(expected, observed)
    judged = len(expected) - len(PODS)
    comparison = {k: k not in wrong for k in expected}
    return (
        f"reachability: correct:{judged - len(wrong)}, incorrect:{len(wrong)}, "
        f"result={not wrong} (the {len(PODS)} pod->itself cells ignored)\n\n"
        f"expected:\n\n{pretty(expected)}\n\nobserved:\n\n{pretty(observed)}\n\n"
        f"comparison:\n\n{pretty(comparison)}\n"
    )
