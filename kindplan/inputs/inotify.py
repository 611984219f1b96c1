"""A directory watch (inotify, by inotify_simple) to wake the reconcile loop on a file change.

The watch is on the directory that holds the snapshot, not on the file: editors and
`kubectl create configmap` mounts replace files by renaming a new one into place (a ConfigMap swaps
its `..data` symlink), and a watch on the old inode would never see the new content.
"""

from __future__ import annotations

import contextlib

from inotify_simple import INotify, flags

# A file is complete at close-after-write or when renamed into place; IN_MODIFY would wake the
# loop in the middle of a write and have it read half a file.
CHANGE_MASK = (
    flags.CLOSE_WRITE | flags.MOVED_TO | flags.MOVED_FROM | flags.DELETE | flags.CREATE
    | flags.ATTRIB
)  # fmt: skip


class DirectoryWatch:
    """An inotify descriptor watching one directory; `names()` drains the names that changed."""

    def __init__(self, directory: str) -> None:
        self._inotify = INotify(nonblocking=True)
        self.fd: int = self._inotify.fileno()
        self.directory = directory
        self.watching = False
        self.rearm()

    def rearm(self) -> bool:
        """(Re)add the watch, e.g. once a directory that was missing exists; True if watching."""
        if not self.watching:
            with contextlib.suppress(OSError):  # missing still: polling reads it every round
                self._inotify.add_watch(
                    self.directory, CHANGE_MASK | flags.DELETE_SELF | flags.MOVE_SELF
                )
                self.watching = True
        return self.watching

    def names(self) -> set[str]:
        """The names of entries changed since the last call ('': the directory itself, or lost
        events)."""
        changed: set[str] = set()
        while events := self._inotify.read(timeout=0):
            for event in events:
                if event.mask & (flags.IGNORED | flags.MOVE_SELF):  # gone or moved: watch again
                    if event.mask & flags.MOVE_SELF:
                        with contextlib.suppress(OSError):
                            self._inotify.rm_watch(event.wd)
                    self.watching = False
                    changed.add("")
                elif event.mask & flags.Q_OVERFLOW:  # events were lost: anything may have changed
                    changed.add("")
                else:
                    changed.add(event.name)
        return changed

    def close(self) -> None:
        self._inotify.close()
