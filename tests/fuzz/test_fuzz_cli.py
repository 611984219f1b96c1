"""Fuzz campaign: snapshot files, node lists and saved plans through kindplan's real command line.

Every input is a file (sometimes stdin) fed to `kindplan.cli.main(argv)` in-process, with capsys,
and a sample of them to `python -m kindplan.cli` as real processes. What must hold for each:

- the exit status is 0 or 65 for `validate` and `render --out` (1 for `render --check` of a good
  snapshot into an empty folder: "differs"), and the three commands agree on the same input;
  inputs that are broken whatever else they hold (a duplicate key, a NUL byte, bytes that are not
  UTF-8, unclosed nesting) are 65;
- stderr holds only one-line `error: ...` / `warning: ...` messages, never a traceback;
- each command answers within a time limit (SIGALRM in-process, a timeout for processes) and
  within a memory limit (RLIMIT_AS);
- nothing is written: `validate` writes nothing, `render --check DIR` leaves DIR empty, a 65 of
  `render --out DIR` leaves DIR uncreated; `apply --plan` never reaches the kernel and writes
  nothing outside --state-dir (nothing at all for a 65);
- saved plans: 65 for anything malformed in the file (wrong types, unknown options, bad base64,
  a namespace name that cannot be one, an invalid snapshot inside); 1 for a well-formed plan whose
  namespace no longer exists: that is the environment, not the input, having changed, like a stale
  plan (README: exit 1). 64 (usage error) is wrong for both: the user typed no bad argument.

No generated saved plan can touch this machine: every one names a network namespace that does not
exist (`kpt-fuzz-...`, or a name that cannot be one), never null (null is the host's own). Before a
saved plan is run, kindplan's own `parse_plan` reads it, and one it would apply to the host or to
an existing namespace (a text edit can write `netns: ~`) is not run: hypothesis drops that input.
In-process, the netns switch, the netlink Kernel and the iptables backend detection are replaced
by tripwires; at the end the host's proto-75 routes and its KIND-MASQ-AGENT chains must be as
they were, and no `kpt-fuzz-*` namespace may exist.

Size: KINDPLAN_FUZZ_EXAMPLES=N sets the total number of generated inputs, shared 40/25/35 between
snapshots, node lists and saved plans, plus N/200 run as processes (default: 150/100/150 and 30,
about 45 s on 2 cores). A long campaign (N set) also keeps looking for other distinct failures
after the first. The summary line (inputs, CLI runs, exit statuses, time) is printed at the end
of the module, with or without -s. Long campaign, e.g. on 2 cores as 2 processes:
  KINDPLAN_FUZZ_EXAMPLES=20000 python -m pytest tests/fuzz/test_fuzz_cli.py -k fuzz_snapshots &
  KINDPLAN_FUZZ_EXAMPLES=20000 python -m pytest tests/fuzz/test_fuzz_cli.py -k "not fuzz_snapshots"
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import copy
import dataclasses
import importlib.util
import io
import ipaddress
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from hypothesis import (
    HealthCheck,
    Phase,
    assume,
    currently_in_test_context,
    event,
    given,
    settings,
)
from hypothesis import strategies as st
from shell import host_network_state

import kindplan.cli
import kindplan.core.routes
import kindplan.node.netns
import kindplan.node.opener
from kindplan.cli import main
from kindplan.core.changes import Plan
from kindplan.core.model import Options
from kindplan.core.planview import plan_to_json
from kindplan.errors import InvalidInputError
from kindplan.inputs.files import read_source
from kindplan.inputs.kinds import parse_snapshot
from kindplan.node.saved import SAVED_KIND, SavedPlan, parse_plan

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "fixtures" / "seed-lab" / "snapshot.yaml"


def _load_properties() -> Any:
    """tests/unit/test_properties.py (valid documents and their mutations), imported by path.

    From a copy taken now: hypothesis reads lambdas' source when it validates a strategy, and a
    file edited while the campaign runs would make that read the wrong lines.
    """
    source = ROOT / "tests" / "unit" / "test_properties.py"
    copy_dir = Path(tempfile.mkdtemp(prefix="kindplan-fuzz-props-"))
    atexit.register(shutil.rmtree, copy_dir, True)
    path = copy_dir / "kindplan_fuzz_properties.py"
    path.write_bytes(source.read_bytes())
    spec = importlib.util.spec_from_file_location("kindplan_fuzz_properties", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


PROPS = _load_properties()

# ------------------------------------------------------------------------------------------------
# Campaign size, limits, counters
# ------------------------------------------------------------------------------------------------

TOTAL = int(os.environ.get("KINDPLAN_FUZZ_EXAMPLES") or 0)
DEFAULT_EXAMPLES = {"snapshots": 150, "node lists": 100, "saved plans": 150}
SHARES = {"snapshots": 0.4, "node lists": 0.25, "saved plans": 0.35}
SAMPLE_BATCH = 6  # inputs run as processes at once, in parallel
SAMPLE_BATCHES = max(5, TOTAL // 1200)  # 30 processes by default, N/200 in a long campaign

TIME_LIMIT = 5.0  # seconds per command for a small input; a good one takes 30 ms
BIG_TIME_LIMIT = 30.0  # for the crafted multi-megabyte inputs
MEMORY_HEADROOM = 1536 << 20  # in-process: what one command may add to the address space
PROCESS_MEMORY = 2 << 30  # RLIMIT_AS of a kindplan process
BOMB_MEMORY = 1 << 30
NETNS_DIR = Path("/run/netns")

YAML_DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

STATS: Counter[str] = Counter()


def examples(kind: str) -> int:
    return max(1, round(TOTAL * SHARES[kind])) if TOTAL else DEFAULT_EXAMPLES[kind]


def campaign(kind: str, *, shrink: bool = True) -> settings:
    """Settings of one campaign. A failure is shrunk to a minimal input; a long campaign
    (KINDPLAN_FUZZ_EXAMPLES set) also goes on looking for other distinct failures, which costs
    up to 1,000 more inputs per failing test."""
    phases = [Phase.explicit, Phase.reuse, Phase.generate] + ([Phase.shrink] if shrink else [])
    return settings(
        max_examples=examples(kind),
        deadline=None,  # the time limit is enforced per command, by SIGALRM
        phases=phases,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.function_scoped_fixture,
            HealthCheck.large_base_example,
        ],
        print_blob=True,
        report_multiple_bugs=bool(TOTAL),
    )


class Hang(BaseException):
    """A command did not answer within its time limit (BaseException: kindplan cannot catch it)."""


class KernelTouched(BaseException):
    """A tripwire: kindplan went for the kernel (netns switch, netlink, iptables)."""


def _tripwire(what: str) -> Callable[..., Any]:
    def trip(*args: Any, **kwargs: Any) -> Any:
        raise KernelTouched(f"kindplan reached {what} during the fuzz campaign")

    return trip


HOST_BEFORE: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def campaign_guard(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tripwires on every way to the kernel; the host's state before; the summary line after."""
    HOST_BEFORE.update(host_network_state())
    started = time.monotonic()
    with pytest.MonkeyPatch.context() as mp:
        # Typer builds kindplan's whole command tree on every call (30-50 ms, most of an
        # in-process run); build it once. Behaviour is the same: click makes a new context per
        # call, and the processes of the sample take the unmodified path.
        build = typer.main.get_command
        built = build(kindplan.cli.app)
        mp.setattr(
            typer.main, "get_command", lambda app: built if app is kindplan.cli.app else build(app)
        )
        mp.setattr(kindplan.node.netns, "_setns", _tripwire("setns"))
        mp.setattr(kindplan.node.opener, "Kernel", _tripwire("netlink (Kernel)"))
        mp.setattr(kindplan.node.opener, "detect_backend", _tripwire("iptables"))
        yield
    kinds = ", ".join(
        f"{k.removeprefix('inputs: ')} {v}" for k, v in sorted(STATS.items()) if k.startswith("in")
    )
    statuses = ", ".join(
        f"{k.removeprefix('exit ')}: {v}" for k, v in sorted(STATS.items()) if k.startswith("exit")
    )
    line = (
        f"kindplan fuzz: {sum(v for k, v in STATS.items() if k.startswith('inputs: '))} inputs "
        f"({kinds}); {STATS['runs']} CLI runs, {STATS['process runs']} of them as processes; "
        f"exit statuses {{{statuses}}}; {time.monotonic() - started:.1f} s"
    )
    # shown with or without -s: capture is off while the line is written
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print(f"\n{line}", flush=True)


# ------------------------------------------------------------------------------------------------
# Running the command line: in-process (bounded) and as processes
# ------------------------------------------------------------------------------------------------


@dataclass
class Result:
    argv: list[str]
    status: int | None  # None: no answer in time (killed)
    out: str
    err: str
    seconds: float = 0.0

    def __str__(self) -> str:
        return (
            f"kindplan {' '.join(self.argv)[:300]} -> {self.status}\n"
            f"stdout: {self.out[:800]!r}\nstderr: {self.err[:1500]!r}"
        )


