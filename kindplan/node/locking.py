"""One applier per node at a time, whatever --state-dir each names.

The lock is an exclusive flock on the network namespace itself: its nsfs file (/run/netns/NAME for
a --netns target, /proc/thread-self/ns/net for the namespace kindplan runs in). Every path to one
namespace opens the same kernel object, so an operator's one-shot apply and the DaemonSet (its own
mount namespace, its own state dir) exclude each other, and no lock file is written anywhere: a
full or read-only state dir cannot stop the lock, nor a rejected --netns create one.
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


def apply_lock(netns: str | None) -> Path:
    """What the lock of target `netns` (None: the namespace kindplan runs in) is taken on."""
    return namespace_file(netns)


@contextmanager
def node_lock(
    path: Path, timeout: float, cancelled: Callable[[], bool] | None = None
) -> Iterator[None]:
    """Hold the lock at `path`; wait up to `timeout` seconds for another applier, then fail
    (sooner if `cancelled()` turns true: the loop was asked to stop)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as e:
        raise RuntimeFailure(f"no network namespace named {path.name!r}") from e
    except OSError as e:
        raise RuntimeFailure(f"{path}: cannot open it to lock the node: {e.strerror}") from e
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
    # /proc/locks names the holder even when it wrote no pid into the file (flock(1), an older
    # kindplan): "1: FLOCK  ADVISORY  WRITE 4242 00:2b:1234 0 EOF"; waiters read "1: -> FLOCK".
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        locks = Path("/proc/locks").read_text().splitlines()
    except OSError:
        locks = []
    for fields in (line.split() for line in locks):
        if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == ident:
            try:
                command = Path(f"/proc/{fields[4]}/cmdline").read_bytes()
            except OSError:
                return f"pid {fields[4]}"
            text = command.replace(b"\0", b" ").decode(errors="replace").strip()
            return f"pid {fields[4]} ({text if len(text) <= 200 else text[:200] + '...'})"
    return "another process"
