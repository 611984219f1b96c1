"""Every command's error paths in one style and with the status of one table (kindplan/status.py,
README "Exit statuses"): a usage error, an unknown flag, a missing argument, a value of the
wrong form, a name the input has not got, invalid input, a missing file. Each says
`error: WHERE: WHAT` (one line per problem; a usage error one line, and at most one `hint:`
line after it), prints nothing on stdout, and never a traceback or click's `Usage:`/`Error:`.

What needs a lab that is up (a node the lab has not got) is a kernel test:
tests/kernel/test_trace_seed.py::test_a_name_the_lab_has_not_got_is_a_usage_error."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kindplan.cli import main
from kindplan.status import ExitStatus

ROOT = Path(__file__).resolve().parents[2]
SEED = str(ROOT / "fixtures" / "seed-lab" / "snapshot.yaml")
USAGE, INVALID, FAILURE = ExitStatus.USAGE, ExitStatus.INVALID_INPUT, ExitStatus.FAILURE
NOWHERE = "kp-no-such-namespace"  # never created: the commands fail before touching a node

# (argv with {tmp} for a fresh folder, the status, the start of the first line)
CASES = {
    # click's own usage errors, in every command
    "unknown flag": (["validate", SEED, "--bogus"], USAGE, "error: kindplan validate: no such"),
    "missing argument": (["validate"], USAGE, "error: kindplan validate: missing argument"),
    "render without --out": (["render", SEED, "--node", "x"], USAGE, "error: give exactly one"),
    "a value out of range": (["render", SEED, "--mtu", "10"], USAGE, "error: --mtu: 10 is not"),
    "not a number": (["plan", SEED, "--mtu", "abc"], USAGE, "error: --mtu: 'abc' is not"),
    "plan unknown flag": (["plan", SEED, "--nod", "x"], USAGE, "error: kindplan plan: no such"),
    "apply bad interval": (
        ["apply", "--watch", SEED, "--interval", "x", "--state-dir", "{tmp}"],
        USAGE,
        "error: --interval: 'x' is not a duration",
    ),
    "apply snapshot and plan": (
        ["apply", SEED, "--plan", "{tmp}/p.json", "--state-dir", "{tmp}"],
        USAGE,
        "error: ",
    ),
    "rollback bad netns": (["rollback", "--netns", "a/b"], USAGE, "error: --netns: 'a/b' is not"),
    "history state file": (
        ["history", "--state-dir", SEED],
        USAGE,
        f"error: --state-dir: {SEED} is not a directory",
    ),
    "show unknown flag": (["show", "--bogus"], USAGE, "error: kindplan show: no such option"),
    "trace missing --to": (["trace", SEED, "--from", "web-1"], USAGE, "error: kindplan trace: "),
    "trace bad proto": (
        ["trace", SEED, "--from", "web-1", "--to", "web-0", "--proto", "icmp"],
        USAGE,
        "error: --proto: 'icmp' is not tcp or udp",
    ),
    "trace bad network": (
        ["trace", SEED, "--from", "web-1", "--to", "web-0", "--node-network", "10.0.0.0/99"],
        USAGE,
        "error: --node-network: '10.0.0.0/99' is no network (a prefix length is 0 to 32",
    ),
    "lab up bad name": (["lab", "up", "--name", "BAD"], USAGE, "error: --name 'BAD': use 1"),
    "lab up too many nodes": (["lab", "up", "--nodes", "500"], USAGE, "error: --nodes: 500 is"),
    "lab exec missing node": (["lab", "exec"], USAGE, "error: kindplan lab exec: missing"),
    "lab trace missing TO": (["lab", "trace", "a"], USAGE, "error: kindplan lab trace: missing"),
    # a name on the command line that the input has not got: the command line's mistake, 64
    "validate --node": (["validate", SEED, "--node", "ghost"], USAGE, "error: --node: no node"),
    "render --node": (
        ["render", SEED, "--node", "ghost", "--out", "{tmp}/o"],
        USAGE,
        "error: --node: no node named 'ghost'",
    ),
    "plan --node": (["plan", SEED, "--node", "ghost"], USAGE, "error: --node: no node named"),
    "plan without --node": (
        ["plan", SEED, "--netns", NOWHERE],
        USAGE,
        "error: --node: not given, so it is this machine's host name",
    ),
    "apply --node": (
        ["apply", SEED, "--node", "ghost", "--netns", NOWHERE, "--state-dir", "{tmp}"],
        USAGE,
        "error: --node: no node named",
    ),
    "trace --from": (
        ["trace", SEED, "--from", "ghost", "--to", "web-0"],
        USAGE,
        "error: --from: 'ghost' is no pod, node or IP address",
    ),
    "trace --to": (
        ["trace", SEED, "--from", "web-1", "--to", "ghost"],
        USAGE,
        "error: --to: 'ghost' is no pod, node or IP address",
    ),
    "trace --node": (
        ["trace", SEED, "--from", "web-1", "--to", "web-0", "--node", "ghost", "--netns", NOWHERE],
        USAGE,
        "error: --node: no node named",
    ),
    "lab plan, no such lab": (
        ["lab", "plan", "x", "--name", "zz", "--state-dir", "{tmp}"],
        USAGE,
        "error: no lab named 'zz' is up",
    ),
    "lab exec, no such lab": (
        ["lab", "exec", "x", "--name", "zz", "--state-dir", "{tmp}", "--", "true"],
        USAGE,
        "error: no lab named 'zz' is up",
    ),
    "lab trace, no such lab": (
        ["lab", "trace", "a", "b", "--name", "zz", "--state-dir", "{tmp}"],
        USAGE,
        "error: no lab named 'zz' is up",
    ),
    "lab snapshot, no such lab": (
        ["lab", "snapshot", "--name", "zz", "--state-dir", "{tmp}"],
        USAGE,
        "error: no lab named 'zz' is up",
    ),
    # invalid input and missing files: 65, one line per problem
    "validate a bad CIDR": (
        ["validate", "{tmp}/bad.yaml"],
        INVALID,
        "error: nodes[2].podCIDRs[0]: '10.244.2.300/24' is not a CIDR (its address is not",
    ),
    "render a missing file": (
        ["render", "{tmp}/missing.yaml", "--all-nodes", "--out", "{tmp}/o"],
        INVALID,
        "error: {tmp}/missing.yaml: cannot read: No such file",
    ),
    "plan a bad CIDR": (
        ["plan", "{tmp}/bad.yaml", "--node", "k8s-guide-worker2", "--netns", NOWHERE],
        INVALID,
        "error: nodes[2].podCIDRs[0]: ",
    ),
    "apply a missing saved plan": (
        ["apply", "--plan", "{tmp}/missing.json", "--state-dir", "{tmp}"],
        INVALID,
        "error: {tmp}/missing.json: cannot read",
    ),
    "trace a missing file": (
        ["trace", "{tmp}/missing.yaml", "--from", "a", "--to", "b"],
        INVALID,
        "error: {tmp}/missing.yaml: cannot read",
    ),
    "validate --pod-subnet": (
        ["validate", str(ROOT / "fixtures" / "node-list" / "snapshot.json"), "--pod-subnet", "x"],
        INVALID,
        "error: --pod-subnet: 'x' ",
    ),
    # the machine lacks something: 1
    "show, no such namespace": (["show", "--netns", NOWHERE], FAILURE, "error: no network"),
    "rollback, no such namespace": (
        ["rollback", "--netns", NOWHERE, "--state-dir", "{tmp}"],
        FAILURE,
        "error: no network namespace",
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_every_error_path_says_one_line_and_exits_by_the_table(
    case: tuple[list[str], int, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv, status, first = case
    good = Path(SEED).read_text()
    (tmp_path / "bad.yaml").write_text(good.replace("10.244.2.0/24", "10.244.2.300/24"))
    capsys.readouterr()
    got = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    out, err = capsys.readouterr()
    assert (got, out) == (status, ""), err
    lines = err.splitlines()
    assert lines[0].startswith(first.replace("{tmp}", str(tmp_path))), err
    assert all(re.match(r"(error|hint|warning): \S", line) for line in lines), err
    errors = [line for line in lines if line.startswith("error: ")]
    hints = [line for line in lines if line.startswith("hint: ")]
    if status == USAGE:  # one mistake, one line; a hint, if any, right after it
        assert len(errors) == 1 and len(hints) <= 1, err
        assert not hints or lines.index(hints[0]) == lines.index(errors[0]) + 1, err
    else:
        assert errors and not hints, err


def test_no_arguments_shows_the_help_as_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["lab"]):
        assert main(argv) == USAGE
        out, err = capsys.readouterr()
        assert out == "" and err.startswith("Usage: kindplan") and "Commands:" in err


def test_the_readme_table_is_the_status_table() -> None:
    """README "Exit statuses" lists every status of kindplan/status.py, and says the rule."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("\n## Exit statuses\n") :]
    section = section[: section.index("\n## ", 5)]
    listed = {int(m) for m in re.findall(r"^\| (\d+) \|", section, flags=re.M)}
    assert listed == {int(s) for s in ExitStatus}
    assert "a name on the command line" in section


COMMANDS = [
    ["validate"],
    ["render"],
    ["plan"],
    ["apply"],
    ["rollback"],
    ["history"],
    ["show"],
    ["trace"],
    *(["lab", c] for c in ("up", "check", "down", "plan", "apply", "snapshot", "exec", "trace")),
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_usage_lines_name_every_value(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`--node NAME`, `SNAPSHOT`: not typer's `<str>` or `{snapshot}`."""
    assert main([*command, "--help"]) == 0
    text = capsys.readouterr().out
    usage = text.splitlines()[0]
    assert usage.startswith(f"Usage: kindplan {' '.join(command)} [OPTIONS]"), usage
    assert not re.search(r"<[a-z ]+>|\{|\}", text), text
    if command == ["lab", "exec"]:
        assert usage.endswith(" NODE -- CMD..."), usage
    if command == ["apply"]:
        assert "The node to plan for" not in text
