"""One applier per node at a time, whatever --state-dir each names.

The lock is an exclusive flock on a file named after the network namespace's identity (the
device and inode of its nsfs file, the same kernel object by whatever path or mount namespace it
is reached) in LOCK_DIR, a folder only root may open. Every applier of one namespace takes the
same file, so an operator's one-shot apply and the DaemonSet (its own mount namespace, with
LOCK_DIR mounted from the host) exclude each other. The namespace's own file is not used: it is
world-readable, so any user could flock it and stop every apply.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from kindplan.errors import RuntimeFailure
from kindplan.node.netns import namespace_file
from kindplan.node.trust import ensure_trusted

LOCK_DIR = Path("/run/kindplan/locks")


def apply_lock(netns: str | None) -> Path:
    """The lock file of target `netns` (None: the namespace kindplan runs in)."""
    ns = namespace_file(netns)
    try:
        st = os.stat(ns)
    except FileNotFoundError as e:
        raise RuntimeFailure(f"no network namespace named {ns.name!r}") from e
    except OSError as e:
        raise RuntimeFailure(f"{ns}: cannot find the namespace to lock: {e.strerror}") from e
    return LOCK_DIR / f"netns-{st.st_dev:x}-{st.st_ino}.lock"


@contextmanager
def node_lock(
    path: Path, timeout: float, cancelled: Callable[[], bool] | None = None
) -> Iterator[None]:
    """Hold the lock at `path`; wait up to `timeout` seconds for another applier, then fail
    (sooner if `cancelled()` turns true: the loop was asked to stop)."""
    fd = _open_lock(path)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if cancelled is not None and cancelled():
                    raise RuntimeFailure(f"stopped while waiting for the lock on {path}") from None
                if time.monotonic() >= deadline:
                    raise RuntimeFailure(
                        f"another kindplan apply holds the lock on {path}; "
                        f"gave up after {timeout:g} s"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _open_lock(path: Path) -> int:
    try:
        ensure_trusted(path.parent)
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
        return os.open(path, flags, 0o600)
    except (OSError, RuntimeFailure) as e:
        cause = e if isinstance(e, OSError) else e.__cause__
        if isinstance(cause, PermissionError):
            raise RuntimeFailure(
                f"taking the node's lock in {path.parent} needs root; run it with sudo"
            ) from e
        if isinstance(e, RuntimeFailure):
            raise
        raise RuntimeFailure(f"{path}: cannot open the node's lock: {e.strerror}") from e


def lock_holder(path: Path) -> str | None:
    """Who holds the lock at `path` now ('pid 4242 (kindplan apply ...)'), or None if nobody:
    told to a user before a wait, so that it is not a silent one."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return None  # free; closing the file releases this probe at once
        except BlockingIOError:
            st = os.fstat(fd)
    finally:
        os.close(fd)
    # /proc/locks names the process that took the lock ("1: FLOCK  ADVISORY  WRITE 4242
    # 00:2b:1234 0 EOF"; waiters read "1: -> FLOCK"), which may have exited since while a child
    # that inherited the descriptor holds it on: then the holder is whoever has the file open.
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        locks = Path("/proc/locks").read_text().splitlines()
    except OSError:
        locks = []
    for fields in (line.split() for line in locks):
        if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == ident:
            live = fields[4] if _has_open(fields[4], st) else _opener(st)
            if live is not None:
                return _describe(live)
    return "another process"


def _has_open(pid: str, st: os.stat_result) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            other = os.stat(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
            return True
    return False


def _opener(st: os.stat_result) -> str | None:
    """A live process with the lock file open, other than this one."""
    mine = str(os.getpid())
    for pid in os.listdir("/proc"):
        if pid.isdigit() and pid != mine and _has_open(pid, st):
            return pid
    return None


def _describe(pid: str) -> str:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return f"pid {pid}"
    text = command.replace(b"\0", b" ").decode(errors="replace").strip()
    return f"pid {pid} ({text if len(text) <= 200 else text[:200] + '...'})"