def _vm_size() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


@contextlib.contextmanager
def bounded(seconds: float) -> Iterator[None]:
    """A time limit (SIGALRM raises Hang) and a memory limit (RLIMIT_AS) around one command."""

    def on_alarm(signum: int, frame: Any) -> None:
        raise Hang(f"no answer within {seconds:g} s")

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _vm_size() + MEMORY_HEADROOM
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    previous = signal.signal(signal.SIGALRM, on_alarm)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def stdin_of(data: bytes | None) -> Iterator[None]:
    if data is None:
        yield
        return
    saved = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(data))
    try:
        yield
    finally:
        sys.stdin = saved


def run_cli(
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    *,
    cwd: Path,
    stdin: bytes | None = None,
    seconds: float = TIME_LIMIT,
) -> Result:
    """kindplan.cli.main(argv), bounded in time and memory; an exception out of it fails."""
    capsys.readouterr()
    home = Path.cwd()
    started = time.monotonic()
    os.chdir(cwd)
    try:
        with bounded(seconds), stdin_of(stdin):
            status = main(argv)
    except (Exception, SystemExit) as e:  # a traceback for the user
        out, err = capsys.readouterr()
        raise AssertionError(
            f"kindplan {' '.join(argv)[:300]} raised {type(e).__name__}: {str(e)[:500]} "
            f"(a traceback for the user)\nstderr: {err[:1000]!r}"
        ) from e
    finally:
        os.chdir(home)
    out, err = capsys.readouterr()
    STATS["runs"] += 1
    STATS[f"exit {status}"] += 1
    if currently_in_test_context():
        event(f"{argv[0]} exit {status}")
    return Result(argv, status, out, err, time.monotonic() - started)


def _limit_memory(limit: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


@dataclass
class ProcessRun:
    argv: list[str]
    cwd: Path
    stdin: bytes | None = None
    timeout: float = 20.0
    memory: int = PROCESS_MEMORY


def run_processes(runs: list[ProcessRun]) -> list[Result]:
    """`python -m kindplan.cli ARGV` for each run, all at once; killed at their timeout."""
    results = []
    with contextlib.ExitStack() as stack:
        started = []
        for run in runs:
            out = stack.enter_context(tempfile.TemporaryFile())
            err = stack.enter_context(tempfile.TemporaryFile())
            proc = subprocess.Popen(
                [sys.executable, "-m", "kindplan.cli", *run.argv],
                stdin=subprocess.PIPE if run.stdin is not None else subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=run.cwd,
                # the memory limit; safe here: the test process runs no other threads
                preexec_fn=_limit_memory(run.memory),  # noqa: PLW1509
            )
            if run.stdin is not None:
                assert proc.stdin is not None
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.write(run.stdin)
                proc.stdin.close()
            started.append((run, proc, out, err, time.monotonic()))
        for run, proc, out, err, t0 in started:
            try:
                status: int | None = proc.wait(
                    timeout=max(0.1, t0 + run.timeout - time.monotonic())
                )
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                status = None
            seconds = time.monotonic() - t0
            out.seek(0)
            err.seek(0)
            stdout, stderr = (
                out.read().decode(errors="replace"),
                err.read().decode(errors="replace"),
            )
            results.append(Result(run.argv, status, stdout, stderr, seconds))
            STATS["runs"] += 1
            STATS["process runs"] += 1
            STATS[f"exit {status}"] += 1
    return results


def check_ended(result: Result, allowed: set[int]) -> None:
    """Answered in time, not killed by a signal, with an allowed status."""
    assert result.status is not None, f"no answer within the time limit (a hang): {result}"
    assert result.status >= 0, f"killed by signal {signal.Signals(-result.status).name}: {result}"
    assert result.status in allowed, f"exit {result.status}, expected one of {allowed}: {result}"


def check_messages(result: Result, *, also: tuple[str, ...] = ()) -> None:
    """stderr: one-line `error:`/`warning:` messages only (each message one line), no traceback."""
    assert "Traceback" not in result.err, f"a traceback on stderr: {result}"
    prefixes = ("error: ", "warning: ", *also)
    for line in result.err.splitlines():
        assert line.startswith(prefixes), (
            f"not a one-line message (a message spread over lines?): {line[:200]!r} in {result}"
        )
    if result.status == 65:
        assert any(line.startswith("error: ") for line in result.err.splitlines()), (
            f"exit 65 without an error message: {result}"
        )


def tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")} if root.exists() else set()


# ------------------------------------------------------------------------------------------------
# Strategies: document mutations
# ------------------------------------------------------------------------------------------------

LONG_STRING = 200_000  # characters at most in a "long string" mutation
WRONG_TYPES: list[Any] = [None, True, False, 0, 1, -1, 1.5, "", "x", [], {}, [None], {"a": 1}]
HUGE_NUMBERS: list[Any] = [
    10**100,
    -(10**100),
    -1,
    0,
    2**64,
    2**64 + 1,
    2**63 - 1,
    -(2**63),
    2**31,
    65536,
    1e308,
    -0.0,
    1e-300,
    1500.0,
    1500.5,
    576.0,
]
CONTROL_CHARS = [
    "\x00",
    "\x01",
    "\t",
    "\n",
    "\r",
    "\x0b",
    "\x1b",
    "\x1b[31m",
    "\x7f",
    "\x85",
    "\u2028",
    "\u200b",
    "\ufeff",
    "\udc80",  # a lone surrogate: not even encodable as UTF-8
]
# fullwidth 1, Arabic-Indic 3, superscript 1, circled 1, double-struck 1: all str.isdigit()
UNICODE_DIGITS = ["\uff11", "\u0663", "\u00b9", "\u2460", "\U0001d7d9"]
NAME_KEYS = {
    "name",
    "namespace",
    "node",
    "hostInterface",
    "confFile",
    "networkName",
    "confDir",
    "ipamDataDir",
    "cniVersion",
    "type",
    "kind",
}


def _leaves(doc: Any, kind: type | tuple[type, ...]) -> list[tuple[Any, ...]]:
    return [p for p in PROPS._paths(doc) if p and isinstance(PROPS._get(doc, p), kind)]


def _other_family(text: str) -> list[str]:
    """IPv6 for an IPv4 address or CIDR and the other way round (and IPv4-mapped IPv6)."""
    address, slash, prefix = text.partition("/")
    if ":" in address:
        return ["198.18.0.1", "10.244.1.0/24" if slash else "10.244.1.2", "0.0.0.0/0", address]
    mapped = f"::ffff:{address}" + (f"/{96 + int(prefix)}" if prefix.isdigit() else "")
    return ["2001:db8::1", "fd00:10:244:1::/64" if slash else "fd00:10:244:1::2", mapped, "::"]


def _is_address(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


def _mutate(draw: st.DrawFn, doc: Any) -> Any:
    """One mutation of a document, of the kinds the brief names; returns the (new) document."""
    kind = draw(
        st.sampled_from(
            [
                "props",
                "props",
                "wrong type",
                "missing key",
                "huge number",
                "family swap",
                "control char",
                "unicode digit",
                "long string",
            ]
        )
    )
    event(f"mutation: {kind}")
    if kind == "props":  # the other developer's mutations: replace, add, drop, duplicate, edit
        return PROPS._mutate_once(draw, doc)
    if kind == "wrong type":
        path = draw(st.sampled_from(PROPS._paths(doc)))
        current = PROPS._get(doc, path)
        value = draw(st.sampled_from([v for v in WRONG_TYPES if type(v) is not type(current)]))
        return PROPS._put(doc, path, value)
    if kind == "missing key":
        places = [p for p in PROPS._paths(doc) if isinstance(PROPS._get(doc, p), dict)]
        places = [p for p in places if PROPS._get(doc, p)]
        if places:
            target = PROPS._get(doc, draw(st.sampled_from(places)))
            del target[draw(st.sampled_from(sorted(target)))]
        return doc
    if kind == "huge number":
        numbers = _leaves(doc, (int, float))
        mtu = [p for p in PROPS._paths(doc) if p[-1:] == ("mtu",)]
        places = mtu + numbers or _leaves(doc, (str, bool)) or [()]
        return PROPS._put(doc, draw(st.sampled_from(places)), draw(st.sampled_from(HUGE_NUMBERS)))
    if kind == "family swap":
        places = [p for p in _leaves(doc, str) if _is_address(PROPS._get(doc, p))]
        if places:
            path = draw(st.sampled_from(places))
            doc = PROPS._put(doc, path, draw(st.sampled_from(_other_family(PROPS._get(doc, path)))))
        return doc
    return _edit_a_string(draw, doc, kind)


def _edit_a_string(draw: st.DrawFn, doc: Any, kind: str) -> Any:
    """A control character, a non-ASCII digit or a long repeat in one string, a name's if any."""
    strings = _leaves(doc, str)
    named = [p for p in strings if p[-1] in NAME_KEYS] or strings
    if not named:
        return doc
    path = draw(st.sampled_from(named))
    text: str = PROPS._get(doc, path)
    at = draw(st.integers(0, len(text)))
    if kind == "control char":
        return PROPS._put(doc, path, text[:at] + draw(st.sampled_from(CONTROL_CHARS)) + text[at:])
    if kind == "unicode digit":
        digits = [i for i, c in enumerate(text) if c.isdigit()]
        if digits:
            i = draw(st.sampled_from(digits))
            text = text[:i] + draw(st.sampled_from(UNICODE_DIGITS)) + text[i + 1 :]
        return PROPS._put(doc, path, text)
    long = (text or "a") * draw(st.sampled_from([64, 1000, 20000]))
    return PROPS._put(doc, path, long[:LONG_STRING])  # capped: mutations may repeat on a leaf


@st.composite
def mutated_doc(draw: st.DrawFn, doc: Any) -> Any:
    """`doc` (deep-copied) with 0 to 3 mutations; none one time in six."""
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2, 3]))):
        doc = _mutate(draw, doc)
    return doc


