"""The shipped pre-commit hook, run by pre-commit itself in a sample repository: a commit whose
golden files match its snapshot passes, one that edits the snapshot alone is refused."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "fixtures" / "seed-lab" / "snapshot.yaml"


def git(
    repo: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_hook_passes_a_matching_commit_and_refuses_a_stale_one(tmp_path: Path) -> None:
    head = git(ROOT, "rev-parse", "HEAD")
    if head.returncode != 0:
        pytest.skip("needs kindplan as a git repository (pre-commit installs hooks from one)")
    pre_commit = Path(sys.executable).with_name("pre-commit")
    assert pre_commit.exists(), "pre-commit comes with the test extras"
    env = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "cache")}  # leaves ~/.cache alone
    repo = tmp_path / "cluster-config"
    repo.mkdir()
    assert git(repo, "init", "-q").returncode == 0
    shutil.copy(SEED, repo / "cluster.yaml")
    render = ["render", "cluster.yaml", "--all-nodes", "--out", "golden"]
    rendered = subprocess.run(
        [sys.executable, "-m", "kindplan.cli", *render],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    assert rendered.returncode == 0, rendered.stderr
    # the hook from kindplan's repository, at this commit, by its path: no network for git
    (repo / ".pre-commit-config.yaml").write_text(
        "repos:\n"
        f"  - repo: {ROOT}\n"
        f"    rev: {head.stdout.strip()}\n"
        "    hooks:\n"
        "      - id: kindplan-render-check\n"
        "        args: [golden/, cluster.yaml]\n"
    )
    install = subprocess.run(
        [str(pre_commit), "install"], cwd=repo, env=env, capture_output=True, text=True, check=False
    )
    assert install.returncode == 0, install.stdout + install.stderr
    assert git(repo, "add", "-A").returncode == 0

    def commit(message: str) -> subprocess.CompletedProcess[str]:
        return git(repo, "commit", "-q", "-m", message, env=env)

    good = commit("snapshot and its golden files")
    assert good.returncode == 0, good.stdout + good.stderr
    assert "kindplan render --check" in good.stdout + good.stderr  # the hook did run
    snapshot = repo / "cluster.yaml"
    snapshot.write_text(snapshot.read_text().replace("172.18.0.11", "172.18.0.21"))
    assert git(repo, "add", "cluster.yaml").returncode == 0
    stale = commit("a node moved, golden files not rendered again")
    out = stale.stdout + stale.stderr
    assert stale.returncode == 1, out
    assert "-route replace 10.244.1.0/24 via 172.18.0.11 dev eth0 proto 75" in out
    assert "+route replace 10.244.1.0/24 via 172.18.0.21 dev eth0 proto 75" in out
    assert "render: golden differs from the rendered files" in out
    # the refusal names the command that renders them again, and it does
    hint = next(line for line in out.splitlines() if line.startswith("hint: "))
    again = "kindplan render cluster.yaml --all-nodes --out golden"
    assert hint == f"hint: to render them again: {again}"
    fixed = subprocess.run(
        [sys.executable, "-m", "kindplan.cli", *again.split()[1:]],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    assert fixed.returncode == 0, fixed.stderr
    assert git(repo, "add", "-A").returncode == 0
    assert commit("rendered again").returncode == 0
    log = git(repo, "log", "--format=%s").stdout
    assert log == "rendered again\nsnapshot and its golden files\n", "the stale one was refused"
