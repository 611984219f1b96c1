"""What the README, docs/ and the comments say about the code base stays true of it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from docexamples import DOCUMENTS, Example, assert_prints, console_examples, shell

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def section(title: str, doc: str = "README.md") -> str:
    """A document's text from a heading to the next heading of its level or above."""
    text = "\n" + (ROOT / doc).read_text()
    start = text.index(f"\n{title}\n")
    level = title.partition(" ")[0]
    end = re.search(rf"\n#{{1,{len(level)}}} ", text[start + len(title) + 2 :])
    return text[start : start + len(title) + 2 + end.start()] if end else text[start:]


def test_the_layout_names_every_module() -> None:
    layout = section("# Development", "docs/development.md")
    modules = sorted(
        p.relative_to(ROOT / "kindplan").as_posix()
        for p in (ROOT / "kindplan").rglob("*.py")
        if p.name != "__init__.py"
    )
    missing = [m for m in modules if Path(m).name not in layout]
    assert missing == [], "modules missing from the layout in docs/development.md"


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
    how_it_works = section("## How it works", "docs/design.md")
    assert "pyroute2" not in how_it_works and "rtnetlink" in how_it_works
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


# -- the README reads top-down, and its links lead somewhere ---------------------------------


def test_the_readme_starts_with_the_two_commands() -> None:
    """The project's rule: the first screen holds the command that runs the main job on the
    bundled example and the one that sets up and passes the tests, in that order."""
    first_screen = "\n".join(README.splitlines()[:45])
    blocks = re.findall(r"```sh\n(.*?)\n```", first_screen, re.DOTALL)
    assert blocks[:2] == [
        "bash scripts/demo.sh",
        "bash scripts/setup.sh && .venv/bin/python -m pytest",
    ]


def _anchors(text: str) -> set[str]:
    """GitHub's ids of a document's headings: lower case, punctuation dropped, spaces to `-`."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", text, flags=re.DOTALL), re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("doc", DOCUMENTS, ids=lambda d: d.name)
def test_links_lead_to_a_file_and_a_heading_that_exist(doc: Path) -> None:
    text = doc.read_text()
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if "://" in target:
            continue
        path, _, anchor = target.partition("#")
        linked = (doc.parent / path).resolve() if path else doc
        if not linked.exists() or (anchor and anchor not in _anchors(linked.read_text())):
            broken.append(target)
    assert broken == []


# -- every console example is checked --------------------------------------------------------

# Examples that need no root, by their first command: run here, as they are written, in a folder
# where `fixtures/` is this repository's. Every other example needs root and is run by a kernel
# test that names it (`example("...")`), tests/kernel/test_doc_examples.py.
WITHOUT_ROOT = (
    "sed 's#10.244.1.0/24#10.244.0.128/25#' fixtures/seed-lab/snapshot.yaml > bad.yaml",
    "kindplan validate fixtures/node-list/snapshot.json",
    "kindplan render fixtures/seed-lab/snapshot.yaml",  # a node's files, and the golden ones
    "kindplan trace fixtures/seed-lab/snapshot.yaml",
    "kindplan trace fixtures/network-policy/snapshot.yaml",  # a policy's verdict on a hop
    "kindplan plan fixtures/seed-lab/snapshot.yaml --node k8s-guide-worker9",  # an exit status
)


def _claimed_by_kernel_tests() -> list[str]:
    return [
        claim
        for test in sorted((ROOT / "tests" / "kernel").glob("test_*.py"))
        for claim in re.findall(r"\bexample\(\s*\"([^\"]+)\"", test.read_text())
    ]


def test_every_console_example_is_checked() -> None:
    claims = [*WITHOUT_ROOT, *_claimed_by_kernel_tests()]
    unchecked = [
        f"{e.where}: $ {e.steps[0].command}"
        for e in console_examples()
        if not any(e.steps[0].command.startswith(claim) for claim in claims)
    ]
    assert unchecked == []
    claimed_twice = [c for c in claims if claims.count(c) > 1]
    assert claimed_twice == []


def _without_root() -> list[Example]:
    return [
        e
        for e in console_examples()
        if any(e.steps[0].command.startswith(claim) for claim in WITHOUT_ROOT)
    ]


@pytest.mark.parametrize("example", _without_root(), ids=lambda e: e.where)
def test_a_console_example_without_root_prints_what_it_says(
    example: Example, tmp_path: Path
) -> None:
    (tmp_path / "fixtures").symlink_to(ROOT / "fixtures")
    for step in example.steps:
        assert_prints(step, shell(step.command, tmp_path))


def test_the_examples_are_compared_line_by_line() -> None:
    """The comparison can fail: a changed word, a missing line, an extra line."""
    step = next(e for e in _without_root() if "validate fixtures/" in e.steps[0].command).steps[0]
    printed = "".join(f"{line}\n" for line in step.output)
    for wrong in (
        printed.replace("e", "E", 1),
        printed.partition("\n")[2],
        printed + "one more line\n",
    ):
        with pytest.raises(AssertionError):
            assert_prints(step, wrong)


def test_the_library_example_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's Python example (its imports are the library's public face) runs as written."""
    (code,) = re.findall(r"```python\n(.*?)```", section("## Library"), re.DOTALL)
    assert "from kindplan.inputs." in code and "kindplan.agent" not in code
    monkeypatch.chdir(ROOT)
    names: dict[str, object] = {}
    exec(compile(code, "README.md (Library)", "exec"), names)
    files = names["files"]
    assert isinstance(files, dict)
    assert files["routes.batch"].startswith("# kindplan: routes and pod veth addresses")