NODE_LIST_BREAKS: list[tuple[tuple[str, ...], Any]] = [
    (("spec", "podCIDRs"), "10.244.1.0/24"),  # a string, not a list
    (("spec", "podCIDRs"), 5),
    (("spec", "podCIDRs"), {"0": "10.244.1.0/24"}),
    (("spec", "podCIDRs"), []),
    (("spec", "podCIDR"), ["10.244.1.0/24"]),
    (("spec", "podCIDR"), 10),
    (("spec",), "x"),
    (("status", "addresses"), {"type": "InternalIP"}),
    (("status", "addresses"), [{"type": "InternalIP", "address": 5}]),
    (("status", "addresses"), [{"type": "InternalIP", "address": None}]),
    (("status", "addresses"), [{"type": "InternalIP", "address": "fe80::1%eth0"}]),
    (("status", "addresses"), [{"type": "InternalIP", "address": "2001:db8::1"}]),
    (("status", "addresses"), ["172.18.0.10"]),
    (("metadata", "name"), ""),
    (("metadata", "name"), ["a"]),
    (("metadata",), None),
    (("kind",), "Pod"),
    (("kind",), ["Node"]),
]


@st.composite
def node_list_doc(draw: st.DrawFn) -> tuple[Any, tuple[str, ...], str]:
    """A node list (NodeList or List), maybe broken, with the --pod-subnet values to give."""
    doc = draw(PROPS.snapshot_docs(max_nodes=4))
    subnets = tuple(doc["cluster"]["podSubnets"])
    node = doc["nodes"][0]["name"]
    nodes = PROPS.node_list_of(doc, draw(st.sampled_from(["NodeList", "List"])))
    if draw(st.integers(0, 3)) == 0:
        item = nodes["items"][draw(st.integers(0, len(nodes["items"]) - 1))]
        path, value = draw(st.sampled_from(NODE_LIST_BREAKS))
        event(f"node list break: {'.'.join(path)}")
        if isinstance(item.get(path[0]), dict) or len(path) == 1:
            PROPS._put(item, path, copy.deepcopy(value))
    if draw(st.integers(0, 5)) == 0:
        nodes["items"] = draw(st.sampled_from([None, {}, "items", 5, [None], [[]]]))
    nodes = draw(mutated_doc(nodes))
    pod_subnets = draw(
        st.sampled_from(
            [
                subnets,
                subnets,
                subnets,
                (",".join(subnets),),
                (),
                ("10.244.0.0/16\n",),
                ("fd00::/8", "10.0.0.0/8", "172.16.0.0/12"),
                ("x",),
            ]
        )
    )
    return nodes, pod_subnets, node


@st.composite
def cluster_snapshot_doc(draw: st.DrawFn) -> tuple[Any, tuple[str, ...], str]:
    doc = draw(PROPS.snapshot_docs(max_nodes=4))
    node = doc["nodes"][0]["name"]
    pod_subnets = draw(st.sampled_from([(), (), (), (), tuple(doc["cluster"]["podSubnets"])]))
    return draw(mutated_doc(doc)), pod_subnets, node


# ------------------------------------------------------------------------------------------------
# Strategies: from a document to bytes, and mutations of the bytes
# ------------------------------------------------------------------------------------------------


def _share_containers(draw: st.DrawFn, doc: Any) -> tuple[Any, bool]:
    """Make one container of `doc` the same object as another (neither inside the other), so
    that yaml.safe_dump writes an anchor and an alias; True if it did."""
    places = [p for p in PROPS._paths(doc) if p and isinstance(PROPS._get(doc, p), dict | list)]
    if len(places) < 2:
        return doc, False
    source, target = draw(st.lists(st.sampled_from(places), min_size=2, max_size=2, unique=True))
    if source[: len(target)] == target or target[: len(source)] == source:
        return doc, False
    event("yaml: anchor and alias")
    return PROPS._put(doc, target, PROPS._get(doc, source)), True


def _dump_json(draw: st.DrawFn, doc: Any) -> bytes:
    text = json.dumps(
        doc, ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, 1, 4]))
    )
    return text.encode("utf-8", "surrogatepass")


def _dump_yaml(draw: st.DrawFn, doc: Any, *, flow: bool = False) -> bytes:
    try:
        text = yaml.dump(
            doc,
            Dumper=YAML_DUMPER,  # libyaml's emitter: PyYAML's own is slow on long strings
            allow_unicode=draw(st.booleans()),
            default_flow_style=flow,
            sort_keys=draw(st.booleans()),
            width=1 << 20,
        )
    except (yaml.YAMLError, ValueError):  # what PyYAML cannot write, JSON can
        return _dump_json(draw, doc)
    return text.encode("utf-8", "surrogatepass")


def _json_with_duplicate_key(draw: st.DrawFn, doc: Any) -> bytes | None:
    """`doc` as JSON text where one object has one of its keys twice."""
    objects = [p for p in PROPS._paths(doc) if isinstance(PROPS._get(doc, p), dict)]
    objects = [p for p in objects if PROPS._get(doc, p)]
    if not objects:
        return None
    target = draw(st.sampled_from(objects))

    def encode(value: Any, path: tuple[Any, ...]) -> str:
        if isinstance(value, dict):
            items = [f"{json.dumps(k)}: {encode(v, (*path, k))}" for k, v in value.items()]
            if path == target:
                key = draw(st.sampled_from(sorted(value)))
                again = draw(st.sampled_from([value[key], "x", None, 1]))
                items.insert(
                    draw(st.integers(0, len(items))), f"{json.dumps(key)}: {json.dumps(again)}"
                )
            return "{" + ", ".join(items) + "}"
        if isinstance(value, list):
            return "[" + ", ".join(encode(v, (*path, i)) for i, v in enumerate(value)) + "]"
        return json.dumps(value)

    return encode(doc, ()).encode("utf-8", "surrogatepass")


YAML_KEY_LINE = re.compile(rb"^( *)(- )?([A-Za-z][A-Za-z0-9_.-]*): (\S.*)$", re.MULTILINE)


def _yaml_with_duplicate_key(draw: st.DrawFn, data: bytes) -> bytes | None:
    """Block YAML with a `key: value` line repeated right after itself, in the same mapping."""
    lines = list(YAML_KEY_LINE.finditer(data))
    if not lines:
        return None
    m = draw(st.sampled_from(lines))
    indent, dash, key, value = m.group(1), m.group(2), m.group(3), m.group(4)
    again = indent + (b"  " if dash else b"") + key + b": " + value
    return data[: m.end()] + b"\n" + again + data[m.end() :]


def yaml_has_duplicate_key(data: bytes) -> bool:
    """An independent judge (PyYAML's pure composer, no kindplan): does some mapping hold one
    scalar key twice, or is the text no YAML at all? Either way the input must be refused."""
    try:
        root = yaml.compose(data.decode("utf-8"), Loader=yaml.SafeLoader)
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError):
        return True
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys = [(k.tag, k.value) for k, _ in node.value if isinstance(k, yaml.ScalarNode)]
            if len(keys) != len(set(keys)):
                return True
            stack.extend(n for pair in node.value for n in pair)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    return False


