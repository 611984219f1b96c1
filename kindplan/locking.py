"""One applier per node at a time: an exclusive flock on a file in the state directory."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from kindplan.errors import RuntimeFailure


@contextmanager
def node_lock(
    path: Path, timeout: float, cancelled: Callable[[], bool] | None = None
) -> Iterator[None]:
    """Hold the lock at `path`; wait up to `timeout` seconds for another applier, then fail
    (sooner if `cancelled()` turns true: the loop was asked to stop)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise RuntimeFailure(f"{path}: cannot open the lock file: {e.strerror}") from e
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if cancelled is not None and cancelled():
                    raise RuntimeFailure(f"stopped while waiting for {path}") from None
                if time.monotonic() >= deadline:
                    raise RuntimeFailure(
                        f"another kindplan apply holds {path}; gave up after {timeout:g} s"
                    ) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
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
