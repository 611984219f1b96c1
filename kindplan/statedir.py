"""Where kindplan keeps its state for a target (the host, or a network namespace) in --state-dir.

<state-dir>/apply-<host|NS>.lock          one applier at a time (locking.py)
<state-dir>/<host|netns-NS>/journal.json  undo generations (journal.py)
<state-dir>/<host|netns-NS>/converged.json the converged fast path (converged.py)
"""

from __future__ import annotations

from pathlib import Path


def apply_lock(state_dir: Path, netns: str | None) -> Path:
    return state_dir / f"apply-{netns or 'host'}.lock"


def target_dir(state_dir: Path, netns: str | None) -> Path:
    return state_dir / ("host" if netns is None else f"netns-{netns}")