MY_YAML_TOKENS = [
    "!!python/object/apply:os.system ['true']",
    "!!python/name:os.system",
    "!!python/object:kindplan.node.engine.Options {node: x}",
    "!!timestamp 2001-12-14",
    "!!float 1e1000",
    "!!int 1" + "0" * 5000,  # PyYAML's int() of more than 4300 digits: a ValueError
    "!<tag:yaml.org,2002:str> x",
    "!local x",
    "&anchor 1",
    "*undefined",
    "<<: x",
    "? [a, b]",
]
BAD_UTF8 = [b"\x80", b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xe2\x82"]
CONTROL_BYTES = [b"\x01", b"\x1b", b"\x7f", b"\x0b", b"\x0c", b"\r", b"\t"]


def _alias_bomb_lines(draw: st.DrawFn) -> bytes:
    """Top-level keys that nest aliases: width**depth leaves (kept under 5,000 in-process)."""
    width = draw(st.integers(2, 8))
    depth = draw(st.integers(1, 12))
    while width**depth > 4096:
        depth -= 1
    lines = [f"x-bomb0: &b0 [{', '.join(['lol'] * width)}]"]
    lines += [
        f"x-bomb{i}: &b{i} [{', '.join([f'*b{i - 1}'] * width)}]" for i in range(1, depth + 1)
    ]
    return ("\n".join(lines) + "\n").encode()


def _deep(draw: st.DrawFn, depth: int) -> bytes:
    kind = draw(st.sampled_from(["list", "object", "unclosed"]))
    if kind == "list":
        return b"[" * depth + b"]" * depth
    if kind == "object":
        return b'{"a": ' * depth + b"1" + b"}" * depth
    return b"[" * depth


@dataclass
class Encoded:
    data: bytes
    suffix: str
    invalid: bool  # the text edit alone makes any input invalid: exit 65 expected
    exact: bool  # says exactly what `doc` says: no edit (or a BOM, CRLF), no alias of a collection


def _suffix(data: bytes) -> str:
    return ".json" if data.lstrip(b" \t\r\n\xef\xbb\xbf")[:1] in (b"{", b"[") else ".yaml"


TEXT_EDITS = ["none"] * 8 + [
    "duplicate key",
    "deep nesting",
    "not utf-8",
    "nul byte",
    "bom",
    "utf-16",
    "truncate",
    "crlf",
    "control byte",
    "yaml token",
    "alias bomb",
    "random bytes",
]


@st.composite
def encoded(draw: st.DrawFn, doc: Any) -> Encoded:
    """`doc` as JSON or YAML (block, flow, with anchors), then maybe broken as text."""
    fmt = draw(st.sampled_from(["json", "json", "yaml", "yaml", "yaml flow", "yaml anchors"]))
    shared = False  # aliases to collections: kindplan may take them or refuse them all (65)
    if fmt == "yaml anchors":
        doc, shared = _share_containers(draw, copy.deepcopy(doc))
    if fmt == "json":
        data = _dump_json(draw, doc)
    elif fmt == "yaml flow":  # '--- ' first: kindplan reads text starting with { or [ as JSON
        data = b"--- " + _dump_yaml(draw, doc, flow=True)
    else:
        data = _dump_yaml(draw, doc)
    suffix = _suffix(data)
    edit = draw(st.sampled_from(TEXT_EDITS))
    event(f"text: {edit}")
    at = draw(st.integers(0, len(data)))
    if edit == "bom":  # the same document in other bytes
        return Encoded(b"\xef\xbb\xbf" + data, suffix, False, not shared)
    if edit == "crlf":
        return Encoded(data.replace(b"\n", b"\r\n"), suffix, False, not shared)
    broken = _break_syntax(draw, edit, doc, data, suffix)
    broken = broken or _break_bytes(draw, edit, data, suffix, at)
    return broken or Encoded(data, suffix, False, not shared)


def _break_syntax(draw: st.DrawFn, edit: str, doc: Any, data: bytes, suffix: str) -> Encoded | None:
    """An edit that knows JSON or YAML: a duplicate key, deep nesting, a YAML token or alias
    bomb. None if `edit` is another or does not fit this text."""
    if edit == "duplicate key":
        again = _yaml_with_duplicate_key(draw, data) if suffix == ".yaml" else None
        if again is not None:
            return Encoded(again, suffix, yaml_has_duplicate_key(again), False)
        again = _json_with_duplicate_key(draw, doc)
        if again is not None:
            return Encoded(again, _suffix(again), True, False)
    elif edit == "deep nesting":
        deep = _deep(draw, draw(st.sampled_from([100, 1000, 5000, 10_000])))  # deeper: processes
        if suffix == ".json":
            brace = data.find(b"{")
            if brace >= 0:
                rest = data[brace + 1 :]
                comma = b"" if rest.lstrip().startswith(b"}") else b", "
                data = data[: brace + 1] + b'"deep": ' + deep + comma + rest
            else:
                data = b'{"deep": ' + deep + b', "doc": ' + data + b"}"
        else:
            data = data.rstrip(b"\n") + b"\ndeep: " + deep + b"\n"
        return Encoded(data, suffix, deep.endswith(b"["), False)
    elif edit == "yaml token" and suffix == ".yaml":
        lines = list(YAML_KEY_LINE.finditer(data))
        if lines:
            m = draw(st.sampled_from(lines))
            token = draw(st.sampled_from(MY_YAML_TOKENS) | PROPS.YAML_TOKENS).encode()
            return Encoded(data[: m.start(4)] + token + data[m.end(4) :], suffix, False, False)
    elif edit == "alias bomb" and suffix == ".yaml" and not data.startswith(b"--- "):
        return Encoded(data.rstrip(b"\n") + b"\n" + _alias_bomb_lines(draw), suffix, False, False)
    return None


def _break_bytes(draw: st.DrawFn, edit: str, data: bytes, suffix: str, at: int) -> Encoded | None:
    """An edit blind to the syntax, at byte `at` or anywhere. None if `edit` is another (or the
    text is not UTF-8 to re-encode, or empty)."""
    if edit == "not utf-8":
        return Encoded(data[:at] + draw(st.sampled_from(BAD_UTF8)) + data[at:], suffix, True, False)
    if edit == "nul byte":
        return Encoded(data[:at] + b"\x00" + data[at:], suffix, True, False)
    if edit == "utf-16":
        with contextlib.suppress(UnicodeDecodeError):
            wide = data.decode("utf-8").encode(draw(st.sampled_from(["utf-16", "utf-32"])))
            return Encoded(wide, suffix, True, False)
    if edit == "truncate":
        return Encoded(data[: draw(st.integers(0, max(0, len(data) - 1)))], suffix, False, False)
    if edit == "control byte":
        return Encoded(
            data[:at] + draw(st.sampled_from(CONTROL_BYTES)) + data[at:], suffix, False, False
        )
    if edit == "random bytes" and data:
        raw = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
        return Encoded(bytes(raw), suffix, False, False)
    return None


@dataclass
class Case:
    """One generated input file and how to feed it."""

    kind: str  # "snapshot", "node list" or "saved plan"
    data: bytes
    suffix: str
    pod_subnets: tuple[str, ...] = ()
    invalid: bool = False  # must be refused, whatever else it holds
    node: str = "k8s-guide-worker2"
    expected_apply: frozenset[int] = frozenset()  # saved plans: the right exit statuses
    why: str = ""  # saved plans: why those statuses
    stdin: bool = False  # feed the snapshot on stdin ('-')


@st.composite
def snapshot_cases(draw: st.DrawFn) -> Case:
    doc, pod_subnets, node = draw(cluster_snapshot_doc())
    text = draw(encoded(doc))
    stdin = draw(st.integers(0, 9)) == 0
    return Case("snapshot", text.data, text.suffix, pod_subnets, text.invalid, node, stdin=stdin)


@st.composite
def node_list_cases(draw: st.DrawFn) -> Case:
    doc, pod_subnets, node = draw(node_list_doc())
    text = draw(encoded(doc))
    return Case("node list", text.data, text.suffix, pod_subnets, text.invalid, node)


# ------------------------------------------------------------------------------------------------
# Strategies: saved plans
# ------------------------------------------------------------------------------------------------

MISSING_NETNS = "kpt-fuzz-nonexistent"
NETNS_NAMES: list[Any] = [
    # well-formed names of namespaces that do not exist
    MISSING_NETNS,
    "kpt-fuzz-nonexistent-2",
    "kpt fuzz",
    "kpt-fuzz-\u00f1",
    "kpt-fuzz-" + "a" * 200,
    # names that cannot be a namespace: '/', '.', '..', empty, NUL, control characters, too long
    "kpt-fuzz/nonexistent",
    "../kpt-fuzz-up",
    "kpt-fuzz/../..",
    "x/../../kpt-fuzz-escaped",  # a lock file next to --state-dir's parent, if joined blindly
    "x/../../../kpt-fuzz-escaped",
    "/kpt-fuzz-absolute",
    "..",
    ".",
    "",
    "kpt-fuzz\x00nul",
    "kpt-fuzz-nonexistent\n",
    "kpt-fuzz\x1b[31m",
    "kpt-fuzz-\n" + "a" * 300,
    "kpt-fuzz-" + "a" * 300,
    # not strings (never null: null is the host's own namespace)
    5,
    True,
    [],
    {},
    [MISSING_NETNS],
]
OPTION_VALUES: dict[str, list[Any]] = {
    "node": [5, None, [], True],
    "conf_dir": [5, [], {}, True],
    "uplink": [5, ["eth0"], True],
    "mtu": ["1500", 1500.5, True, 10**100, -1, 2**64, 0, 575, 65536, []],
    "route_proto": ["75", None, 0, 256, -1, 2**64, 10**100, True, 75.5, 2, 186],
    "adopt": ["yes", 1, None, [], 0],
    "cni_cache_dir": [5, [], True],
    "masq_backend": ["pf", "", 5, [], True, "NFTABLES"],
    "no_masquerade": ["10.0.0.0/8", [5], ["10.0.0.1/8"], [None], {}, None, ["x"] * 257],
}
# Options a saved plan may lack: it was saved before they existed (#23).
OPTIONAL_OPTIONS = frozenset({"masq_backend", "no_masquerade"})
UNKNOWN_OPTIONS = ["verbose", "Node", "", "node ", "netns", "__class__", "a\nb", "mtu\x00"]
BAD_BASE64 = ["!!!!", "YQ", "YQ=", "Y Q==", "YQ==\n", "a-_b", "====", "\u00e9t\u00e9", "YQ==YQ=="]


PLAIN_NETNS = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}")
OPTION_KEYS = frozenset(f.name for f in dataclasses.fields(Options))
RESERVED_PROTOS: frozenset[int] = getattr(
    kindplan.core.routes, "RESERVED_ROUTE_PROTOS", frozenset()
)


