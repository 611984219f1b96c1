"""Two source trees' bench/run.py figures side by side, measured in turns in one run.

    sudo .venv/bin/python bench/compare.py BEFORE AFTER [--nodes 5000] [--runs 3] [--rounds 1]
        [--only apply,writes,startup,scaling,instructions] [--quick] [--out FILE]

For example, against a commit: git worktree add --detach ../before <commit>, then
sudo .venv/bin/python bench/compare.py ../before . (as root: network namespaces).

Each tree is measured by its own bench/run.py, in processes whose working directory and
PYTHONPATH are that tree, so that each imports its own kindplan (the module paths may differ
between the trees) with the same interpreter. The groups of figures take turns: BEFORE then
AFTER for one, AFTER then BEFORE for the next, so that a slow stretch of the machine falls on
both trees. The compile + diff scaling is timed at 50 and --nodes nodes; its instruction count
(with one hash seed, so that it repeats) runs in the first round only. Prints every figure
with AFTER/BEFORE and flags those more than 10 % worse; the measurements go to --out as they
come. The defaults take about 10 minutes on 2 cores (5 a tree), more on a busy machine.

A group calls run.py's figure functions as its main() does. The command line of run.py is too
coarse for a budget (dd0e098's has only --out and --quick: 11 minutes a tree, or 1,000 nodes),
while bench_apply, bench_writes, bench_scaling, bench_instructions and bench_startup have kept
their signatures since then.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GROUPS = ("apply", "writes", "startup", "scaling", "instructions")
ONCE = ("instructions",)  # a count: a second round would only repeat it
WORSE = 1.10
# Figures of iproute2 or python3 alone: what the machine did meanwhile, not kindplan's code.
BASELINES = {"ip_batch_s", "ip_j_dump_s", "raw_dump_parse_s", "idle_wall_s", "python_pass_s"}
EXACT = {"routes", "converged_writes", "one_added_writes"}  # counts that must not change
HIGHER_IS_BETTER = {"routes_per_s"}
RESOLUTION = {"idle_cpu_s": 0.02}  # CPU time is counted in 10 ms ticks

Figures = dict[str, Any]


# -- in a tree: one group by that tree's run.py ---------------------------------------------------


def measure(group: str, nodes: int, runs: int) -> Figures:
    """One group of figures, measured by the run.py of the tree this process runs in (its cwd)."""
    # sys.path[0] is this script's folder, whose run.py may be another tree's.
    sys.path[0] = str(Path.cwd() / "bench")
    import run

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        stacks = {"IPv4": False, "dual-stack": True}
        if group == "apply":
            return {tag: run.bench_apply(work, nodes, dual, runs) for tag, dual in stacks.items()}
        if group == "writes":
            return {tag: run.bench_writes(nodes, runs, dual) for tag, dual in stacks.items()}
        if group == "startup":
            return dict(run.bench_startup(work, max(runs, 10)))
        if group == "scaling":  # the ends of run.py's sizes: its middle ones are for the plot
            return dict(run.bench_scaling([50, nodes], max(runs, 15)))
        if group == "instructions":
            return dict(run.bench_instructions([50, nodes]) or {})  # {} without valgrind
    raise ValueError(f"no group {group!r}")


def measure_in(tree: Path, group: str, nodes: int, runs: int) -> Figures:
    """`measure` in a process of its own in `tree`; RuntimeError with its stderr if it fails."""
    env = os.environ | {"PYTHONPATH": str(tree)}
    if group == "instructions":
        # A count repeats only with one hash seed: string hashes otherwise change how dicts and
        # sets probe from process to process (at 50 nodes, 2.16M to 2.49M for the same tree).
        env["PYTHONHASHSEED"] = "0"
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [sys.executable, __file__, "--measure", group, "--nodes", str(nodes)]
        proc = subprocess.run(
            [*cmd, "--runs", str(runs), "--result", out.name],
            cwd=tree,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:  # the last line of a traceback is the error
            last = proc.stderr.strip().splitlines()[-1:]
            raise RuntimeError(last[0] if last else f"exit status {proc.returncode}")
        result: Figures = json.loads(Path(out.name).read_text())
        return result


# -- both trees, in turns ------------------------------------------------------------------------


def take_turns(trees: dict[str, Path], args: argparse.Namespace) -> dict[str, Any]:
    """Every group in every round for both trees, alternating which goes first; the record is
    written to args.out after each measurement, so an interrupted run keeps what it has."""
    record: dict[str, Any] = {
        "nodes": args.nodes,
        "runs": args.runs,
        "rounds": args.rounds,
        "trees": {name: str(path) for name, path in trees.items()},
        "measurements": {name: {group: [] for group in args.only} for name in trees},
        "failures": [],
    }
    started = time.monotonic()
    turn = 0
    for round_ in range(args.rounds):
        for group in args.only:
            if round_ > 0 and group in ONCE:
                continue
            order = ("before", "after") if turn % 2 == 0 else ("after", "before")
            turn += 1
            for name in order:
                began, outcome = time.monotonic(), ""
                try:
                    figures = measure_in(trees[name], group, args.nodes, args.runs)
                except RuntimeError as e:
                    record["failures"].append(f"{group} in {name} (round {round_ + 1}): {e}")
                    outcome = "  FAILED"
                else:
                    record["measurements"][name][group].append(figures)
                args.out.write_text(json.dumps(record, indent=1) + "\n")
                now = time.monotonic()
                print(
                    f"round {round_ + 1}/{args.rounds} {group:<12} {name:<6} {now - began:4.0f} s"
                    f"  (total {now - started:.0f} s){outcome}",
                    file=sys.stderr,
                )
    return record


def flatten(figures: Figures, prefix: str = "") -> dict[str, float]:
    """{"apply": {"IPv4": {"round_s": x}}} -> {"apply IPv4 round_s": x}."""
    flat: dict[str, float] = {}
    for key, value in figures.items():
        if isinstance(value, dict):
            flat |= flatten(value, f"{prefix}{key} ")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def medians(rounds: list[Figures], group: str) -> dict[str, float]:
    """Each figure of a group, the median over the rounds that measured it."""
    values: dict[str, list[float]] = {}
    for figures in rounds:
        for key, value in flatten(figures, f"{group} ").items():
            values.setdefault(key, []).append(value)
    return {key: statistics.median(vs) for key, vs in values.items()}


def verdict(key: str, before: float, after: float) -> str:
    """'' when AFTER is as good, within 10 %, or a baseline; else why it is flagged."""
    name = key.rsplit(" ", 1)[-1]
    if name in BASELINES:
        return "(baseline)"
    if name in EXACT:
        return "" if after == before else "DIFFERS"
    if abs(after - before) <= RESOLUTION.get(name, 0):
        return ""
    worse = before / after if name in HIGHER_IS_BETTER else after / before
    return f"WORSE by {100 * (worse - 1):.0f} %" if worse > WORSE else ""


def show(key: str, value: float) -> str:
    name = key.rsplit(" ", 1)[-1]
    if key.startswith("instructions"):
        return f"{value / 1e6:,.1f}M"
    if name in EXACT:
        return f"{value:.0f}"
    if name == "routes_per_s":
        return f"{value:,.0f}/s"
    if name.endswith("_mib"):
        return f"{value:.1f} MiB"
    seconds = name.endswith("_s") or name == "seconds" or key.startswith("scaling")
    return f"{value * 1000:.2f} ms" if seconds and value < 1 else f"{value:.3f} s"


def table(record: dict[str, Any]) -> tuple[list[tuple[str, ...]], int]:
    """The rows (figure, BEFORE, AFTER, AFTER/BEFORE, verdict) and how many are flagged."""
    measured = record["measurements"]
    groups = list(measured["after"])
    before = {k: v for g in groups for k, v in medians(measured["before"][g], g).items()}
    after = {k: v for g in groups for k, v in medians(measured["after"][g], g).items()}
    rows: list[tuple[str, ...]] = [("figure", "before", "after", "after/before", "")]
    flagged = 0
    for key in sorted(before.keys() & after.keys(), key=lambda k: _figure_order(k, groups)):
        b, a = before[key], after[key]
        why = verdict(key, b, a)
        # A compile + diff that takes longer for the same instructions met a slower machine.
        counted = key.replace("scaling", "instructions")
        same_work = counted != key and counted in after
        if why and same_work and not verdict(counted, before[counted], after[counted]):
            why += " (instructions within 10 %)"
        flagged += why not in ("", "(baseline)")
        rows.append((key, show(key, b), show(key, a), f"{a / b:.2f}" if b else "-", why))
    return rows, flagged


def _figure_order(key: str, groups: list[str]) -> tuple[int, str, int]:
    """In the order of the groups, then by name, sizes in numeric order (50 before 500)."""
    head, _, last = key.rpartition(" ")
    group = groups.index(key.split(" ", 1)[0])
    return (group, head, int(last)) if last.isdigit() else (group, key, 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path, nargs="?", help="a source tree, e.g. a git worktree")
    parser.add_argument("after", type=Path, nargs="?", help="another, e.g. this checkout")
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3, help="per figure and round (run.py: 5)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--only", default=",".join(GROUPS), help="groups, comma-separated")
    parser.add_argument("--quick", action="store_true", help="1,000 nodes (as run.py --quick)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "compare.json")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # in a tree: one group
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        args.result.write_text(json.dumps(measure(args.measure, args.nodes, args.runs)))
        return 0
    if args.before is None or args.after is None:
        parser.error("give two trees: BEFORE AFTER")
    if os.geteuid() != 0:
        print("bench/compare.py needs root (network namespaces)", file=sys.stderr)
        return 1
    if args.quick:
        args.nodes = 1000
    args.only = [g.strip() for g in args.only.split(",") if g.strip()]
    unknown = set(args.only) - set(GROUPS)
    if unknown:
        parser.error(f"--only: unknown groups {sorted(unknown)}; choose from {', '.join(GROUPS)}")
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    for name, tree in trees.items():
        if not (tree / "bench" / "run.py").is_file():
            parser.error(f"{name}: {tree} has no bench/run.py")
    args.out.parent.mkdir(parents=True, exist_ok=True)

    return report(take_turns(trees, args), trees, args)


def report(record: dict[str, Any], trees: dict[str, Path], args: argparse.Namespace) -> int:
    """Print the table of both trees' figures: 1 if a figure is flagged or a run failed."""
    rows, flagged = table(record)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print(f"before: {trees['before']}\nafter:  {trees['after']}")
    print(f"{args.nodes} nodes, {args.runs} runs per figure, {args.rounds} round(s); medians\n")
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    for failure in record["failures"]:
        print(f"FAILED: {failure}")
    print(f"\n{flagged} figure(s) flagged; measurements in {args.out}")
    if flagged:  # one round on a busy machine moves a figure by 10-30 %: see the baselines
        print("to measure a flagged group again: --only GROUP --rounds 3")
    return 1 if flagged or record["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
