"""The command line: exit statuses, messages and files, run in-process and as a real process."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kindplan.cli import main

ROOT = Path(__file__).resolve().parents[2]
SEED = str(ROOT / "fixtures" / "seed-lab" / "snapshot.yaml")


def run(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    """kindplan as users run it: a separate process, with its real exit status and streams."""
    return subprocess.run(
        [sys.executable, "-m", "kindplan.cli", *args],
        input=stdin.decode(errors="surrogateescape"),
        capture_output=True,
        text=True,
        check=False,
    )


def test_render_seed_lab_worker2(tmp_path: Path) -> None:
    result = run("render", SEED, "--node", "k8s-guide-worker2", "--out", str(tmp_path / "a"))
    assert result.returncode == 0, result.stderr
    routes = [
        line
        for line in (tmp_path / "a" / "routes.batch").read_text().splitlines()
        if " via " in line
    ]
    assert routes == [
        "route replace 10.244.0.0/24 via 172.18.0.10 dev eth0 proto 75",
        "route replace 10.244.1.0/24 via 172.18.0.11 dev eth0 proto 75",
    ]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "10-kindnet.conflist",
        "iptables.rules",
        "routes.batch",
    ]
    # twice gives the same bytes, and a second run into the same folder changes nothing
    assert main(["render", SEED, "--node", "k8s-guide-worker2", "--out", str(tmp_path / "b")]) == 0
    for f in (tmp_path / "a").iterdir():
        assert f.read_bytes() == (tmp_path / "b" / f.name).read_bytes()
    again = run("render", SEED, "--node", "k8s-guide-worker2", "--out", str(tmp_path / "a"))
    assert "(0 changed)" in again.stdout


def test_check_reports_a_diff_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["render", SEED, "--all-nodes", "--out", str(tmp_path)]) == 0
    assert main(["render", SEED, "--all-nodes", "--check", str(tmp_path)]) == 0
    conflist = tmp_path / "k8s-guide-worker" / "10-kindnet.conflist"
    conflist.write_text(conflist.read_text().replace('"mtu": 1500', '"mtu": 1450'))
    (tmp_path / "stale.rules").write_text("x\n")
    capsys.readouterr()
    assert main(["render", SEED, "--all-nodes", "--check", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert '-      "mtu": 1450,\n+      "mtu": 1500,' in out
    assert "+++ /dev/null" in out and "stale.rules" in out


@pytest.mark.parametrize(
    ("good", "bad", "stderr"),
    [
        (
            "10.244.1.0/24",
            "10.244.1.1/24",
            "error: nodes[1].podCIDRs[0]: 10.244.1.1/24 has host bits set "
            "(the network is 10.244.1.0/24)\n",
        ),
        (
            "172.18.0.11",
            "0.0.0.0",
            "error: nodes[1].internalIPs[0]: 0.0.0.0 is unspecified: no route can go through it\n",
        ),
    ],
)
def test_invalid_input_exits_65_with_one_line_per_problem(
    tmp_path: Path, good: str, bad: str, stderr: str
) -> None:
    snapshot = tmp_path / "bad.yaml"
    snapshot.write_text(Path(SEED).read_text().replace(good, bad))
    result = run(
        "render", str(snapshot), "--node", "k8s-guide-worker2", "--out", str(tmp_path / "o")
    )
    assert result.returncode == 65
    assert result.stderr == stderr
    assert not (tmp_path / "o").exists(), "nothing is written for bad input"


@pytest.mark.parametrize(
    ("args", "stdin", "status", "stderr"),
    [
        (["render", "--bogus"], b"", 64, "error: kindplan render: no such option: --bogus"),
        (
            ["render", SEED, "--node", "x", "--all-nodes", "--out", "o"],
            b"",
            64,
            "exactly one of --node",
        ),
        (["render", SEED, "--node", "x"], b"", 64, "exactly one of --out DIR and --check DIR"),
        (["validate", SEED, "--node", "ghost"], b"", 64, "error: --node: no node named 'ghost'"),
        (
            ["validate", "/nonexistent.yaml"],
            b"",
            65,
            "error: /nonexistent.yaml: cannot read: No such file",
        ),
        (["validate", "-"], b"\x00\x01", 65, "error: <stdin>: binary input"),
        (["validate", "-"], b"{]", 65, "error: <stdin>:1:2: invalid JSON"),
        ([], b"", 64, "Usage: kindplan"),
    ],
)
def test_exit_statuses(args: list[str], stdin: bytes, status: int, stderr: str) -> None:
    result = run(*args, stdin=stdin)
    assert result.returncode == status, result.stderr
    assert stderr in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_validate_reads_stdin_and_warns_about_skipped_nodes() -> None:
    node_list = (ROOT / "fixtures" / "node-list" / "snapshot.json").read_bytes()
    result = run("validate", "-", "--pod-subnet", "10.244.0.0/16,fd00:10:244::/56", stdin=node_list)
    assert result.returncode == 0, result.stderr
    # two pod subnets make a dual-stack cluster, even while no node has an IPv6 PodCIDR yet
    assert result.stdout == "ok: 4 nodes, 0 pods, dual-stack\n"
    assert (
        "warning: items[3] (node k8s-guide-worker3): no PodCIDR yet; "
        "no route to its pods until it has one" in result.stderr
    )
    strict = run(
        "validate",
        "-",
        "--strict",
        "--pod-subnet",
        "10.244.0.0/16,fd00:10:244::/56",
        stdin=node_list,
    )
    assert strict.stdout == "ok: 3 nodes, 0 pods, dual-stack\n"
    assert "warning: items[3] (node k8s-guide-worker3): no PodCIDR yet; skipped" in strict.stderr


def test_version_and_help() -> None:
    assert run("--version").stdout.startswith("kindplan ")
    help_text = run("render", "--help").stdout
    assert "--check" in help_text and "routes.batch" in help_text


def test_errors_from_flag_values_stay_on_one_line() -> None:
    result = run("render", SEED, "--node", "k8s-guide-worker2", "--check", "/nonexistent\nx")
    assert result.returncode == 1
    assert result.stderr == "error: /nonexistent\\nx: not a directory\n"


def test_ctrl_c_while_reading_stdin_says_so_in_one_line() -> None:
    """typer turns a KeyboardInterrupt into a silent exit 130; kindplan names it (a one-shot
    apply's second Ctrl-C takes the same path)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "kindplan.cli", "validate", "-"],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)  # started and waiting on stdin (a slow start only delays the signal's effect)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert err == "error: interrupted; kindplan history shows what the journal holds\n"