def netns_name_ok(value: Any) -> bool:
    """Could `value` name a network namespace (a file in /run/netns)?"""
    return (
        isinstance(value, str)
        and value not in {"", ".", ".."}
        and "/" not in value
        and value.isprintable()
        and len(value.encode("utf-8", "surrogatepass")) <= 255
    )


def _printable_or_none(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.isprintable())


def _option_ok(key: str, value: Any) -> bool:
    """Each saved option as the command line would take it."""
    if key == "node":
        return isinstance(value, str) and bool(value) and value.isprintable()
    if key == "mtu":
        return value is None or (type(value) is int and 576 <= value <= 65535)
    if key == "route_proto":
        return type(value) is int and 1 <= value <= 255 and value not in RESERVED_PROTOS
    if key == "adopt":
        return type(value) is bool
    if key == "masq_backend":
        return value in (None, "auto", "iptables", "nftables")
    if key == "no_masquerade":
        # a tuple is what asdict(Options) gives before the document is dumped: an array
        return isinstance(value, list | tuple) and len(value) <= 256 and all(map(_cidr_ok, value))
    return _printable_or_none(value)  # conf_dir, uplink, cni_cache_dir


def _cidr_ok(value: Any) -> bool:
    """A network in CIDR form with no host bits, as --no-masquerade-cidr takes it."""
    import ipaddress

    if not isinstance(value, str):
        return False
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError:
        return False
    return "/" in value


def saved_plan_verdict(doc: Any) -> tuple[frozenset[int], str]:
    """The right exit statuses of apply --plan for a saved plan document, and why.

    65 for anything malformed; 1 when it is well-formed and its namespace does not exist. A
    namespace name iproute2 would take but that is unusual (a space, non-ASCII, over 64 bytes)
    may be either. Independent of parse_plan; the snapshot inside is judged by parse_snapshot,
    which the snapshot campaign tests.
    """
    bad = frozenset({65})
    malformed = _malformed_plan(doc)
    if malformed is not None:
        return bad, malformed
    inputs = doc["inputs"]
    netns = inputs["netns"]
    data = base64.b64decode(inputs["snapshot"], validate=True)
    # the saved pod subnets are --pod-subnet values: split at commas and stripped, as there
    subnets = [part.strip() for s in inputs["podSubnets"] for part in s.split(",") if part.strip()]
    try:
        with bounded(TIME_LIMIT):
            parse_snapshot(data, source=inputs["source"], pod_subnets=subnets)
    except InvalidInputError:
        return bad, "the snapshot inside is invalid"
    except Exception as e:  # a crash: the CLI run will show it
        return bad, f"parse_snapshot raised {type(e).__name__}"
    missing = f"well-formed; namespace {netns!r:.60} does not exist"
    if PLAIN_NETNS.fullmatch(netns):
        return frozenset({1}), missing
    return frozenset({1, 65}), missing + " (an unusual name: 65 is fine too)"


def _malformed_plan(doc: Any) -> str | None:
    """What makes `doc` no saved plan, if anything: its kind, a field, an input."""
    if not isinstance(doc, dict) or doc.get("kind") != SAVED_KIND:
        return "not a saved plan"
    if not isinstance(doc.get("fingerprint"), str):
        return "fingerprint"
    if not isinstance(doc.get("plan"), dict):
        return "plan: the reviewed plan is part of a saved plan"
    inputs = doc.get("inputs")
    if not isinstance(inputs, dict):
        return "inputs"
    return _malformed_inputs(inputs)


def _malformed_inputs(inputs: dict[str, Any]) -> str | None:
    """What is wrong with a saved plan's inputs, apart from the snapshot's content."""
    options = inputs.get("options")
    if not isinstance(options, dict) or not (
        OPTION_KEYS - OPTIONAL_OPTIONS <= set(options) <= OPTION_KEYS
    ):
        return "inputs.options: unknown or missing keys"
    for key, value in options.items():
        if not _option_ok(key, value):
            return f"inputs.options.{key} = {value!r:.60}"
    netns = inputs.get("netns", "(missing)")
    if "netns" not in inputs or not netns_name_ok(netns):
        return f"inputs.netns = {netns!r:.60}"
    if not isinstance(inputs.get("source"), str):
        return "inputs.source"
    subnets = inputs.get("podSubnets")
    if not isinstance(subnets, list) or not all(isinstance(s, str) for s in subnets):
        return "inputs.podSubnets"
    encoded_snapshot = inputs.get("snapshot")
    if not isinstance(encoded_snapshot, str):
        return "inputs.snapshot"
    try:
        base64.b64decode(encoded_snapshot, validate=True)
    except ValueError:
        return "inputs.snapshot: bad base64"
    return None


def _mutate_saved(draw: st.DrawFn, doc: Any, snapshots: list[bytes]) -> Any:
    """One mutation of a saved plan document (one that an earlier mutation broke is left be)."""
    if not (
        isinstance(doc, dict)
        and isinstance(doc.get("inputs"), dict)
        and isinstance(doc["inputs"].get("options"), dict)
    ):
        return doc
    inputs = doc["inputs"]
    what = draw(
        st.sampled_from(
            [
                "kind",
                "fingerprint",
                "inputs",
                "options",
                "option unknown",
                "option missing",
                "option wrong",
                "option wrong",
                "netns",
                "netns",
                "netns",
                "source",
                "podSubnets",
                "snapshot base64",
                "snapshot inside",
                "snapshot inside",
                "plan",
                "extra key",
                "top level",
            ]
        )
    )
    event(f"saved plan mutation: {what}")
    if what in {"kind", "fingerprint", "inputs", "plan", "extra key", "top level"}:
        return _mutate_saved_top(draw, doc, what)
    _mutate_saved_inputs(draw, inputs, what, snapshots)
    return doc


def _mutate_saved_top(draw: st.DrawFn, doc: dict[str, Any], what: str) -> Any:
    """A mutation of the saved plan's top level (`what`: kind, a key, an extra key)."""
    wrong = st.sampled_from(WRONG_TYPES)
    if what == "kind":
        value = draw(st.sampled_from(["kindplan/Plan", "ClusterSnapshot", SAVED_KIND + "\n", None]))
        doc["kind"] = value
    elif what in {"fingerprint", "inputs", "plan"}:
        if draw(st.booleans()):
            doc.pop(what, None)
        else:
            doc[what] = draw(wrong)
    elif what == "extra key":
        target = draw(st.sampled_from([doc, doc["inputs"]]))
        target[draw(st.sampled_from(["x", "plan2", "inputs2", "\u00e9"]))] = draw(wrong)
    elif what == "top level":
        return draw(st.sampled_from([[doc], "x", 5, None]))
    return doc


def _mutate_saved_inputs(
    draw: st.DrawFn, inputs: dict[str, Any], what: str, snapshots: list[bytes]
) -> None:
    """A mutation of the saved plan's inputs (`what`: an option, netns, source, ...)."""
    wrong = st.sampled_from(WRONG_TYPES)
    if what.startswith("option"):
        _mutate_options(draw, inputs, what)
    elif what == "netns":
        inputs["netns"] = draw(st.sampled_from(NETNS_NAMES))
    elif what == "source":
        inputs["source"] = draw(wrong | st.sampled_from(["a\nb", "\x1b[2J", "x" * 5000]))
    elif what == "podSubnets":
        inputs["podSubnets"] = draw(
            wrong | st.sampled_from([[5], ["10.244.0.0/16"], ["10.244.0.0/16\n"], [None]])
        )
    elif what == "snapshot base64":
        inputs["snapshot"] = draw(st.sampled_from(BAD_BASE64) | wrong)
    elif what == "snapshot inside":
        inputs["snapshot"] = base64.b64encode(draw(st.sampled_from(snapshots))).decode()


