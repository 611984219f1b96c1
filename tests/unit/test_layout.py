"""The architecture holds (import-linter's contracts), and the package ships its data."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "kindplan"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """import-linter on the package under `root`, with the contracts in its pyproject.toml."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(root)},
    )


def test_the_import_contracts_hold() -> None:
    """cli > lab > agent > node | inputs > core > shared, the core and the converters of the
    inputs do no I/O, and no package's modules import each other in a circle (pyproject.toml)."""
    result = lint_imports(PACKAGE.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("core/diff.py", "import subprocess", "kindplan.core is not allowed to import subprocess"),
        ("core/snapshot.py", "import gc", "kindplan.core is not allowed to import gc"),
        ("node/apply.py", "import kindplan.inputs.files", "kindplan.node is not allowed to import"),
        (
            "inputs/kinds.py",
            "import kindplan.node.kernel",
            "kindplan.inputs is not allowed to import",
        ),
        ("inputs/nodes.py", "import os", "kindplan.inputs.nodes is not allowed to import os"),
        ("core/model.py", "import kindplan.node.kernel", "kindplan.core is not allowed to import"),
        ("node/apply.py", "import kindplan.agent.watch", "kindplan.node is not allowed to import"),
        # ports.py holds protocols only; the real node is opened in opener.py, which imports it
        ("node/ports.py", "import kindplan.node.opener", "No cycles are allowed in kindplan.node"),
    ],
)
def test_the_contracts_catch_a_stray_import(
    tmp_path: Path, module: str, line: str, broken: str
) -> None:
    """One added import in a copy of the tree breaks a contract, naming the layer."""
    shutil.copytree(PACKAGE, tmp_path / "kindplan", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PACKAGE.parent / "pyproject.toml", tmp_path)
    target = tmp_path / "kindplan" / module
    target.write_text(target.read_text() + f"\n{line}\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert broken in result.stdout


def test_every_module_is_in_a_layer() -> None:
    """A new top-level module or package must be placed in the layers, not slip past them."""
    config = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())
    contract = config["tool"]["importlinter"]["contracts"][0]
    layered = {name.strip() for layer in contract["layers"] for name in layer.split("|")}
    tops = {
        f"kindplan.{p.stem if p.is_file() else p.name}"
        for p in PACKAGE.iterdir()
        if (p.suffix == ".py" and p.name != "__init__.py") or (p / "__init__.py").is_file()
    }
    assert tops == layered


def test_wheel_carries_templates_and_schemas_and_works_elsewhere(tmp_path: Path) -> None:
    """A wheel installed away from the checkout finds its template and schema."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(PACKAGE.parent),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("kindplan-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "kindplan/templates/10-kindnet.conflist.j2" in names
    assert "kindplan/schemas/snapshot.schema.json" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    seed = PACKAGE.parent / "fixtures" / "seed-lab" / "snapshot.yaml"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import kindplan.cli, sys; assert kindplan.cli.__file__.startswith({str(site)!r}); "
            "sys.exit(kindplan.cli.main())",
            "render",
            str(seed),
            "--node",
            "k8s-guide-worker2",
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
        env={**os.environ, "PYTHONPATH": str(site)},
    )
    assert result.returncode == 0, result.stderr
    assert "kindplan/templates" not in result.stderr
    assert (tmp_path / "out" / "10-kindnet.conflist").read_text().startswith("{")


def test_no_module_is_over_600_lines() -> None:
    """The size limit the README states (Development): small modules, split by meaning."""
    sizes = {
        str(path.relative_to(PACKAGE)): len(path.read_text().splitlines())
        for path in PACKAGE.rglob("*.py")
    }
    assert {name: lines for name, lines in sizes.items() if lines > 600} == {}
