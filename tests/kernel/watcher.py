"""Running `kindplan apply --watch` as a real process in tests, and reading its log as it goes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from shell import sh

from kindplan.node.netns import enter_netns


class Watcher:
    """A reconcile loop process; its stderr lines are collected by a thread as they come."""

    def __init__(
        self,
        args: list[str],
        *,
        in_netns: str | None = None,
        stdin: bool = False,
        prefix: tuple[str, ...] | list[str] = (),  # a command that execs the loop (prlimit ...)
    ):
        netns = ["ip", "netns", "exec", in_netns] if in_netns else []
        self.proc = subprocess.Popen(
            [*netns, *prefix, sys.executable, "-m", "kindplan.cli", "apply", "--watch", *args],
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, args=(self.proc.stderr,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, pattern: str, *, after: int = 0, timeout: float = 15.0) -> int:
        """Index of the first log line from `after` on that matches `pattern` (a regex)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for i in range(after, len(self.lines)):
                    if regex.search(self.lines[i]):
                        return i
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        f"no log line matching {pattern!r} in {timeout} s; log:\n"
                        + "\n".join(self.lines)
                    )
                self._changed.wait(min(left, 0.2))

    def send(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def stop(
        self, sig: signal.Signals = signal.SIGTERM, timeout: float = 15.0
    ) -> tuple[int, float]:
        """Send `sig`; (exit status, seconds until the process was gone)."""
        started = time.monotonic()
        self.proc.send_signal(sig)
        status = self.proc.wait(timeout)
        elapsed = time.monotonic() - started
        self._reader.join(5)
        return status, elapsed

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def cpu_seconds(self) -> float:
        """User + system CPU time of the loop (the python process, under ip netns exec too)."""
        fields = Path(f"/proc/{self._python_pid()}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _python_pid(self) -> int:
        # `ip netns exec` execs the command in place: the pid is the loop's own.
        return self.proc.pid


def wait_until(check: Callable[[], bool], timeout: float = 10.0, step: float = 0.02) -> float:
    """Poll `check` until true; the seconds it took (fails the test after `timeout`)."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"still not true after {timeout} s")
        time.sleep(step)
    return time.monotonic() - started


def has_route(ns: str, dst: str) -> bool:
    return any(line.startswith(dst + " ") for line in sh("ip", "-n", ns, "route").splitlines())


def replace_file(path: Path, text: str) -> None:
    """Write as editors and kubectl do: a new file renamed into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.rename(path)


def http_get(ns: str, url: str) -> tuple[int, str]:
    """GET `url` from inside namespace `ns` (its own loopback): (status, body)."""
    with enter_netns(ns):
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                return reply.status, reply.read().decode()
        except urllib.error.HTTPError as e:
            body = e.read().decode()
            e.close()
            return e.code, body


def metric(text: str, name: str, labels: str = "") -> float:
    """The value of one sample in a Prometheus exposition (0 if absent)."""
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        if key == wanted:
            return float(value)
    return 0.0


def json_lines(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines]