def _mutate_options(draw: st.DrawFn, inputs: dict[str, Any], what: str) -> None:
    """One mutation of inputs.options: of its type, or of a key (unknown, missing, wrong)."""
    options = inputs["options"]
    wrong = st.sampled_from(WRONG_TYPES)
    if what == "options":
        inputs["options"] = draw(wrong | st.just([asdict(Options(node="x"))]))
    elif what == "option unknown":
        options[draw(st.sampled_from(UNKNOWN_OPTIONS))] = draw(wrong)
    elif what == "option missing" and options:
        options.pop(draw(st.sampled_from(sorted(options))))
    elif what == "option wrong":
        key = draw(st.sampled_from(sorted(OPTION_VALUES)))
        options[key] = draw(st.sampled_from(OPTION_VALUES[key]))


@st.composite
def saved_plan_cases(draw: st.DrawFn) -> Case:
    """A saved plan as save_plan writes it, naming a namespace that does not exist, then broken."""
    if draw(st.booleans()):
        doc, pod_subnets, node = draw(cluster_snapshot_doc())
        pod_subnets = ()
    else:
        doc, pod_subnets, node = draw(node_list_doc())
    inner = draw(encoded(doc)).data
    broken_inner = draw(encoded(draw(mutated_doc(doc)))).data
    options = Options(
        node=node,
        conf_dir=draw(st.sampled_from([None, "/nonexistent/kpt-fuzz/cni"])),
        uplink=draw(st.sampled_from([None, "eth0"])),
        mtu=draw(st.sampled_from([None, 1500, 9000])),
        adopt=draw(st.booleans()),
    )
    plan: Any = {
        "kind": SAVED_KIND,
        "fingerprint": draw(st.sampled_from(["0" * 64, "abc", ""])),
        "inputs": {
            "options": asdict(options),
            "netns": draw(st.sampled_from([MISSING_NETNS, MISSING_NETNS, "kpt-fuzz-w2"])),
            "source": draw(st.sampled_from(["cluster.yaml", "<stdin>", "nodes.json"])),
            "podSubnets": list(pod_subnets),
            "snapshot": base64.b64encode(inner).decode(),
        },
        "plan": plan_to_json(Plan(node, ())),
    }
    for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2, 3]))):
        plan = _mutate_saved(draw, plan, [broken_inner, b"\xff\xfe", b"{}", b"a: [", b""])
    expected, why = saved_plan_verdict(plan)
    text = draw(encoded(plan))
    if text.invalid:
        expected, why = frozenset({65}), "broken as text"
    elif not text.exact:
        expected, why = expected | {65}, f"{why}; edited as text, so maybe broken"
    return Case("saved plan", text.data, text.suffix, expected_apply=expected, why=why)


# ------------------------------------------------------------------------------------------------
# Running one case
# ------------------------------------------------------------------------------------------------


def _workdir(base: Path) -> Path:
    base.mkdir(parents=True, exist_ok=True)  # in case something swept /dev/shm meanwhile
    return Path(tempfile.mkdtemp(prefix="case-", dir=base))


def _pod_subnet_args(case: Case) -> list[str]:
    return [arg for subnet in case.pod_subnets for arg in ("--pod-subnet", subnet)]


def _existing_netns() -> set[str]:
    return set(os.listdir(NETNS_DIR)) if NETNS_DIR.is_dir() else set()


def safe_saved_plan(path: Path) -> bool:
    """May this saved plan be run? Not if kindplan would apply it to this host (netns null: a
    text edit can make one, e.g. `netns: ~`) or to an existing namespace. Decided by kindplan's
    own parse_plan on the very bytes; one it refuses cannot reach any namespace."""
    try:
        with bounded(TIME_LIMIT):
            saved = load_plan(path)
    except (Exception, Hang):  # refused (or hangs) before any namespace is entered
        return True
    if saved.netns is None:
        event("saved plan for this host's own namespace: not run")
        return False
    if saved.netns in _existing_netns():
        event("saved plan for an existing namespace: not run")
        return False
    return True


def run_snapshot_case(capsys: pytest.CaptureFixture[str], base: Path, case: Case) -> None:
    """validate, render --check (empty folder), render --all-nodes --out: all in-process."""
    work = _workdir(base)
    try:
        source = work / f"input{case.suffix}"
        source.write_bytes(case.data)
        check_dir, out_dir = work / "check", work / "out"
        check_dir.mkdir()
        before = tree(work)
        extra = _pod_subnet_args(case)
        arg = "-" if case.stdin else str(source)
        stdin = case.data if case.stdin else None

        validate = run_cli(capsys, ["validate", arg, *extra], cwd=work, stdin=stdin)
        check_ended(validate, {0, 65})
        check_messages(validate)
        if case.invalid:
            assert validate.status == 65, f"broken input accepted: {validate}"
        if validate.status == 0:
            assert len(validate.out.splitlines()) == 1, validate
            assert validate.out.startswith("ok: "), validate
        assert tree(work) == before, f"validate wrote {tree(work) - before}: {validate}"

        check = run_cli(
            capsys,
            ["render", arg, "--node", case.node, "--check", str(check_dir), *extra],
            cwd=work,
            stdin=stdin,
        )
        check_ended(check, {1, 64, 65})
        check_messages(check, also=("render: ", "hint: "))
        assert not any(check_dir.iterdir()), f"render --check wrote into {check_dir}: {check}"
        if validate.status == 65:
            assert check.status == 65, f"validate refused it, render --check did not: {check}"
        elif check.status == 64:  # a --node the snapshot has not got: the command line's mistake
            assert "--node: no node named" in check.err, f"validate accepted it: {check}"
        else:
            assert "+++ rendered/" in check.out, check

        render = run_cli(
            capsys,
            ["render", arg, "--all-nodes", "--out", str(out_dir), *extra],
            cwd=work,
            stdin=stdin,
        )
        check_ended(render, {0, 65})
        check_messages(render)
        assert render.status == validate.status, f"validate said {validate.status}: {render}"
        if render.status == 65:
            assert not out_dir.exists(), f"exit 65 but wrote {sorted(tree(out_dir))}: {render}"
        else:
            rendered = list(out_dir.rglob("*.conflist"))
            assert rendered or "nothing to render" in render.err, f"exit 0, no conflist: {render}"
        assert {p for p in tree(work) if p != "out" and not p.startswith("out/")} == before
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_saved_plan_case(capsys: pytest.CaptureFixture[str], base: Path, case: Case) -> Result:
    work = _workdir(base)
    try:
        plan = work / f"plan{case.suffix}"
        plan.write_bytes(case.data)
        state = work / "s1" / "s2" / "s3" / "state"  # '..' in a lock name cannot leave `work`
        assume(safe_saved_plan(plan))  # never let one through: a rejected input, not a failure
        before = tree(work)
        result = run_cli(
            capsys,
            ["apply", "--plan", str(plan), "--state-dir", str(state), "--lock-timeout", "1"],
            cwd=work,
        )
        check_ended(result, {1, 64, 65})
        check_messages(result)
        written = tree(work) - before
        outside = {p for p in written if not f"{p}/".startswith("s1/s2/s3/state/")}
        outside -= {"s1", "s1/s2", "s1/s2/s3", "s1/s2/s3/state"}
        assert not outside, f"apply --plan wrote outside --state-dir: {sorted(outside)}: {result}"
        if result.status == 65:
            assert not written, f"exit 65 but apply wrote {sorted(written)}: {result}"
        assert result.status in case.expected_apply, (
            f"exit {result.status}, expected {set(case.expected_apply)} ({case.why}): {result}"
        )
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where each input gets its folder: tmpfs when there is one (render fsyncs every file)."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        folder = Path(tempfile.mkdtemp(prefix="kindplan-fuzz-", dir=shm))
        yield folder
        shutil.rmtree(folder, ignore_errors=True)
    else:
        yield tmp_path_factory.mktemp("fuzz")


# ------------------------------------------------------------------------------------------------
# 1. The campaign, in-process
# ------------------------------------------------------------------------------------------------


@campaign("snapshots")
@given(case=snapshot_cases())
def test_fuzz_snapshots(capsys: pytest.CaptureFixture[str], base: Path, case: Case) -> None:
    """Mutated ClusterSnapshots, as JSON or YAML, broken as text or not: validate, render --check
    and render --all-nodes --out end in 0/65 (1 for a differing --check), with one-line messages,
    in time, and write nothing for a 65."""
    STATS["inputs: snapshots"] += 1
    run_snapshot_case(capsys, base, case)


@campaign("node lists")
@given(case=node_list_cases())
def test_fuzz_node_lists(capsys: pytest.CaptureFixture[str], base: Path, case: Case) -> None:
    """Mutated Kubernetes node lists (podCIDRs not a list, addresses of the other family, ...)
    with good and bad --pod-subnet values: the same properties."""
    STATS["inputs: node lists"] += 1
    run_snapshot_case(capsys, base, case)


