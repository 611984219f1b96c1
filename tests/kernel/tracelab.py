"""A lab for the trace tests, up once per test module, and the plan-versus-kernel comparison.

Lab names start with kpt-<pid>-, so the session sweep treats a killed run's lab like any other
test namespace; the module fixture removes the lab also when a test fails.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from shell import NETNS_PREFIX

from kindplan.lab.topology import Lab, load
from kindplan.lab.trace import compare, lab_traces

_counter = itertools.count()


class TraceLab:
    def __init__(self, state: Path) -> None:
        self.name = f"{NETNS_PREFIX}{os.getpid()}-tr{next(_counter)}"
        self.state = state

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`kindplan ARGS`, with the lab's --name and --state-dir after a `lab` command."""
        if args[0] == "lab":
            args = (*args[:2], "--name", self.name, "--state-dir", str(self.state), *args[2:])
        return subprocess.run(
            [sys.executable, "-m", "kindplan.cli", *args],
            capture_output=True,
            text=True,
            check=False,
        )

    @property
    def lab(self) -> Lab:
        return load(self.name, self.state)

    def every_pod_pair_and_outside(self) -> tuple[list[str], int]:
        """disagreements() of every ordered pair of pods, and of every pod to the outside host."""
        pods = [p.name for p in self.lab.pods]
        parted, compared = [], 0
        for source in pods:
            for target in [*(p for p in pods if p != source), "outside"]:
                more, count = self.disagreements(source, target)
                parted += more
                compared += count
        return parted, compared

    def disagreements(
        self, source: str, target: str, port: int = 7000, proto: str = "tcp"
    ) -> tuple[list[str], int]:
        """Every point where plan and kernel part, and how many points were compared."""
        parted, compared = [], 0
        lab = self.lab
        for trace in lab_traces(lab, source, target, port, proto=proto):
            for verdict in compare(lab, trace):
                compared += 1
                if not verdict.same:
                    parted.append(
                        f"IPv{trace.version} {source} -> {target} {verdict.where}: "
                        f"plan {verdict.plan}; kernel {verdict.kernel} {verdict.detail}"
                    )
        return parted, compared

    def snapshot_with_pods(self, path: Path) -> Path:
        """The lab's snapshot with every pod (from the nodes' CNI caches), for kindplan trace:
        what `kindplan lab snapshot` prints (README, "The lab")."""
        out = self.run("lab", "snapshot")
        assert out.returncode == 0, out.stderr
        path.write_text(out.stdout)
        return path


@contextmanager
def lab_up(state: Path, *up_args: str) -> Iterator[TraceLab]:
    """A lab up for the duration (down also when a test fails)."""
    made = TraceLab(state)
    up = made.run("lab", "up", *up_args)
    try:
        assert up.returncode == 0, up.stderr
        yield made
    finally:
        made.run("lab", "down")
