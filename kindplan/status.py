"""Exit statuses (README.md, "Exit statuses"): terraform's 2 for pending changes, sysexits else."""

from enum import IntEnum


class ExitStatus(IntEnum):
    OK = 0
    FAILURE = 1
    CHANGES_PENDING = 2  # only with --detailed-exitcode
    DROPPED = 2  # trace --detailed-exitcode: a walk ended dropped (plan's "something to fix")
    DRIFT = 3  # trace --detailed-exitcode: an observed node chose otherwise than desired
    USAGE = 64  # EX_USAGE; click's own 2 would read as "changes pending"
    INVALID_INPUT = 65  # EX_DATAERR
    INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a Ctrl-C