@campaign("saved plans")
@given(case=saved_plan_cases())
def test_fuzz_saved_plans(capsys: pytest.CaptureFixture[str], base: Path, case: Case) -> None:
    """Mutated saved plans through apply --plan: never the kernel, nothing written outside
    --state-dir (nothing at all for 65), one-line messages, and the right status: 65 for a
    malformed plan, 1 for a well-formed one whose namespace is gone."""
    STATS["inputs: saved plans"] += 1
    run_saved_plan_case(capsys, base, case)


# ------------------------------------------------------------------------------------------------
# 2. A sample as real processes
# ------------------------------------------------------------------------------------------------


def _process_runs(case: Case, work: Path, which: int) -> ProcessRun:
    source = work / f"input{case.suffix}"
    source.write_bytes(case.data)
    if case.kind == "saved plan":
        state = work / "s1" / "s2" / "s3" / "state"
        assume(safe_saved_plan(source))
        argv = ["apply", "--plan", str(source), "--state-dir", str(state), "--lock-timeout", "1"]
        return ProcessRun(argv, work)
    extra = _pod_subnet_args(case)
    if which == 0:
        return ProcessRun(["validate", str(source), *extra], work)
    if which == 1:
        (work / "check").mkdir()
        argv = ["render", str(source), "--node", case.node, "--check", str(work / "check")]
        return ProcessRun([*argv, *extra], work)
    return ProcessRun(
        ["render", str(source), "--all-nodes", "--out", str(work / "out"), *extra], work
    )


@settings(campaign("snapshots", shrink=False), max_examples=SAMPLE_BATCHES)
@given(
    batch=st.lists(
        st.one_of(snapshot_cases(), node_list_cases(), saved_plan_cases()),
        min_size=SAMPLE_BATCH,
        max_size=SAMPLE_BATCH,
    ),
    commands=st.lists(st.integers(0, 2), min_size=SAMPLE_BATCH, max_size=SAMPLE_BATCH),
)
def test_fuzz_sample_as_processes(
    capsys: pytest.CaptureFixture[str], base: Path, batch: list[Case], commands: list[int]
) -> None:
    """A sample of the inputs above run as `python -m kindplan.cli`: the real exit status equals
    what main() returned in-process, and is an allowed one; no traceback on stderr."""
    works = [_workdir(base) for _ in batch]
    try:
        runs = [_process_runs(c, w, i) for c, w, i in zip(batch, works, commands, strict=True)]
        results = run_processes(runs)
        for case, work, run, result in zip(batch, works, runs, results, strict=True):
            STATS["inputs: sample as processes"] += 1
            check_ended(result, {0, 1, 64, 65})
            assert "Traceback" not in result.err, f"a traceback on stderr: {result}"
            check_messages(result, also=("render: ", "hint: "))
            shutil.rmtree(work / "out", ignore_errors=True)
            if (work / "check").exists():
                assert not any((work / "check").iterdir()), f"--check wrote: {result}"
            argv = [str(work / "again") if a == str(work / "out") else a for a in run.argv]
            again = run_cli(capsys, argv, cwd=work)
            assert result.status == again.status, f"in-process: {again.status}; process: {result}"
            if case.kind == "saved plan":
                assert result.status in case.expected_apply, (
                    f"exit {result.status}, expected {set(case.expected_apply)} "
                    f"({case.why}): {result}"
                )
            elif case.invalid:
                assert result.status == 65, f"broken input accepted: {result}"
    finally:
        for work in works:
            shutil.rmtree(work, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# 3. Crafted inputs: too large, too deep, too many aliases, too many digits
# ------------------------------------------------------------------------------------------------

SEED_BYTES = SEED.read_bytes()
SIXTY_FOUR_MIB = 64 << 20


def _sparse(path: Path, head: bytes, size: int) -> Path:
    """A file of `size` bytes that costs nothing: `head`, then a hole (zeros)."""
    with path.open("wb") as f:
        f.write(head)
        f.truncate(size)
    return path


def test_input_over_64_mib(capsys: pytest.CaptureFixture[str], base: Path) -> None:
    """64 MiB + 1 byte (a valid snapshot, then a hole): 65 with the size named, nothing written;
    as a file and on stdin, in-process and as processes."""
    work = _workdir(base)
    big = _sparse(work / "big.yaml", SEED_BYTES, SIXTY_FOUR_MIB + 1)
    STATS["inputs: crafted"] += 1
    result = run_cli(capsys, ["validate", str(big)], cwd=work)
    check_ended(result, {65})
    check_messages(result)
    assert "larger than 64 MiB" in result.err, result
    result = run_cli(capsys, ["render", str(big), "--all-nodes", "--out", "out"], cwd=work)
    check_ended(result, {65})
    assert not (work / "out").exists(), result
    runs = [
        ProcessRun(["validate", str(big)], work),
        ProcessRun(["validate", "-"], work, stdin=big.read_bytes() + b"#"),
        ProcessRun(["render", str(big), "--all-nodes", "--out", "out"], work),
    ]
    for result in run_processes(runs):
        check_ended(result, {65})
        check_messages(result)
        assert "larger than 64 MiB" in result.err, result
    assert not (work / "out").exists()


def test_saved_plan_over_64_mib(base: Path) -> None:
    """A saved plan that is a 4 GiB file (a valid plan, then a hole) is refused like a snapshot
    over 64 MiB, without reading it all: exit 65 under a 1 GiB address-space limit."""
    work = _workdir(base)
    doc = {
        "kind": SAVED_KIND,
        "fingerprint": "0" * 64,
        "inputs": {
            "options": asdict(Options(node="k8s-guide-worker2")),
            "netns": MISSING_NETNS,
            "source": "seed.yaml",
            "podSubnets": [],
            "snapshot": base64.b64encode(SEED_BYTES).decode(),
        },
        "plan": {},
    }
    plan = _sparse(work / "plan.json", json.dumps(doc).encode(), 4 << 30)
    STATS["inputs: crafted"] += 1
    argv = ["apply", "--plan", str(plan), "--state-dir", str(work / "state")]
    (result,) = run_processes([ProcessRun(argv, work, timeout=60, memory=BOMB_MEMORY)])
    check_ended(result, {65})
    check_messages(result)


LAST_APPLIED = json.dumps(
    {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"labels": {f"example.com/label-{i}": "x" * 20 for i in range(20)}},
    }
)


def _node_list_megabytes(count: int) -> dict[str, Any]:
    """A kubectl-like node list: `count` nodes, labels and annotations as real clusters have."""
    items = []
    for i in range(count):
        name = f"worker-{i:05d}.k8s.example"
        items.append(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "uid": f"6b0c0b0e-5b1e-4e3a-9a55-{i:012x}",
                    "resourceVersion": str(100000 + i),
                    "labels": {
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "topology.kubernetes.io/zone": f"zone-{i % 3}",
                        "node.kubernetes.io/instance-type": "m5.large",
                    },
                    "annotations": {
                        # kubectl apply's copy of the object: a long string, as in real clusters
                        "kubectl.kubernetes.io/last-applied-configuration": LAST_APPLIED,
                        "node.alpha.kubernetes.io/ttl": "0",
                        "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                        "kubeadm.alpha.kubernetes.io/cri-socket": "unix:///run/containerd.sock",
                    },
                },
                "spec": {
                    "podCIDR": f"10.{64 + i // 256}.{i % 256}.0/24",
                    "podCIDRs": [f"10.{64 + i // 256}.{i % 256}.0/24"],
                    "providerID": f"kind://docker/k8s/{name}",
                },
                "status": {
                    "addresses": [
                        {"type": "InternalIP", "address": f"198.18.{i // 250}.{i % 250 + 1}"},
                        {"type": "Hostname", "address": name},
                    ],
                    "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                    "conditions": [
                        {"type": "Ready", "status": "True", "reason": "KubeletReady"},
                        {"type": "MemoryPressure", "status": "False", "reason": "Sufficient"},
                    ],
                },
            }
        )
    return {"apiVersion": "v1", "kind": "List", "items": items, "metadata": {}}


def test_few_megabytes_of_yaml(capsys: pytest.CaptureFixture[str], base: Path) -> None:
    """A 3 MB kubectl-style node list (1,500 nodes with labels, annotations, conditions) validates
    in time; the same with one bad PodCIDR at the end is one error line, exit 65, and nothing
    written by render --all-nodes --out."""
    work = _workdir(base)
    doc = _node_list_megabytes(1500)
    good = work / "nodes.yaml"
    text = yaml.dump(doc, Dumper=YAML_DUMPER, width=1 << 20)
    good.write_text(text)
    assert good.stat().st_size > 3_000_000
    head, last, tail = text.rpartition("- 10.69.219.0/24")  # the last node's spec.podCIDRs[0]
    assert last
    bad = work / "bad.yaml"
    bad.write_text(head + "- 10.69.219.1/24" + tail)
    STATS["inputs: crafted"] += 2
    subnet = ["--pod-subnet", "10.64.0.0/10"]
    result = run_cli(capsys, ["validate", str(good), *subnet], cwd=work, seconds=BIG_TIME_LIMIT)
    check_ended(result, {0})
    check_messages(result)
    assert result.out == "ok: 1500 nodes, 0 pods, IPv4\n", result
    argv = ["render", str(bad), "--all-nodes", "--out", "out", *subnet]
    result = run_cli(capsys, argv, cwd=work, seconds=BIG_TIME_LIMIT)
    check_ended(result, {65})
    check_messages(result)
    assert result.err.count("\n") == 1 and "items[1499].spec.podCIDRs[0]" in result.err, result
    assert not (work / "out").exists()


