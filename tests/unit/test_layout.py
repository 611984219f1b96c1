"""The architecture holds: pure modules do no I/O, and the package ships its data."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "kindplan"
PURE = [
    "model",
    "snapshot",
    "document",
    "nodelist",
    "schemacheck",
    "compiler",
    "render",
    "diff",
    "planview",
    "errors",
    "status",
    "yamldoc",
    "guard",
    "statedir",
    "trace",
    "traceview",
    "tracesvg",
]
# Imports that would let a pure module touch the kernel, processes, the disk or the clock.
IMPURE = {
    "subprocess",
    "os",
    "shutil",
    "tempfile",
    "pyroute2",
    "time",
    "datetime",
    "random",
    "sys",
    "kindplan.files",
    "kindplan.sources",
    "kindplan.cli",
    "kindplan.kernel",
    "kindplan.iptables",
    "kindplan.observe",
    "kindplan.apply",
    "kindplan.engine",
}


def imports_of(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_do_no_io(module: str) -> None:
    impure = {name for name in imports_of(module) if name in IMPURE or name.split(".")[0] in IMPURE}
    assert not impure, f"kindplan/{module}.py imports {sorted(impure)}"


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
