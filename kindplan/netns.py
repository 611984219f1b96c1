"""Entering a named network namespace (as `ip netns exec` does, without a new process).

Everything kindplan does after entering (netlink sockets, iptables-save/-restore it starts,
/proc/sys/net) then happens in that namespace; files stay where they are (the mount namespace is
not changed), which is why --conf-dir and --state-dir are separate options.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kindplan.errors import RuntimeFailure, UsageError

NETNS_RUN_DIR = "/run/netns"
_CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise RuntimeFailure(f"setns: {os.strerror(errno)}")


def check_name(name: str | None) -> None:
    """Refuse a --netns that is not a plain name (before anything is opened or created)."""
    if name is not None and ("/" in name or name in {"", ".", ".."} or "\0" in name):
        raise UsageError(f"--netns: {name!r} is not a namespace name")


def namespace_file(name: str | None) -> Path:
    """The nsfs file of namespace `name`, or of the calling thread's namespace for None."""
    check_name(name)
    return Path("/proc/thread-self/ns/net") if name is None else Path(NETNS_RUN_DIR, name)


@contextmanager
def enter_netns(name: str | None) -> Iterator[None]:
    """Run the body inside network namespace `name` (None: stay), and come back afterwards."""
    if name is None:
        yield
        return
    check_name(name)
    try:
        target = os.open(os.path.join(NETNS_RUN_DIR, name), os.O_RDONLY)
    except FileNotFoundError as e:  # the machine's state, not the command line: exit 1
        raise RuntimeFailure(f"no network namespace named {name!r}") from e
    except OSError as e:
        raise RuntimeFailure(f"--netns {name}: {e.strerror}") from e
    try:
        # setns moves only the calling thread: come back to where this thread was.
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    except OSError:
        os.close(target)
        raise
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)