def _alias_bomb(levels: int, width: int, indent: str) -> str:
    """Nested aliases: `levels` anchors, each `width` aliases of the one before (width**levels)."""
    lines = [f"{indent}a0: &a0 [{', '.join(['lol'] * width)}]"]
    lines += [
        f"{indent}a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)
    ]
    return "\n".join(lines) + "\n"


BOMBS = {
    # a ClusterSnapshot with an unknown top-level key holding the bomb: 65
    "snapshot, top-level key": (
        SEED_BYTES.decode() + "bomb:\n" + _alias_bomb(12, 12, "  "),
        [],
        {65},
    ),
    # a node list whose node has the bomb as annotations, which kindnet ignores: valid (or 65
    # if kindplan refuses aliases altogether)
    "node list, annotations": (
        "apiVersion: v1\nkind: List\nitems:\n- kind: Node\n  metadata:\n    name: n1\n"
        "    annotations:\n"
        + _alias_bomb(12, 12, "      ")
        + "  spec: {podCIDRs: [10.244.1.0/24]}\n"
        "  status: {addresses: [{type: InternalIP, address: 198.18.0.1}]}\n",
        ["--pod-subnet", "10.244.0.0/16"],
        {0, 65},
    ),
}


def test_alias_bombs(base: Path) -> None:
    """Alias bombs (12 anchors of 12 aliases each: 12**12 leaves if expanded), as processes at
    once: each answers within 10 s (1 s when well) under a 1 GiB address-space limit."""
    work = _workdir(base)
    runs = []
    for i, (text, extra, _) in enumerate(BOMBS.values()):
        path = work / f"bomb{i}.yaml"
        path.write_text(text)
        assert len(text) < 4096
        runs.append(
            ProcessRun(["validate", str(path), *extra], work, timeout=10.0, memory=BOMB_MEMORY)
        )
    STATS["inputs: crafted"] += len(runs)
    failures = []
    for (name, (_, _, allowed)), result in zip(BOMBS.items(), run_processes(runs), strict=True):
        try:
            check_ended(result, allowed)
            check_messages(result)
        except AssertionError as e:
            failures.append(f"{name}: {str(e).splitlines()[0]}")
    assert not failures, "\n".join(failures)


DEEP_IN_PROCESS = {
    "json-list-10000": lambda: "[" * 10_000 + "]" * 10_000,
    "json-object-10000": lambda: '{"a": ' * 10_000 + "1" + "}" * 10_000,
    "json-unclosed-1000000": lambda: "[" * 1_000_000,
    "yaml-flow-10000": lambda: "kind: ClusterSnapshot\nx: " + "[" * 10_000 + "]" * 10_000,
    "yaml-block-10000": lambda: "kind: ClusterSnapshot\nx:\n" + "- " * 10_000 + "x",
}
DEEP_AS_PROCESS = {
    "yaml-flow-30000": lambda: "kind: ClusterSnapshot\nx: " + "[" * 30_000 + "]" * 30_000,
    "yaml-flow-unclosed-100000": lambda: "kind: ClusterSnapshot\nx: " + "[" * 100_000,
    "yaml-block-100000": lambda: "kind: ClusterSnapshot\nx:\n" + "- " * 100_000 + "x",
    "yaml-mapping-100000": lambda: "kind: ClusterSnapshot\nx: " + "{a: " * 100_000 + "1",
}


@pytest.mark.parametrize("name", list(DEEP_IN_PROCESS))
def test_deep_nesting_in_process(capsys: pytest.CaptureFixture[str], base: Path, name: str) -> None:
    """10,000 levels of [ or { (and a million unclosed [): 65, one line, in time."""
    work = _workdir(base)
    path = work / "deep.txt"
    path.write_text(DEEP_IN_PROCESS[name]())
    STATS["inputs: crafted"] += 1
    result = run_cli(capsys, ["validate", str(path)], cwd=work)
    check_ended(result, {65})
    check_messages(result)


def test_deep_nesting_as_processes(base: Path) -> None:
    """YAML nested deeper than Python's recursion limit would allow (PyYAML's C parser recurses
    in C instead), as processes at once: each is 65, none is killed by a signal."""
    work = _workdir(base)
    runs = []
    for name, text in DEEP_AS_PROCESS.items():
        path = work / f"{name}.yaml"
        path.write_text(text())
        runs.append(ProcessRun(["validate", str(path)], work, timeout=20.0))
    STATS["inputs: crafted"] += len(runs)
    failures = []
    for name, result in zip(DEEP_AS_PROCESS, run_processes(runs), strict=True):
        try:
            check_ended(result, {65})
            check_messages(result)
        except AssertionError as e:
            failures.append(f"{name}: {str(e).splitlines()[0]}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_integer_with_5000_digits(
    capsys: pytest.CaptureFixture[str], base: Path, suffix: str
) -> None:
    """An MTU of 5,000 digits (past Python's 4,300-digit int conversion limit): 65, one line."""
    work = _workdir(base)
    doc = yaml.safe_load(SEED_BYTES)
    text = json.dumps(doc).replace('"cluster": {', '"cluster": {"mtu": ' + "1" * 5000 + ", ")
    path = work / f"mtu{suffix}"
    path.write_text(text if suffix == ".json" else "# YAML\n" + text)
    STATS["inputs: crafted"] += 1
    result = run_cli(capsys, ["validate", str(path)], cwd=work)
    check_ended(result, {65})
    check_messages(result)


@pytest.mark.parametrize("mtu", ["1500.0", "1280.0", "9000.0"])
def test_integral_float_mtu(capsys: pytest.CaptureFixture[str], base: Path, mtu: str) -> None:
    """cluster.mtu 1500.0 passes the schema (JSON Schema's integer includes integral numbers);
    then the conflist must still say 1500: the ptp plugin decodes mtu into a Go int, and Go's
    JSON decoder refuses 1500.0. (Or the snapshot is refused: 65, nothing written.)"""
    work = _workdir(base)
    text = SEED_BYTES.decode().replace(
        'podSubnets: ["10.244.0.0/16"]', f'podSubnets: ["10.244.0.0/16"]\n  mtu: {mtu}'
    )
    assert f"mtu: {mtu}" in text
    (work / "mtu.yaml").write_text(text)
    STATS["inputs: crafted"] += 1
    result = run_cli(capsys, ["render", "mtu.yaml", "--all-nodes", "--out", "out"], cwd=work)
    check_ended(result, {0, 65})
    check_messages(result)
    if result.status == 65:
        assert not (work / "out").exists()
        return
    for path in sorted((work / "out").rglob("*.conflist")):
        value = json.loads(path.read_text())["plugins"][0]["mtu"]
        assert type(value) is int, (
            f'{path.relative_to(work)}: "mtu": {value!r}; CNI plugins cannot decode it'
        )


def test_saved_plan_without_netns_key_is_refused(base: Path) -> None:
    """save_plan always writes inputs.netns (null for the host). A plan without the key is
    malformed; parse_plan must not read it as null, which would apply it to this host's network.
    (Only parse_plan runs here: nothing is applied.)"""
    work = _workdir(base)
    inputs = {
        "options": asdict(Options(node="k8s-guide-worker2")),
        "source": "seed.yaml",
        "podSubnets": [],
        "snapshot": base64.b64encode(SEED_BYTES).decode(),
    }
    path = work / "plan.json"
    plan = plan_to_json(Plan("k8s-guide-worker2", ()))
    doc = {"kind": SAVED_KIND, "fingerprint": "0" * 64, "inputs": inputs, "plan": plan}
    path.write_text(json.dumps(doc))
    inputs["netns"] = MISSING_NETNS  # the same plan with the key is well-formed
    (work / "with-netns.json").write_text(json.dumps(doc))
    assert load_plan(work / "with-netns.json").netns == MISSING_NETNS
    STATS["inputs: crafted"] += 1
    with pytest.raises(InvalidInputError):
        load_plan(path)


# ------------------------------------------------------------------------------------------------
# 4. The host, after all of it
# ------------------------------------------------------------------------------------------------


def test_zz_host_network_unchanged() -> None:
    """After the campaign: the host's proto-75 routes and its KIND-MASQ-AGENT chains are what
    they were before (on a clean host: empty), and no namespace a saved plan names exists."""
    after = host_network_state()
    assert after == HOST_BEFORE


def load_plan(path: Path) -> SavedPlan:
    """A saved plan read as `kindplan apply --plan` reads it."""
    return parse_plan(*read_source(str(path)))
