"""bench/run.py counts as kindplan's kernel writes only what kindplan could have made: the
kernel's own events on a fresh namespace (IPv6 link-local addresses and their routes once DAD
ends) are not."""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from shell import sh

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]


def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fresh_links(ns: str) -> None:
    """Links just up, as the bench's node namespaces are: IPv6 DAD still running on them."""
    sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
    sh("ip", "-n", ns, "addr", "add", "198.18.0.10/15", "dev", "eth0")
    sh("ip", "-n", ns, "link", "set", "eth0p", "up")
    sh("ip", "-n", ns, "link", "set", "eth0", "up")
    time.sleep(0.1)  # the links' own up events are out before counting starts


def test_the_kernels_own_events_are_not_kindplans(
    make_netns: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = bench()
    quiet, counted_all = make_netns(), make_netns()
    fresh_links(quiet)
    assert run.route_events(quiet, lambda: run.settle(quiet)) == 0
    add = ["ip", "-n", quiet, "route", "add", "10.244.9.0/24", "via", "198.18.0.11", "proto", "75"]
    assert run.route_events(quiet, lambda: sh(*add)) == 1  # a write of kindplan's kind counts
    # the same wait counted as before, every event: the kernel did announce things meanwhile
    fresh_links(counted_all)
    monkeypatch.setattr(run, "could_be_kindplans", lambda event: True)
    assert run.route_events(counted_all, lambda: run.settle(counted_all)) > 0


def test_a_killed_bench_leaves_no_namespace() -> None:
    """SIGTERM (a timeout, a stopped run) unwinds through the namespace's deletion, and a bench
    sweeps what one killed outright (SIGKILL: its pid gone) left."""
    script = (
        "import importlib.util, sys, time\n"
        f"spec = importlib.util.spec_from_file_location('b', {str(ROOT / 'bench' / 'run.py')!r})\n"
        "run = importlib.util.module_from_spec(spec); spec.loader.exec_module(run)\n"
        "with run.bench_ns() as ns:\n"
        "    print(ns, flush=True); time.sleep(60)\n"
    )
    for signal_name in ("SIGTERM", "SIGKILL"):
        with subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
        ) as proc:
            assert proc.stdout is not None
            ns = proc.stdout.readline().strip()
            assert ns.startswith(f"kpb-{proc.pid}-") and ns in sh("ip", "netns", "list")
            proc.send_signal(getattr(signal, signal_name))
            proc.wait(timeout=30)
        if signal_name == "SIGKILL":  # nothing ran in the killed process: the next bench sweeps
            assert ns in sh("ip", "netns", "list")
            with bench().bench_ns():
                pass
        assert ns not in sh("ip", "netns", "list").split(), signal_name
