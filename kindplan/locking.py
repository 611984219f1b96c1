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
