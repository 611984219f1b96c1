"""A command imports only what it uses: the command line's modules import the rest of kindplan
and the heavier libraries inside the functions that need them (start-up time,
docs/performance.md); a module-level import added to cli/ would load it for every command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "fixtures" / "seed-lab" / "snapshot.yaml"

# What every command loads before it runs, outside the pure core: the command line and the little
# it stands on (the core's model comes with the option defaults).
COMMAND_LINE = {
    "kindplan",
    "kindplan.cli",
    "kindplan.cli.applyonce",
    "kindplan.cli.inputs",
    "kindplan.cli.inspect",
    "kindplan.cli.lab",
    "kindplan.cli.options",
    "kindplan.cli.planning",
    "kindplan.cli.program",
    "kindplan.cli.quick",
    "kindplan.cli.target",
    "kindplan.cli.trace",
    "kindplan.cli.usage",
    "kindplan.errors",
    "kindplan.status",
}
HEAVY = {"yaml", "jinja2", "jsonschema", "deepdiff", "prometheus_client", "kubernetes", "pyroute2"}


def loaded(tmp_path: Path, *argv: str) -> set[str]:
    """The modules in sys.modules after `kindplan ARGV` ran (exit 0) in a fresh interpreter."""
    listing = tmp_path / "modules.json"
    code = (
        "import json, sys\n"
        "from kindplan.cli import main\n"
        "status = main(sys.argv[2:])\n"
        "open(sys.argv[1], 'w').write(json.dumps(sorted(sys.modules)))\n"
        "sys.exit(status)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(listing), *argv],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(listing.read_text()))


def ours(modules: set[str]) -> set[str]:
    return {m for m in modules if m == "kindplan" or m.startswith("kindplan.")}


def test_help_loads_the_command_line_alone(tmp_path: Path) -> None:
    modules = loaded(tmp_path, "--help")
    assert {m for m in ours(modules) if not m.startswith("kindplan.core")} == COMMAND_LINE
    assert {"kindplan.core.snapshot", "kindplan.core.compiler"} & modules == set()
    # nor the model's and the changes' dataclasses, made at import (a third of --help's work)
    assert {"kindplan.core.model", "kindplan.core.changes"} & modules == set()
    assert modules & HEAVY == set()


def test_render_of_json_loads_no_kernel_agent_lab_or_yaml(tmp_path: Path) -> None:
    snapshot = tmp_path / "snapshot.json"
    snapshot.write_text(json.dumps(yaml.safe_load(SEED.read_text())))
    out = str(tmp_path / "out")
    modules = loaded(tmp_path, "render", str(snapshot), "--node", "k8s-guide-worker2", "--out", out)
    assert "kindplan.core.render" in modules  # the command did run
    stray = {
        m
        for m in ours(modules)
        if m.startswith(("kindplan.agent", "kindplan.lab", "kindplan.cli.watch"))
        or m in ("kindplan.node.kernel", "kindplan.node.iptables")
        or m.startswith("kindplan.node.netlink")  # the socket, its codec and messages
        # a file read once: neither the API's modules, nor the loop's watches, nor stdin's
        or m.startswith(("kindplan.inputs.kube", "kindplan.inputs.inotify"))
        or m == "kindplan.inputs.stdin"
    }
    assert stray == set()
    # jinja2 renders the conflist; the input's schema check is not the command line's business.
    assert modules & (HEAVY - {"jinja2", "jsonschema"}) == set()


def test_only_a_snapshot_with_policies_loads_core_policy(tmp_path: Path) -> None:
    """NetworkPolicy (core/policy, core/policyvalues) costs nothing to a cluster without it."""
    snapshot = tmp_path / "snapshot.json"
    doc = yaml.safe_load(SEED.read_text())
    snapshot.write_text(json.dumps(doc))
    out = tmp_path / "out"
    out.mkdir()
    argv = ("render", str(snapshot), "--node", "k8s-guide-worker2", "--out", str(out))
    policy = {
        m
        for m in ours(loaded(tmp_path, *argv))
        if m.startswith(("kindplan.core.policy.", "kindplan.core.policyvalues"))
    }
    assert policy == set()
    doc["networkPolicies"] = [
        {"metadata": {"namespace": "default", "name": "deny"}, "spec": {"podSelector": {}}}
    ]
    snapshot.write_text(json.dumps(doc))
    assert "kindplan.core.policy.compile" in loaded(tmp_path, *argv)
    assert (out / "policy.nft").is_file()


def test_the_command_ends_without_the_interpreters_teardown(tmp_path: Path) -> None:
    """console() (the `kindplan` command, `python -m kindplan.cli`) runs the atexit handlers and
    flushes its output, then ends the process: no object is freed one by one (a __del__ of a
    module's global would run in the teardown), and the status is main()'s."""
    code = (
        "import atexit, sys\n"
        "class Teardown:\n"
        "    def __del__(self): print('teardown ran')\n"
        "kept = Teardown()\n"
        "atexit.register(print, 'atexit ran')\n"
        "sys.argv = ['kindplan', *sys.argv[1:]]\n"
        "from kindplan.cli import console\n"
        "console()\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", code, "--version"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines()[-1] == "atexit ran"
    assert "teardown ran" not in ran.stdout
    failed = subprocess.run(
        [sys.executable, "-c", code, "no-such-command"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert failed.returncode == 64 and failed.stderr.startswith("error:"), failed
    assert failed.stdout == "atexit ran\n"
