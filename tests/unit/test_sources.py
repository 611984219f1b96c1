"""The one place a source is opened (kindplan/inputs/sources.py): exactly one of SNAPSHOT and
--kube for plan and apply, once or --watch, refused before anything is read or locked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kindplan.cli import main
from kindplan.inputs.kubeclient import MISSING_CLIENT

ROOT = Path(__file__).resolve().parents[2]
SEED = str(ROOT / "fixtures" / "seed-lab" / "snapshot.yaml")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["plan"], "give exactly one of SNAPSHOT (a file, a directory or -) and --kube"),
        (
            ["plan", SEED, "--kube"],
            "give exactly one of SNAPSHOT (a file, a directory or -) and --kube",
        ),
        (
            ["apply", SEED, "--kube"],
            "give exactly one of SNAPSHOT (a file, a directory or -) and --kube",
        ),
        (
            ["apply", "--kube", "--plan", "saved.json"],
            "--plan FILE applies a saved plan: not with --kube",
        ),
        (["apply", SEED, "--kubeconfig", "k"], "--kubeconfig goes with --kube"),
        (["plan", SEED, "--kubeconfig", "k"], "--kubeconfig goes with --kube"),
        (["apply"], "give exactly one of SNAPSHOT and --plan FILE"),
    ],
)
def test_one_source_or_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], message: str
) -> None:
    state = ["--state-dir", str(tmp_path / "state"), "--netns", "kp-never-made"]
    assert main([*args, *state]) == 64
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", f"error: {message}\n")
    assert not (tmp_path / "state").exists()


def test_kube_once_without_the_client_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "kubernetes", None)
    assert main(["plan", "--kube", "--node", "kind-worker", "--netns", "kp-never-made"]) == 64
    assert capsys.readouterr().err == f"error: {MISSING_CLIENT}\n"


def test_a_fifo_at_the_source_path_is_refused_at_once(tmp_path: Path) -> None:
    """#21: a FIFO swapped in at a watched path held the loop in open() for good (not even
    SIGTERM reached it); it is a source error now, in one line, without waiting for a writer."""
    from kindplan.errors import SourceError
    from kindplan.inputs.files import FileSource

    path = tmp_path / "cluster.yaml"
    path.write_bytes((ROOT / "fixtures" / "seed-lab" / "snapshot.yaml").read_bytes())
    source = FileSource(str(path))
    try:
        assert source.read().snapshot.nodes
        path.unlink()
        os.mkfifo(path)
        with pytest.raises(SourceError, match=r"cannot read: not a regular file \(a FIFO\)"):
            source.read()
    finally:
        source.close()
    one_shot = subprocess.run(
        [sys.executable, "-m", "kindplan.cli", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert one_shot.returncode == 65
    assert one_shot.stderr == (
        f"error: {path}: cannot read: not a regular file (a FIFO); for a pipe, use - (stdin)\n"
    )