def test_render_with_the_nftables_backend_and_exclusions(tmp_path: Path) -> None:
    out = tmp_path / "n"
    exclusions = "192.0.2.0/24,10.96.0.0/12"
    result = run("render", SEED, "--node", "k8s-guide-worker2", "--out", str(out),
                 "--masq-backend", "nftables", "--no-masquerade-cidr", exclusions)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "10-kindnet.conflist",
        "ip-kindplan-masq.nft",
        "routes.batch",
    ]
    table = (out / "ip-kindplan-masq.nft").read_text()
    assert "elements = { 10.96.0.0/12, 10.244.0.0/16, 192.0.2.0/24 };" in table
    # the exclusions in the iptables backend too, after the pod subnet
    result = run("render", SEED, "--node", "k8s-guide-worker2", "--out", str(tmp_path / "i"),
                 "--no-masquerade-cidr", "192.0.2.0/24")  # fmt: skip
    rules = (tmp_path / "i" / "iptables.rules").read_text()
    assert rules.index("-d 10.244.0.0/16 ") < rules.index("-d 192.0.2.0/24 ")


def test_a_snapshots_masq_backend_is_followed_and_the_flag_overrides_it(tmp_path: Path) -> None:
    snapshot = tmp_path / "s.yaml"
    snapshot.write_text(
        Path(SEED).read_text().replace("podSubnets:", "masqBackend: nftables\n  podSubnets:", 1)
    )
    result = run(
        "render", str(snapshot), "--node", "k8s-guide-worker2", "--out", str(tmp_path / "a")
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "a" / "ip-kindplan-masq.nft").exists()
    result = run("render", str(snapshot), "--node", "k8s-guide-worker2",
                 "--out", str(tmp_path / "b"), "--masq-backend", "iptables")  # fmt: skip
    assert (tmp_path / "b" / "iptables.rules").exists()
    snapshot.write_text(
        Path(SEED).read_text().replace("podSubnets:", "masqBackend: pf\n  podSubnets:", 1)
    )
    bad = run("render", str(snapshot), "--node", "k8s-guide-worker2", "--out", str(tmp_path / "c"))
    assert bad.returncode == 65
    assert "cluster.masqBackend" in bad.stderr and len(bad.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--masq-backend", "pf"], "'pf' is not one of auto, iptables, nftables"),
        (["--no-masquerade-cidr", "10.0.0.1/8"], "'10.0.0.1/8' is not a network in CIDR form"),
    ],
)
def test_bad_masquerade_flags_are_one_line_usage_errors(flags: list[str], said: str) -> None:
    for command in ("render", "plan", "apply"):
        result = run(command, SEED, "--node", "k8s-guide-worker2", *flags)
        assert result.returncode == 64, (command, result.stderr)
        assert said in result.stderr and len(result.stderr.strip().splitlines()) == 1
