"""Where the templates and schemas are: inside the installed package, or at the repository top."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from kindplan.errors import RuntimeFailure

_PACKAGE = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """The folder `name`: inside the package (a wheel), else at the repository top (a checkout)."""
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise RuntimeFailure(f"kindplan is installed without its {name}/ folder (looked in {_PACKAGE})")


@cache
def load_schema(filename: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((resource_dir("schemas") / filename).read_text("utf-8"))
    return schema
