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
from errno import EPERM
from pathlib import Path

from kindplan.errors import RuntimeFailure, UsageError

NETNS_RUN_DIR = "/run/netns"
_CLONE_NEWNET = 0x40000000


# capabilities(7) bit numbers: what the kernel checks where kindplan needs root.
CAP_NET_ADMIN = 12  # routes, addresses, links, iptables, forwarding sysctls
CAP_SYS_ADMIN = 21  # entering (setns), creating and deleting network namespaces
_CAP_NAMES = {CAP_NET_ADMIN: "CAP_NET_ADMIN", CAP_SYS_ADMIN: "CAP_SYS_ADMIN"}


def _effective_caps() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def require_caps(command: str, needs: dict[int, str]) -> None:
    """Refuse up front, in words, a command this process lacks the capabilities for (the
    kernel's own answer, deep inside, is a bare 'Operation not permitted')."""
    have = _effective_caps()
    missing = [f"{_CAP_NAMES[cap]} {why}" for cap, why in needs.items() if not have >> cap & 1]
    if missing:
        raise RuntimeFailure(f"{command} needs root: {'; '.join(missing)}; run it with sudo")


def _setns(fd: int, name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        if errno == EPERM:
            raise RuntimeFailure(
                f"--netns {name}: entering a network namespace needs root "
                "(CAP_SYS_ADMIN); run it with sudo"
            )
        raise RuntimeFailure(f"setns: {os.strerror(errno)}")


def check_name(name: str | None) -> None:
    """Refuse a --netns that is not a plain name (before anything is opened or created)."""
    if name is not None and ("/" in name or name in {"", ".", ".."} or "\0" in name):
        raise UsageError(f"--netns: {name!r} is not a namespace name")


def namespace_file(name: str | None) -> Path:
    """The nsfs file of namespace `name`, or of the calling thread's namespace for None."""
    check_name(name)
    return Path("/proc/thread-self/ns/net") if name is None else Path(NETNS_RUN_DIR, name)


def namespace_identity() -> str:
    """The calling thread's network namespace as `dev:inode` of its nsfs file: the same kernel
    object by every path to it (a journal records it; rollback acts only where it matches)."""
    st = os.stat("/proc/thread-self/ns/net")
    return f"{st.st_dev}:{st.st_ino}"


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
        _setns(target, name)
        try:
            yield
        finally:
            _setns(home, name)
    finally:
        os.close(target)
        os.close(home)
