"""Replay tests/fuzz/corpus: each file through the real command line, as a process, with the exit
status recorded in corpus/EXPECTED.

How each file is fed (by its name):
  saved-plan-*  apply --plan FILE --state-dir TMP --lock-timeout 1
  nodelist-*    validate FILE --pod-subnet 10.244.0.0/16 --pod-subnet fd00:10:244::/48
  the others    validate FILE
and every file expected to be fine (0) also goes through render --all-nodes --out TMP.

Beyond the status: no traceback, one-line messages, no hang (a time limit per process), no
runaway memory (RLIMIT_AS), not killed by a signal; a saved plan writes nothing outside
--state-dir (nothing at all for 65) and never reaches the kernel: every saved plan in the corpus
names a namespace that does not exist (checked before it is run), and at the end the host's
proto-75 routes, KIND-MASQ-AGENT chains and namespaces are what they were. The processes run a
few at a time, so the files that hang cost their time limit once, not one after another.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from shell import host_network_state

CORPUS = Path(__file__).resolve().parent / "corpus"
POD_SUBNETS = ["--pod-subnet", "10.244.0.0/16", "--pod-subnet", "fd00:10:244::/48"]
TIMEOUT = 15.0  # seconds per process; a good answer takes 1 s (more on a loaded machine)
MEMORY = 1 << 30  # RLIMIT_AS per process
PARALLEL = 4
NETNS_DIR = Path("/run/netns")
SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _expected() -> dict[str, int]:
    expected = {}
    for line in (CORPUS / "EXPECTED").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, status = line.split()
            expected[name] = int(status)
    return expected


EXPECTED = _expected()


@dataclass
class Replay:
    """One corpus file, the commands it goes through and what they did."""

    name: str
    work: Path
    commands: dict[str, list[str]] = field(default_factory=dict)
    results: dict[str, tuple[int | None, str, str]] = field(default_factory=dict)
    before: set[str] = field(default_factory=set)
    after: set[str] = field(default_factory=set)


def _tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def _commands(name: str, work: Path) -> dict[str, list[str]]:
    path = str(CORPUS / name)
    if name.startswith("saved-plan-"):
        state = str(work / "s1" / "s2" / "s3" / "state")  # a '..' in a lock name stays in `work`
        return {"apply": ["apply", "--plan", path, "--state-dir", state, "--lock-timeout", "1"]}
    extra = POD_SUBNETS if name.startswith("nodelist-") else []
    commands = {"validate": ["validate", path, *extra]}
    if EXPECTED[name] == 0:
        commands["render"] = ["render", path, "--all-nodes", "--out", str(work / "out"), *extra]
    return commands


def _netns_of(name: str) -> Any:
    """The netns a saved plan in the corpus names, read independently of kindplan (PyYAML reads
    JSON too; anchors and aliases come out as shared objects, so a bomb costs nothing here)."""
    data = (CORPUS / name).read_bytes()
    try:
        doc = yaml.load(data.decode("utf-8-sig"), Loader=SAFE_LOADER)
    except (yaml.YAMLError, UnicodeDecodeError, ValueError):
        return "(unreadable)"
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), dict):
        return "(no inputs)"
    return doc["inputs"].get("netns")


def assert_safe(name: str) -> None:
    """A saved plan is run only if it cannot touch this host: never null (the host's own
    namespace), never an existing namespace."""
    netns = _netns_of(name)
    assert netns is not None, f"{name}: netns null or missing would apply to THIS host; not run"
    if isinstance(netns, str) and "/" not in netns and netns not in {"", ".", ".."}:
        existing = set(os.listdir(NETNS_DIR)) if NETNS_DIR.is_dir() else set()
        assert netns not in existing, f"{name}: names the existing namespace {netns!r}; not run"


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def _run_all(jobs: list[tuple[Replay, str]]) -> None:
    """Run the jobs as `python -m kindplan.cli`, PARALLEL at a time, each killed at TIMEOUT."""
    pending = list(jobs)
    running: list[tuple[Replay, str, subprocess.Popen[bytes], Any, Any, float]] = []
    with contextlib.ExitStack() as stack:
        while pending or running:
            while pending and len(running) < PARALLEL:
                replay, label = pending.pop(0)
                out = stack.enter_context(tempfile.TemporaryFile())
                err = stack.enter_context(tempfile.TemporaryFile())
                proc = subprocess.Popen(
                    [sys.executable, "-m", "kindplan.cli", *replay.commands[label]],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    cwd=replay.work,
                    # the memory limit; safe here: the test process runs no other threads
                    preexec_fn=_limit_memory,  # noqa: PLW1509
                )
                running.append((replay, label, proc, out, err, time.monotonic()))
            time.sleep(0.02)
            for entry in list(running):
                replay, label, proc, out, err, started = entry
                status: int | None = proc.poll()
                if status is None and time.monotonic() - started < TIMEOUT:
                    continue
                if status is None:
                    proc.kill()
                    proc.wait()
                running.remove(entry)
                out.seek(0)
                err.seek(0)
                replay.results[label] = (
                    status,
                    out.read().decode(errors="replace"),
                    err.read().decode(errors="replace"),
                )


HOST_BEFORE: dict[str, str] = {}


@pytest.fixture(scope="module")
def replays(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Replay]:
    """Every corpus file through its commands: the first command of each at once, then the
    second (render) for the files whose first one answered (a hang costs its time limit once)."""
    HOST_BEFORE.update(host_network_state())
    base = tmp_path_factory.mktemp("corpus")
    replays = {}
    for name in sorted(EXPECTED):
        work = base / name.replace(".", "_")
        work.mkdir()
        replays[name] = Replay(name, work, _commands(name, work))
        if name.startswith("saved-plan-"):
            assert_safe(name)
        replays[name].before = _tree(work)
    _run_all([(r, next(iter(r.commands))) for r in replays.values()])

    def answered(r: Replay) -> bool:
        status = r.results[next(iter(r.commands))][0]
        return status is not None and status >= 0

    _run_all([(r, "render") for r in replays.values() if "render" in r.commands and answered(r)])
    for replay in replays.values():
        replay.after = _tree(replay.work)
    return replays


def test_corpus_is_listed() -> None:
    """Every corpus file has an expected status, every listed file exists, and there are many."""
    files = {p.name for p in CORPUS.iterdir() if p.name != "EXPECTED"}
    assert files == set(EXPECTED), (
        f"not in EXPECTED: {sorted(files - set(EXPECTED))}; "
        f"missing files: {sorted(set(EXPECTED) - files)}"
    )
    assert len(files) >= 25
    assert all(status in {0, 1, 65} for status in EXPECTED.values())
    assert all((CORPUS / f).stat().st_size <= 64 * 1024 for f in files), "keep corpus files small"


def _check(replay: Replay, label: str, allowed: set[int]) -> None:
    status, out, err = replay.results.get(label, (None, "", "(not run: the first command hung)"))
    what = (
        f"{replay.name}: kindplan {label} -> {status}\n"
        f"stdout: {out[:500]!r}\nstderr: {err[:1500]!r}"
    )
    assert status is not None, f"no answer within {TIMEOUT:g} s (killed): a hang. {what}"
    assert status >= 0, f"killed by signal {signal.Signals(-status).name}. {what}"
    assert "Traceback" not in err, f"a traceback on stderr. {what}"
    for line in err.splitlines():
        assert line.startswith(("error: ", "warning: ")), (
            f"not a one-line message: {line[:200]!r}. {what}"
        )
    assert status in allowed, f"exit {status}, expected {allowed}. {what}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_file(replays: dict[str, Replay], name: str) -> None:
    """The file gets its expected exit status with one-line messages, in time; a saved plan writes
    nothing outside --state-dir (nothing at all for 65); a good snapshot renders conflists whose
    MTU is an integer (CNI plugins decode it into a Go int)."""
    replay = replays[name]
    expected = EXPECTED[name]
    written = replay.after - replay.before
    if name.startswith("saved-plan-"):
        _check(replay, "apply", {expected})
        inside = ("s1", "s1/s2", "s1/s2/s3", "s1/s2/s3/state")
        outside = {p for p in written if p not in inside and not p.startswith("s1/s2/s3/state/")}
        assert not outside, f"{name}: apply wrote outside --state-dir: {sorted(outside)}"
        if expected == 65:
            assert not written, f"{name}: exit 65 but apply wrote {sorted(written)}"
        return
    _check(replay, "validate", {expected})
    if "render" not in replay.commands:
        assert not written, f"{name}: validate wrote {sorted(written)}"
        return
    _check(replay, "render", {expected})
    for path in sorted((replay.work / "out").rglob("*.conflist")):
        mtu = json.loads(path.read_text())["plugins"][0]["mtu"]
        assert type(mtu) is int, f'{name}: {path.name}: "mtu": {mtu!r} is not an integer'


def test_zz_host_network_unchanged(replays: dict[str, Replay]) -> None:
    """The host's proto-75 routes and KIND-MASQ-AGENT chains are as before; no namespace that a
    saved plan names was made."""
    assert host_network_state() == HOST_BEFORE
