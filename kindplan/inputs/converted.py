"""What a converter (kinds.py) makes of the user's objects: a ClusterSnapshot document, not yet
checked, with a map back to the places in the input that its values came from."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kindplan.errors import Problem


class Converted:
    """A ClusterSnapshot document made from the input, and what was found wrong on the way.

    A plain class: a dataclass would compile its methods at import, a cost every command pays.
    """

    __slots__ = ("document", "later", "problems", "warnings", "where")

    def __init__(
        self,
        document: dict[str, Any],
        where: dict[str, str] | None = None,
        warnings: list[Problem] | None = None,
        problems: list[Problem] | None = None,
    ) -> None:
        self.document = document
        self.where = where if where is not None else {}  # snapshot path -> input path
        self.warnings = warnings if warnings is not None else []
        self.problems = problems if problems is not None else []
        # What a converter leaves for when every item is in (a deleting pod: after the others)
        self.later: list[Callable[[], None]] = []
