"""Where kindplan keeps its state for a target (the host, or a network namespace) in --state-dir.

<state-dir>/<host|netns-NS>/journal.json   undo generations (journal.py)
<state-dir>/<host|netns-NS>/converged.json the converged fast path (converged.py)

The apply lock is not here: it belongs to the namespace, whatever the state dir (locking.py).
"""

from __future__ import annotations

from pathlib import Path


def target_dir(state_dir: Path, netns: str | None) -> Path:
    return state_dir / ("host" if netns is None else f"netns-{netns}")
