"""What a converter (kinds.py) makes of the user's objects: a ClusterSnapshot document, not yet
checked, with a map back to the places in the input that its values came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kindplan.errors import Problem


@dataclass
class Converted:
    """A ClusterSnapshot document made from the input, and what was found wrong on the way."""

    document: dict[str, Any]
    where: dict[str, str] = field(default_factory=dict)  # snapshot path -> input path
    warnings: list[Problem] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
