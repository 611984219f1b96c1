"""Just enough inotify (through libc, no dependency) to wake the reconcile loop on a file change.

The watch is on the directory that holds the snapshot, not on the file: editors and
`kubectl create configmap` mounts replace files by renaming a new one into place (a ConfigMap swaps
its `..data` symlink), and a watch on the old inode would never see the new content.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

IN_MODIFY = 0x002
IN_ATTRIB = 0x004
IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

# A file is complete at close-after-write or when renamed into place; IN_MODIFY would wake the
# loop in the middle of a write and have it read half a file.
CHANGE_MASK = IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_CREATE | IN_ATTRIB
_HEADER = struct.Struct("iIII")


class DirectoryWatch:
    """An inotify descriptor watching one directory; `names()` drains the names that changed."""

    def __init__(self, directory: str) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.fd: int = fd
        self.directory = directory
        self.watching = False
        self.rearm()

    def rearm(self) -> bool:
        """(Re)add the watch, e.g. once a directory that was missing exists; True if watching."""
        if self.watching:
            return True
        mask = CHANGE_MASK | IN_DELETE_SELF | IN_MOVE_SELF
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(self.directory), mask)
        self.watching = wd >= 0
        return self.watching

    def names(self) -> set[str]:
        """The names of entries changed since the last call ('': the directory itself, or lost
        events)."""
        changed: set[str] = set()
        while True:
            try:
                data = os.read(self.fd, 65536)
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    return changed
                raise
            offset = 0
            while offset + _HEADER.size <= len(data):
                _wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
                raw = data[offset + _HEADER.size : offset + _HEADER.size + length]
                offset += _HEADER.size + length
                if mask & (IN_IGNORED | IN_MOVE_SELF):  # gone or moved: watch the path again
                    if mask & IN_MOVE_SELF:
                        self._libc.inotify_rm_watch(self.fd, _wd)
                    self.watching = False
                    changed.add("")
                elif mask & IN_Q_OVERFLOW:  # events were lost: anything may have changed
                    changed.add("")
                else:
                    changed.add(os.fsdecode(raw.rstrip(b"\0")))

    def close(self) -> None:
        os.close(self.fd)
