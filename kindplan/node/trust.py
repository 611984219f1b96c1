"""Which folders kindplan may keep its state in: the rule sshd's StrictModes applies to ~/.ssh.

kindplan runs as root beside other users. Its journal tells a later rollback what to write into
the kernel and onto the disk, its converged record lets an apply skip its work, its lock decides
who may apply: whoever can write one of them, or swap a folder on the way to one, steers root.
So a state folder must belong to the user kindplan runs as (or root) and be writable by no one
else, and so must every folder above it, except that a sticky folder (/tmp) may be writable by
all: there nobody can rename or remove an entry they do not own. Checked by path, from / down,
with lstat: a symbolic link on the way is refused, since whoever owns its folder could point it
elsewhere between the check and the use.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from kindplan.errors import RuntimeFailure

_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH


class UntrustedPath(RuntimeFailure):
    """A state path that another user could write or swap: kindplan will not use it."""


def check_trusted(folder: Path) -> None:
    """UntrustedPath unless `folder` and every folder above it are kindplan's to trust."""
    _check_path(Path(os.path.abspath(folder)), Path(os.path.abspath(folder)))


def check_existing(folder: Path) -> None:
    """check_trusted for the part of `folder`'s path that exists (a read makes no folder)."""
    folder = Path(os.path.abspath(folder))
    have = folder
    while not os.path.lexists(have):
        have = have.parent
    _check_path(have, folder)


def _check_path(have: Path, folder: Path) -> None:
    for path in (*reversed(have.parents), have):
        _check_one(path, path == folder, folder)


def ensure_trusted(folder: Path, mode: int = 0o700) -> None:
    """Make `folder` (and missing folders above it) with `mode`, under trusted folders only.

    A folder that exists is checked as it is; one kindplan makes is its own from the start
    (made 0700, so no other user ever could have written into it).
    """
    folder = Path(os.path.abspath(folder))
    missing: list[Path] = []
    path = folder
    while not os.path.lexists(path):
        missing.append(path)
        path = path.parent
    _check_path(path, folder)
    for new in reversed(missing):
        try:
            os.mkdir(new, mode)
        except FileExistsError:
            pass  # made meanwhile: checked below like any other
        except OSError as e:
            raise RuntimeFailure(f"{new}: cannot create the state folder: {e.strerror}") from e
        _check_one(new, True, folder)


def _check_one(path: Path, last: bool, folder: Path) -> None:
    try:
        st = os.lstat(path)
    except OSError as e:
        raise RuntimeFailure(f"{path}: cannot check the state folder: {e.strerror}") from e
    if stat.S_ISLNK(st.st_mode):
        raise _refuse(path, folder, "is a symbolic link", "name the folder it points to")
    if not stat.S_ISDIR(st.st_mode):
        raise _refuse(path, folder, "is not a directory", "choose another --state-dir")
    me = os.geteuid()
    if st.st_uid not in (0, me):
        raise _refuse(
            path, folder, f"is owned by uid {st.st_uid}", f"chown root {path}, or choose another"
        )
    writable = st.st_mode & _OTHERS_WRITE
    if writable and (last or not st.st_mode & stat.S_ISVTX):
        who = "group" if writable == stat.S_IWGRP else "others"
        raise _refuse(path, folder, f"is writable by {who}", f"chmod go-w {path}")


def _refuse(path: Path, folder: Path, what: str, fix: str) -> UntrustedPath:
    inside = "" if path == folder else f" (on the way to {folder})"
    return UntrustedPath(
        f"{path}{inside} {what}: another user could steer kindplan through its state; {fix}"
    )
