"""Writing and comparing generated files: the only code here that touches the disk."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from kindplan.errors import RuntimeFailure, UsageError


class NotRegularFile(OSError):
    """A path kindplan reads holds a directory, a FIFO, a socket or a device."""


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISLNK, "a symbolic link"),
)


def read_regular(path: Path, *, follow: bool = True) -> bytes:
    """The bytes of `path` if it is a regular file; NotRegularFile (an OSError) if it is not.

    Opened with O_NONBLOCK and checked with fstat before reading: opening or reading a FIFO
    left at the path would otherwise wait for a writer, forever, while the caller holds the
    node lock. `follow=False` refuses a symbolic link too (O_NOFOLLOW).
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno == errno.ELOOP and not follow:
            raise NotRegularFile(e.errno, "not a regular file (a symbolic link)") from e
        raise
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = next((name for test, name in _KINDS if test(mode)), "an unknown kind")
        raise NotRegularFile(errno.EINVAL, f"not a regular file ({kind})")
    with os.fdopen(fd, "rb") as f:
        return f.read()


def write_output(path: Path, content: str, flag: str, mode: int = 0o644) -> bool:
    """write_atomic to a path a user named with `flag` (--out, --svg): never over anything but a
    regular file (a device, a FIFO, a symbolic link: root would destroy or follow it), and never
    into a folder that does not exist (a typo must not leave folders made by root)."""
    try:
        there: int | None = os.lstat(path).st_mode
    except FileNotFoundError:
        there = None
    except OSError as e:
        raise UsageError(f"{flag} {path}: {e.strerror}") from e
    if there is not None and not stat.S_ISREG(there):
        kind = next((name for test, name in _KINDS if test(there)), "an unknown kind")
        raise UsageError(
            f"{flag} {path}: not a regular file ({kind}); kindplan replaces only regular files"
        )
    if not path.parent.is_dir():
        raise UsageError(
            f"{flag} {path}: no folder {path.parent} (kindplan makes no folders: create it first)"
        )
    return write_atomic(path, content, mode, make_parents=False)


def write_atomic(path: Path, content: str, mode: int = 0o644, *, make_parents: bool = True) -> bool:
    """Replace `path` with `content` atomically; returns False (and writes nothing) if it is equal.

    The temporary file lives in the same folder (rename is atomic only within one file system) and
    starts with a dot and ends in .tmp, a name that no CNI runtime loads as a network config.
    """
    data = content.encode("utf-8")
    try:
        if read_regular(path) == data:
            return False
    except (FileNotFoundError, NotRegularFile):  # replaced below (a directory fails there)
        pass
    except OSError as e:
        raise RuntimeFailure(f"{path}: cannot read: {e.strerror}") from e
    tmp_name = ""
    try:
        if make_parents:
            path.parent.mkdir(parents=True, exist_ok=True)
        import tempfile  # a write's: a converged apply reads only

        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
        tmp_name = ""
        _fsync_dir(path.parent)
    except OSError as e:
        raise RuntimeFailure(f"{path}: cannot write: {e.strerror}") from e
    finally:
        if tmp_name:
            Path(tmp_name).unlink(missing_ok=True)
    return True


def remove_file(path: Path) -> None:
    """Remove `path` (a rollback of a conflist kindplan created), durably."""
    try:
        path.unlink(missing_ok=True)
        _fsync_dir(path.parent)
    except OSError as e:
        raise RuntimeFailure(f"{path}: cannot remove: {e.strerror}") from e


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_tree(root: Path, files: Mapping[str, str], flag: str) -> list[str]:
    """Write every file (relative path -> text) below `root`, the folder a user named with
    `flag`, made if its parent exists (and its subfolders); returns the paths that changed."""
    folders = {root, *((root / rel).parent for rel in files)}
    for folder in sorted(folders, key=lambda p: len(p.parts)):
        _output_folder(folder, root, flag)
    return [rel for rel, text in files.items() if write_output(root / rel, text, flag)]


def _output_folder(folder: Path, root: Path, flag: str) -> None:
    """`folder` is a folder (not a link to one), made here if its parent is one already."""
    try:
        mode = os.lstat(folder).st_mode
    except FileNotFoundError:
        if not folder.parent.is_dir():
            raise UsageError(
                f"{flag} {root}: no folder {folder.parent} "
                "(kindplan makes no folders above the one named: create it first)"
            ) from None
        try:
            folder.mkdir()
        except OSError as e:
            raise RuntimeFailure(f"{folder}: cannot create: {e.strerror}") from e
        return
    except OSError as e:
        raise UsageError(f"{flag} {folder}: {e.strerror}") from e
    if not stat.S_ISDIR(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "a regular file")
        raise UsageError(f"{flag} {folder}: not a folder ({kind})")


def diff_tree(root: Path, files: Mapping[str, str]) -> str:
    """A unified diff from what `root` holds to `files`; empty when they agree exactly.

    Files below `root` that would not be generated count as differences too (a stale golden file).
    """
    import difflib  # render --check's: not every command's that reads or writes a file

    if not root.is_dir():
        raise RuntimeFailure(f"{root}: not a directory")
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    chunks: list[str] = []
    for rel in sorted(on_disk | set(files)):
        old = _read_text(root / rel) if rel in on_disk else ""
        new = files.get(rel, "")
        if old == new == "" and (rel in on_disk) != (rel in files):
            # an empty file has no lines to diff, but it is there (or missing) all the same
            where = f"{root}" if rel in on_disk else "rendered"
            chunks.append(f"Only in {where}: {rel} (empty)\n")
        elif old != new:
            chunks.extend(
                difflib.unified_diff(
                    old.splitlines(keepends=True),
                    new.splitlines(keepends=True),
                    fromfile=f"{root / rel}" if rel in on_disk else "/dev/null",
                    tofile=f"rendered/{rel}" if rel in files else "/dev/null",
                )
            )
            if chunks and not chunks[-1].endswith("\n"):
                chunks[-1] += "\n\\ No newline at end of file\n"
    return "".join(chunks)


def _read_text(path: Path) -> str:
    try:
        return path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RuntimeFailure(f"{path}: cannot read: {e}") from e
