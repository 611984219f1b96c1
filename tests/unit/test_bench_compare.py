"""bench/compare.py: which figures it flags, and the run.py functions it calls."""

from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


compare = _load("compare")


@pytest.mark.parametrize(
    ("key", "before", "after", "flag"),
    [
        ("apply IPv4 full_apply_s", 1.00, 1.10, ""),  # 10 % is within
        ("apply IPv4 full_apply_s", 1.00, 1.11, "WORSE by 11 %"),
        ("apply IPv4 full_apply_s", 1.00, 0.50, ""),
        ("apply IPv4 ip_batch_s", 1.00, 2.00, "(baseline)"),  # iproute2's, not kindplan's
        ("writes IPv4 routes_per_s", 10_000, 9_000, "WORSE by 11 %"),  # fewer is worse
        ("writes IPv4 routes_per_s", 10_000, 20_000, ""),
        ("apply IPv4 converged_writes", 0, 1, "DIFFERS"),
        ("apply dual-stack routes", 9998, 9998, ""),
        ("apply IPv4 idle_cpu_s", 0.07, 0.09, ""),  # two 10 ms ticks
        ("apply IPv4 idle_cpu_s", 0.07, 0.10, "WORSE by 43 %"),
        ("instructions 5000", 176e6, 200e6, "WORSE by 14 %"),
    ],
)
def test_verdict(key: str, before: float, after: float, flag: str) -> None:
    assert compare.verdict(key, before, after) == flag


def test_the_table_takes_the_median_of_the_rounds_and_counts_the_flags() -> None:
    record: dict[str, Any] = {
        "measurements": {
            "before": {
                "scaling": [{"50": 1.0e-4, "5000": 0.010}],
                "instructions": [{"50": 2.0e6, "5000": 176e6}],
            },
            "after": {
                "scaling": [{"50": 1.0e-4, "5000": 0.020}, {"50": 5e-4, "5000": 0.011}],
                "instructions": [{"50": 2.0e6, "5000": 250e6}],
            },
        }
    }
    rows, flagged = compare.table(record)
    assert rows[1:] == [
        ("scaling 50", "0.10 ms", "0.30 ms", "3.00", "WORSE by 200 % (instructions within 10 %)"),
        ("scaling 5000", "10.00 ms", "15.50 ms", "1.55", "WORSE by 55 %"),
        ("instructions 50", "2.0M", "2.0M", "1.00", ""),
        ("instructions 5000", "176.0M", "250.0M", "1.42", "WORSE by 42 %"),
    ]
    assert flagged == 3


def test_the_groups_call_run_py_as_its_main_does() -> None:
    """compare.py calls these with positional arguments; a tree before 16 has them too."""
    sys.path.insert(0, str(ROOT / "tests"))
    run = _load("run")
    expected = {
        "bench_apply": ["work", "nodes", "dual", "runs"],
        "bench_writes": ["nodes", "runs", "dual"],
        "bench_startup": ["work", "runs"],
        "bench_scaling": ["sizes", "runs"],
        "bench_instructions": ["sizes"],
    }
    found = {
        name: list(inspect.signature(getattr(run, name)).parameters)[: len(params)]
        for name, params in expected.items()
    }
    assert found == expected
