"""Adding a change type: mypy (strict) names every place that does not handle it yet.

A copy of the package gets two new change types in core/changes.py's Change union: FlushTable
with all the methods a change type carries, and Bare with none. mypy must then report each
dispatch over the union (a match that ends in assert_never) as missing FlushTable, and each
method of a change type as missing on Bare.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "kindplan"

NEW_TYPES = """
@dataclass(frozen=True, slots=True)
class FlushTable:
    table: int

    kind: ClassVar[str] = "route"
    action: ClassVar[str] = "-"
    undo_rank: ClassVar[int] = 4
    on_disk: ClassVar[bool] = False

    def describe(self) -> str:
        return f"table {self.table}"

    def undo(self) -> Change | None:
        return None

    def encode(self) -> dict[str, Any]:
        return {"type": "FlushTable", "table": self.table}

    @classmethod
    def decode(cls, d: dict[str, Any]) -> FlushTable:
        return cls(int(d["table"]))


@dataclass(frozen=True, slots=True)
class Bare:
    table: int


"""

# Every dispatch over Change, as module:function.
DISPATCHES = {
    "core/diff.py:_node_in_effect",
    "core/guard.py:removed_state",
    "core/guard.py:owned_routes_delta",
    "core/planview.py:details",
    "node/apply.py:apply_change",
    "node/apply.py:route_write",
}
METHODS = ("kind", "action", "undo_rank", "on_disk", "describe", "undo", "encode", "decode")


def _function_at(path: Path, line: int) -> str:
    """The name of the innermost function of `path` that holds `line`."""
    holding = [
        node
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef) and node.lineno <= line <= (node.end_lineno or 0)
    ]
    return max(holding, key=lambda node: node.lineno).name


def _missing_on_bare(message: str) -> str | None:
    """The attribute an error says Bare lacks (for a classmethod mypy names the item "type")."""
    m = re.match(r'Item "(?:Bare|type)" of "[^"]*\bBare\b[^"]*" has no attribute "(\w+)"', message)
    return m[1] if m else None


@pytest.fixture(scope="module")
def mypy_errors(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, int, str]]:
    """(file under kindplan/, line, message) of each error mypy reports on the changed copy."""
    root = tmp_path_factory.mktemp("tree")
    shutil.copytree(PACKAGE, root / "kindplan", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PACKAGE.parent / "pyproject.toml", root)
    model = root / "kindplan" / "core" / "changes.py"
    text = model.read_text()
    union = "\nChange = (\n    SetSysctl\n"
    assert union in text, "the union's shape changed: update this test"
    text = text.replace(
        union, NEW_TYPES + "Change = (\n    FlushTable\n    | Bare\n    | SetSysctl\n"
    )
    model.write_text(text)
    result = subprocess.run(
        # The package alone: the copy has no tests/fakes.py, which [tool.mypy] files also names.
        [sys.executable, "-m", "mypy", "--cache-dir", str(root / ".mypy_cache"), "-p", "kindplan"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    errors = []
    for line in result.stdout.splitlines():
        if m := re.match(r"kindplan/(\S+?):(\d+): error: (.*)", line):
            errors.append((m[1], int(m[2]), m[3]))
    assert errors, result.stdout
    return errors


def test_a_new_change_type_is_missing_from_every_dispatch(
    mypy_errors: list[tuple[str, int, str]],
) -> None:
    """Each match over Change ends in assert_never: FlushTable reaches it, and mypy says so."""
    missed = {
        f"{file}:{_function_at(PACKAGE / file, line)}"  # only changes.py differs in the copy
        for file, line, message in mypy_errors
        if 'to "assert_never" has incompatible type' in message and '"FlushTable' in message
    }
    assert missed == DISPATCHES


@pytest.mark.parametrize("method", METHODS)
def test_a_change_type_without_a_method_is_refused(
    mypy_errors: list[tuple[str, int, str]], method: str
) -> None:
    """A change type must carry each method of a change type: mypy names Bare where one is used."""
    missing = {_missing_on_bare(message) for _, _, message in mypy_errors}
    assert method in missing, "\n".join(message for _, _, message in mypy_errors)


def test_nothing_else_is_reported(mypy_errors: list[tuple[str, int, str]]) -> None:
    """FlushTable carries every method, so the dispatches are all mypy has against it; and the
    two types break nothing else."""
    others = [
        error
        for error in mypy_errors
        if not _missing_on_bare(error[2])
        and 'to "assert_never" has incompatible type "FlushTable | Bare"' not in error[2]
    ]
    assert others == []
