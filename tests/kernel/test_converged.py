"""The converged fast path of a one-shot apply: taken only while inputs and node are unchanged.

Every kind of input and every part of the node that the plan reads is changed in turn; each
must turn the fast path off, and the next apply (the full path) must repair the node.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from nodes import SEED, Node
from shell import sh

from kindplan.core.model import Options
from kindplan.core.planview import format_plan
from kindplan.node.converged import Remember, converged_record, inputs_digest
from kindplan.node.statedir import target_dir

pytestmark = pytest.mark.root


def record_path(node: Node) -> Path:
    return target_dir(node.tmp / "state", node.ns) / "converged.json"


def fast_path_taken(node: Node, snapshot: Path | None = None) -> bool:
    """Would `node.apply()` answer from the record? (the options the CLI builds for it)"""
    options = Options(node=node.name, conf_dir=str(node.tmp / "cni"))
    data = (snapshot or node.snapshot).read_bytes()
    inputs = inputs_digest(data, (), options, node.ns)
    remember = Remember(record_path(node), inputs, "", format_plan)
    return converged_record(node.ns, options, remember, lock_timeout=5) is not None


def test_unchanged_node_is_answered_from_the_record_with_the_same_output(
    seed_worker2: Node,
) -> None:
    assert seed_worker2.apply().returncode == 0  # converged and verified: recorded
    assert fast_path_taken(seed_worker2)
    fast = seed_worker2.apply()
    record_path(seed_worker2).unlink()
    slow = seed_worker2.apply()  # the full path (and a new record)
    assert (fast.returncode, fast.stdout, fast.stderr) == (
        slow.returncode,
        slow.stdout,
        slow.stderr,
    )
    assert fast.stdout == "No changes.\n"
    assert fast_path_taken(seed_worker2)


DRIFTS: dict[str, Callable[[Node], None]] = {
    "peer route deleted": lambda n: sh("ip", "-n", n.ns, "route", "del", "10.244.0.0/24"),
    "pod gateway address removed": lambda n: sh(
        "ip", "-n", n.ns, "addr", "del", "10.244.2.1/32", "dev", "vetha1079faf"
    ),
    "uplink MTU changed": lambda n: sh("ip", "-n", n.ns, "link", "set", "eth0", "mtu", "1400"),
    "forwarding off": lambda n: sh(
        "ip", "netns", "exec", n.ns, "sysctl", "-qw", "net.ipv4.ip_forward=0"
    ),
    "SNAT chain flushed": lambda n: sh("iptables", "-t", "nat", "-F", "KIND-MASQ-AGENT", ns=n.ns),
    "conflist edited": lambda n: n.conflist.write_text(n.conflist.read_text().replace("00", "01")),
    "conflist removed": lambda n: n.conflist.unlink(),
}


@pytest.mark.parametrize("drift", DRIFTS, ids=list(DRIFTS))
def test_any_drift_turns_the_fast_path_off_and_is_repaired(seed_worker2: Node, drift: str) -> None:
    assert seed_worker2.apply().returncode == 0
    assert fast_path_taken(seed_worker2)
    DRIFTS[drift](seed_worker2)
    assert not fast_path_taken(seed_worker2)
    repaired = seed_worker2.apply()
    assert repaired.returncode == 0 and "applied:" in repaired.stdout, repaired
    plan = seed_worker2.plan("--detailed-exitcode")
    assert plan.returncode == 0, plan.stdout
    assert fast_path_taken(seed_worker2)  # recorded again once converged


def test_other_inputs_turn_it_off(seed_worker2: Node) -> None:
    assert seed_worker2.apply().returncode == 0
    bigger = seed_worker2.tmp / "bigger.yaml"
    bigger.write_text(
        SEED.read_text().replace(
            "pods:",
            '  - {name: n4, internalIPs: ["172.18.0.20"], podCIDRs: ["10.244.9.0/24"]}\npods:',
        )
    )
    assert not fast_path_taken(seed_worker2, bigger)  # other snapshot bytes
    same_bytes_elsewhere = seed_worker2.tmp / "copy.yaml"
    same_bytes_elsewhere.write_bytes(SEED.read_bytes())
    assert fast_path_taken(seed_worker2, same_bytes_elsewhere)  # the bytes count, not the name
    # other options: an MTU given
    options = Options(node=seed_worker2.name, conf_dir=str(seed_worker2.tmp / "cni"), mtu=1400)
    data = seed_worker2.snapshot.read_bytes()
    inputs = inputs_digest(data, (), options, seed_worker2.ns)
    remember = Remember(record_path(seed_worker2), inputs, "", format_plan)
    assert converged_record(seed_worker2.ns, options, remember, lock_timeout=5) is None


BROKEN_RECORDS = {
    "cut short": b'{"inputs": 1',
    "nested 100,000 deep": b"[" * 100_000 + b"]" * 100_000,
    "families holds a 5": None,  # the real record with families [5]
    "a number for a string": None,  # the real record with "output": 7
    "not UTF-8": b'{"inputs": "\xff"}',
}


@pytest.mark.parametrize("broken", BROKEN_RECORDS)
def test_a_broken_record_is_ignored_and_written_again(seed_worker2: Node, broken: str) -> None:
    """The record is a cache: whatever it holds, it is never an error, and it is rewritten."""
    import json

    assert seed_worker2.apply().returncode == 0
    path = record_path(seed_worker2)
    data = BROKEN_RECORDS[broken]
    if data is None:
        record = json.loads(path.read_text())
        record.update({"families": [5]} if "families" in broken else {"output": 7})
        data = json.dumps(record).encode()
    path.write_bytes(data)
    assert not fast_path_taken(seed_worker2)
    again = seed_worker2.apply()
    assert (again.returncode, again.stdout, again.stderr) == (0, "No changes.\n", "")
    assert fast_path_taken(seed_worker2), "the full path wrote a usable record again"


def _run(code: str, *argv: str) -> tuple[int, str, str, list[str]]:
    """(exit status, stdout, stderr, modules loaded) of `code`'s main(argv) in a fresh process."""
    wrapper = (
        "import json, sys\n"
        f"{code}\n"
        "status = main(sys.argv[1:])\n"
        "sys.stderr.write('MODULES ' + json.dumps(sorted(sys.modules)))\n"
        "sys.exit(status)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", wrapper, *argv], capture_output=True, text=True, check=False
    )
    stderr, _, modules = done.stderr.rpartition("MODULES ")
    return done.returncode, done.stdout, stderr, json.loads(modules)


