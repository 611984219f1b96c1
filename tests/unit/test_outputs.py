"""Output paths a user names (render --out, trace --svg, plan --out): kindplan, often root,
replaces only a regular file there, follows no link and makes no folder above the one named."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from kindplan.errors import UsageError
from kindplan.node.files import write_output

ROOT = Path(__file__).resolve().parents[2]
SEED = str(ROOT / "fixtures" / "seed-lab" / "snapshot.yaml")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kindplan.cli", *args], capture_output=True, text=True, check=False
    )


def _link(path: Path) -> str:
    target = path.parent / "target.txt"
    target.write_text("kept\n")
    path.symlink_to(target)
    return "a symbolic link"


def _fifo(path: Path) -> str:
    os.mkfifo(path)
    return "a FIFO"


def _socket(path: Path) -> str:
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
    return "a socket"


def _folder(path: Path) -> str:
    path.mkdir()
    return "a directory"


MAKERS: dict[str, Callable[[Path], str]] = {
    "link": _link,
    "fifo": _fifo,
    "socket": _socket,
    "folder": _folder,
}


@pytest.mark.parametrize("make", MAKERS)
def test_write_output_replaces_only_a_regular_file(tmp_path: Path, make: str) -> None:
    path = tmp_path / "out.svg"
    kind = MAKERS[make](path)
    with pytest.raises(UsageError, match=rf"--svg {path}: not a regular file \({kind}\)"):
        write_output(path, "<svg/>", "--svg")
    assert (os.path.lexists(path) and not path.is_file()) or path.is_symlink()
    if make == "link":
        assert (tmp_path / "target.txt").read_text() == "kept\n"


def test_write_output_replaces_a_regular_file_and_makes_no_folder(tmp_path: Path) -> None:
    path = tmp_path / "out.svg"
    path.write_text("old")
    assert write_output(path, "new", "--svg")
    assert path.read_text() == "new"
    deep = tmp_path / "no" / "such" / "out.svg"
    with pytest.raises(UsageError, match=r"no folder .*/no/such \(kindplan makes no folders"):
        write_output(deep, "x", "--svg")
    assert not (tmp_path / "no").exists()


def test_trace_svg_at_a_fifo_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.svg"
    os.mkfifo(fifo)
    result = run(
        "trace", SEED, "--from", "k8s-guide-worker", "--to", "k8s-guide-worker2", "--svg", str(fifo)
    )
    assert result.returncode == 64, result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"error: --svg {fifo}: not a regular file (a FIFO); kindplan replaces only regular files"
    )
    assert fifo.is_fifo()


def test_render_out_makes_the_folder_named_but_none_above(tmp_path: Path) -> None:
    args = ("render", SEED, "--node", "k8s-guide-worker2", "--out")
    made = run(*args, str(tmp_path / "out"))
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "out" / "routes.batch").is_file()
    missing = run(*args, str(tmp_path / "a" / "b"))
    assert missing.returncode == 64
    assert "kindplan makes no folders above the one named" in missing.stderr
    assert not (tmp_path / "a").exists()


def test_render_out_through_a_link_is_refused(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    target = tmp_path / "elsewhere"
    target.write_text("kept\n")
    (tmp_path / "out" / "routes.batch").symlink_to(target)
    result = run("render", SEED, "--node", "k8s-guide-worker2", "--out", str(tmp_path / "out"))
    assert result.returncode == 64
    assert "routes.batch: not a regular file (a symbolic link)" in result.stderr
    assert target.read_text() == "kept\n"


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e999"])
@pytest.mark.parametrize("flag", ["--lock-timeout", "--max-delete-fraction"], ids=["lock", "guard"])
def test_numbers_that_do_not_compare_are_refused(flag: str, value: str) -> None:
    result = run("apply", SEED, "--node", "k8s-guide-worker2", "--watch", flag, value)
    assert result.returncode == 64, result.stderr
    assert result.stderr.startswith(f"error: {flag}: "), result.stderr
    assert "Traceback" not in result.stderr
