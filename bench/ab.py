"""One figure of bench/run.py for two trees of kindplan, taking turns: is a cache or a hand-written
part worth its code?

    sudo .venv/bin/python bench/ab.py FIGURE TREE_A TREE_B... [--nodes 5000] [--v4] [--rounds 7]

FIGURE is full-apply, converged-apply, one-added, round (Loop.round, in-process) or render
(start-up on the seed lab). A tree is a folder holding kindplan/, templates/ and schemas/ (a
checkout, or `git archive REV | tar -x -C DIR`). The trees take turns, the first one alternating,
so that both meet the same stretches of a busy machine; each prints the median of its turns and
every turn.
--instructions counts a whole process's instructions with valgrind's callgrind instead of timing
it (not the round, which runs in-process): a count the machine's noise cannot move, though it
leaves out the kernel's share (the route writes themselves).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import run
from builders import cluster_doc

ROUND_CODE = (
    "import json, sys; sys.path[:0] = sys.argv[1:3]; import run; from pathlib import Path; "
    "print(json.dumps(run.bench_round(sys.argv[3], Path(sys.argv[4]), Path(sys.argv[5]), "
    "int(sys.argv[6]), sys.argv[7] == 'dual')))"
)


def use(tree: Path) -> None:
    """Make the processes started from now on run `tree`'s kindplan."""
    os.environ["PYTHONPATH"] = str(tree)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "figure", choices=["full-apply", "converged-apply", "one-added", "round", "render"]
    )
    parser.add_argument("trees", type=Path, nargs="+", help="the first is the reference")
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--v4", action="store_true", help="IPv4 only (default: dual-stack)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--instructions", action="store_true", help="callgrind counts, not time")
    args = parser.parse_args()
    trees = [tree.resolve() for tree in args.trees]
    dual = not args.v4
    times: dict[Path, list[float]] = {tree: [] for tree in trees}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.chdir(work)  # python -m puts the working directory first: it must hold no kindplan
        snapshot = work / "cluster.json"
        snapshot.write_text(json.dumps(cluster_doc(args.nodes, v6=dual)))
        (work / "plus1.json").write_text(json.dumps(cluster_doc(args.nodes + 1, v6=dual)))
        measure = Figure(args.figure, work, snapshot, dual, trees)
        measure.instructions = args.instructions
        for turn in range(args.rounds):
            for tree in trees if turn % 2 == 0 else trees[::-1]:
                use(tree)
                times[tree].append(measure(tree))
        measure.close()
    unit, scale = ("M instructions", 1e-6) if args.instructions else ("ms", 1000)
    for tree in trees:
        turns = " ".join(f"{t * scale:.1f}" for t in times[tree])
        print(f"{tree}: median {statistics.median(times[tree]) * scale:.1f} {unit}  ({turns})")
    reference = statistics.median(times[trees[0]])
    for tree in trees[1:]:
        ratio = statistics.median(times[tree]) / reference
        family = "dual-stack" if dual else "IPv4"
        print(
            f"{args.figure} {family} {args.nodes} nodes: "
            f"{tree.name} / {trees[0].name} = {ratio:.3f}"
        )
    return 0


class Figure:
    """One figure of bench/run.py for a given tree: call it with the tree."""

    def __init__(self, name: str, work: Path, snapshot: Path, dual: bool, trees: list[Path]):
        self.name, self.work, self.snapshot, self.dual = name, work, snapshot, dual
        self.ns: str | None = None
        self._ns = None
        if name in ("converged-apply", "round"):
            self._ns = run.node_ns(dual)
            self.ns = self._ns.__enter__()
            for tree in trees:  # each tree converges the node and keeps its own record
                use(tree)
                run.run_timed(run.apply_cmd(snapshot, self.ns, self.state(tree)))
        self.count = 0
        self.instructions = False

    def process(self, cmd: list[str]) -> float:
        """The seconds, or with --instructions the instructions, of one process."""
        if not self.instructions:
            return run.run_timed(cmd)[0]
        callgrind = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
        out = subprocess.run([*callgrind, *cmd], capture_output=True, text=True, check=True).stderr
        found = re.search(r"Collected : (\d+)", out)
        assert found, out[-500:]
        return float(found.group(1))

    def state(self, tree: Path) -> Path:
        return self.work / f"state-{abs(hash(tree))}"

    def __call__(self, tree: Path) -> float:
        self.count += 1
        if self.name == "full-apply":
            with run.node_ns(self.dual) as ns:
                return self.process(run.apply_cmd(self.snapshot, ns, self.work / f"w{self.count}"))
        if self.name == "one-added":  # a node converged with the snapshot, then one node more
            with run.node_ns(self.dual) as ns:
                state = self.work / f"w{self.count}"
                run.run_timed(run.apply_cmd(self.snapshot, ns, state))
                return self.process(run.apply_cmd(self.work / "plus1.json", ns, state))
        if self.name == "converged-apply":
            assert self.ns is not None
            return self.process(run.apply_cmd(self.snapshot, self.ns, self.state(tree)))
        if self.name == "round":
            here = str(Path(__file__).parent)
            out = subprocess.run(
                [sys.executable, "-c", ROUND_CODE, str(tree), here, str(self.ns),
                 str(self.snapshot), str(self.state(tree)), "15", "dual" if self.dual else "v4"],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            return float(json.loads(out)["round_s"])
        seed = run.ROOT / "fixtures" / "seed-lab" / "snapshot.yaml"
        if self.name == "render":
            cmd = [*run.KINDPLAN, "render", str(seed), "--node", "k8s-guide-worker2", "--out",
                   str(self.work / "r")]  # fmt: skip
            return self.process(cmd)
        raise SystemExit(f"figure {self.name}: not measured here")

    def close(self) -> None:
        if self._ns is not None:
            self._ns.__exit__(None, None, None)


if __name__ == "__main__":
    sys.exit(main())