def _forms(node: Node) -> dict[str, list[str]]:
    """One apply command line written three ways typer takes alike."""
    flags = {"--node": node.name, "--netns": node.ns, "--conf-dir": str(node.tmp / "cni")}
    flags["--state-dir"] = str(node.tmp / "state")
    words = [word for flag, value in flags.items() for word in (flag, value)]
    snapshot = str(node.snapshot)
    return {
        "as given": [snapshot, *words],
        "--flag=value": [snapshot, *(f"{flag}={value}" for flag, value in flags.items())],
        "snapshot last": [*words, snapshot],
    }


@pytest.mark.parametrize("form", ["as given", "--flag=value", "snapshot last"])
def test_a_converged_apply_is_answered_before_typer_is_loaded(
    seed_worker2: Node, form: str
) -> None:
    """The same answer as the typer program's own converged check, without importing typer."""
    assert seed_worker2.apply().returncode == 0
    argv = ["apply", *_forms(seed_worker2)[form]]
    quick = _run("from kindplan.cli import main", *argv)
    typer_program = _run("from kindplan.cli.program import main", *argv)
    assert quick[:3] == typer_program[:3] == (0, "No changes.\n", "")
    assert "typer" not in quick[3] and "kindplan.cli.program" not in quick[3]
    assert "jinja2" not in quick[3]  # rendering the conflist is for an apply that changes it
    assert "typer" in typer_program[3]


def test_a_node_that_is_not_converged_is_applied_before_typer_is_loaded(
    seed_worker2: Node,
) -> None:
    """A first apply, and the repair of a drifted node, run without typer (cli/applyonce.py),
    saying and doing what the typer program says and does."""
    node = seed_worker2
    argv = ["apply", *node.args(None), "--state-dir", str(node.tmp / "state")]
    first = _run("from kindplan.cli import main", *argv)
    assert first[0] == 0 and "Apply complete: " in first[1], first[:3]
    assert "typer" not in first[3] and "kindplan.cli.program" not in first[3]
    outcomes = []
    for code in ("from kindplan.cli import main", "from kindplan.cli.program import main"):
        DRIFTS["peer route deleted"](node)
        outcomes.append(_run(code, *argv))
    quick, typer_program = outcomes
    assert quick[:3] == typer_program[:3]
    assert quick[0] == 0 and "applied: added route 10.244.0.0/24" in quick[1]
    assert "typer" not in quick[3] and "typer" in typer_program[3]


def test_a_flag_value_typer_would_refuse_goes_the_usual_way(seed_worker2: Node) -> None:
    """Each value quick.py reads is checked as options.py checks it: one typer refuses is
    refused with typer's usage error, nothing applied."""
    node = seed_worker2
    state = ["--state-dir", str(node.tmp / "state")]
    for bad in (
        [*state, "--route-proto", "2"],
        [*state, "--mtu", "100"],
        ["--state-dir", str(node.snapshot)],  # a file, not a folder
    ):
        refused = _run("from kindplan.cli import main", "apply", *node.args(None), *bad)
        assert refused[0] == 64 and "kindplan.cli.program" in refused[3], refused[:3]
    assert not record_path(node).exists()


def test_an_invalid_snapshot_applied_before_typer_says_what_typer_says(
    seed_worker2: Node,
) -> None:
    node = seed_worker2
    broken = node.tmp / "broken.json"
    broken.write_text(json.dumps({"apiVersion": "kindplan/v1", "kind": "ClusterSnapshot"}))
    argv = ["apply", *node.args(broken), "--state-dir", str(node.tmp / "state")]
    quick = _run("from kindplan.cli import main", *argv)
    typer_program = _run("from kindplan.cli.program import main", *argv)
    assert quick[:3] == typer_program[:3]
    assert quick[0] == 65 and quick[2].startswith("error: "), quick[:3]
    assert "typer" not in quick[3]
