"""What the README and the comments say about the code base stays true of it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    """The README's text from a heading to the next heading of its level or above."""
    start = README.index(f"\n{title}\n")
    level = title.partition(" ")[0]
    end = re.search(rf"\n#{{1,{len(level)}}} ", README[start + len(title) + 2 :])
    return README[start : start + len(title) + 2 + end.start()] if end else README[start:]


def test_the_layout_names_every_module() -> None:
    layout = section("## Development")
    modules = sorted(
        p.relative_to(ROOT / "kindplan").as_posix()
        for p in (ROOT / "kindplan").rglob("*.py")
        if p.name != "__init__.py"
    )
    missing = [m for m in modules if Path(m).name not in layout]
    assert missing == [], "modules missing from the README's layout"


def test_comments_cite_only_files_of_the_repository() -> None:
    outside = re.compile(r"DESIGN\.md|STYLE\.md|NOTES-[\w-]+\.md|\.\./shared")
    cited = [
        f"{p.relative_to(ROOT)}:{n}"
        for folder in ("kindplan", "tests", "bench", "scripts", "deploy")
        for p in sorted((ROOT / folder).rglob("*"))
        if p.is_file() and p.suffix in (".py", ".sh", ".yaml", ".md", "") and p != Path(__file__)
        for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
        if outside.search(line)
    ]
    assert cited == []


def test_observation_does_not_go_through_pyroute2() -> None:
    """kindplan's own rtnetlink codec covers every netlink path; pyroute2 checks it in tests."""
    what_it_is = section("## What it is")
    assert "pyroute2" not in what_it_is and "rtnetlink" in what_it_is
    importers = [
        p.name for p in (ROOT / "kindplan").rglob("*.py") if "pyroute2" in _imports(p.read_text())
    ]
    assert importers == []


def _imports(source: str) -> str:
    return "\n".join(
        line for line in source.splitlines() if line.lstrip().startswith(("import ", "from "))
    )


def test_the_migration_step_says_the_image_is_a_placeholder() -> None:
    manifests = list(yaml.safe_load_all((ROOT / "deploy" / "kindplan.yaml").read_text()))
    daemonset = next(d for d in manifests if d["kind"] == "DaemonSet")
    image = daemonset["spec"]["template"]["spec"]["containers"][0]["image"]
    steps = re.split(r"\n\d\. ", section("### Migrating from kindnet"))
    step = next(s for s in steps if "kubectl apply -f deploy/kindplan.yaml" in s)
    assert "kubectl apply -f deploy/kindplan.yaml" in step
    assert image in step and "placeholder" in step


def test_the_library_example_reads_through_the_inputs_and_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code = section("## Library").split("```python\n", 1)[1].split("```", 1)[0]
    assert "from kindplan.inputs." in code and "kindplan.agent" not in code
    monkeypatch.chdir(ROOT)  # the example names the fixture from the top of the checkout
    scope: dict[str, object] = {}
    exec(compile(code, "README.md (Library)", "exec"), scope)
    files = scope["files"]
    assert isinstance(files, dict)
    assert sorted(files) == ["10-kindnet.conflist", "iptables.rules", "routes.batch"]
