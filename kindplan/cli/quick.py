"""`kindplan apply SNAPSHOT [flags]` run before the command line's machinery is loaded.

On a node that its converged record (node/converged.py) still describes, it prints what it
printed then, and typer, which takes more instructions to import than the whole converged check
(167M of 440M, measured with callgrind), is never imported. Only a record whose inputs digest
matches answers, and that digest covers the snapshot's bytes, the Options, the namespace and the
code: equal only to what an apply that typer accepted, with the same flags' meanings, recorded.
On any other node (no record, or one that no longer matches), the apply runs here all the same
(cli/applyonce.py, as planning.py runs it after typer), its errors said as program.py says them:
typer's import and its building of apply's options were some 43 ms of CPU before a first
apply's first route, which is why each flag's value is checked here as options.py's callbacks
check it.

Anything else returns None and goes the usual way (program.py), which does it all again from
the start: a command line this module does not read in every detail (another flag, --watch,
--plan, --kube, stdin, a flag given twice, a value it does not take as typer would), a lock
held by another apply (the usual way says whose), an error of any kind before the apply began.
"""

from __future__ import annotations

import gc
import math
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from kindplan.cli.target import DEFAULT_STATE_DIR, LOCK_TIMEOUT_SECONDS, Target, split
from kindplan.status import ExitStatus

if TYPE_CHECKING:
    from kindplan.cli.applyonce import ApplyArgs


def _path(value: object) -> bool:
    """options.py's _path_value: a path the kernel can take."""
    from kindplan.core.model import path_problem

    return path_problem(str(value)) is None


def _route_proto(value: object) -> bool:
    """options.py's RouteProtoOpt: 1-255, and not a number the kernel or others write."""
    from kindplan.core.routes import RESERVED_ROUTE_PROTOS

    return isinstance(value, int) and 1 <= value <= 255 and value not in RESERVED_ROUTE_PROTOS


def _state_dir(value: object) -> bool:
    """options.py's _state_dir: a path the kernel can take, and a folder if it is there."""
    return _path(value) and (not os.path.exists(str(value)) or os.path.isdir(str(value)))


# apply's flags read here, and how typer takes each value (None: a flag without one), checked as
# options.py's callbacks and bounds check them (--netns: netns.check_name, in _answer).
_VALUES: dict[str, tuple[Callable[[str], object], Callable[[object], bool]] | None] = {
    "--node": (str, lambda v: True),
    "--netns": (str, lambda v: True),
    "--conf-dir": (str, _path),
    "--state-dir": (Path, _state_dir),
    "--uplink": (str, lambda v: True),
    "--mtu": (int, lambda v: isinstance(v, int) and 576 <= v <= 65535),
    "--route-proto": (int, _route_proto),
    "--adopt": None,
    "--cni-cache-dir": (str, _path),
    "--pod-subnet": (str, lambda v: True),
    "--lock-timeout": (float, lambda v: isinstance(v, float) and math.isfinite(v) and v >= 0),
    # Choices, taken as their callbacks in options.py take them (a word of the list, as it is).
    "--masq-backend": (str, lambda v: v in ("auto", "iptables", "nftables")),
    "--cross-subnet": (str, lambda v: v in ("none", "vxlan")),
    "--route-style": (str, lambda v: v in ("plain", "nexthop", "auto")),
}
_REPEATABLE = {"--pod-subnet"}


def converged_apply(argv: list[str]) -> int | None:
    """The exit status of `argv` if it is an apply read here: one that the converged record
    answers (what it printed then printed again), or one run here; None if the command line
    must run it."""
    flags = _apply_flags(argv)
    if flags is None or os.environ.get("_KINDPLAN_COMPLETE"):  # shell completion: typer's
        return None
    with _sigint_deferred():
        try:
            answer = _answer(flags)
        except KeyboardInterrupt:  # a second Ctrl-C, as program.py says it
            sys.stderr.write(f"error: {_INTERRUPTED}\n")
            return ExitStatus.INTERRUPTED
        except Exception:
            return None
    return answer if answer is None or isinstance(answer, int) else _apply_here(answer)


_INTERRUPTED = "interrupted; kindplan history shows what the journal holds"


def _apply_here(args: ApplyArgs) -> int:
    """apply_once, as program.main runs a command: without the cyclic collector (see there),
    Ctrl-C as Interrupted, kindplan's errors said and mapped to their exit statuses."""
    from kindplan.cli.applyonce import apply_once, failed
    from kindplan.errors import Interrupted, KindplanError

    collecting = gc.isenabled()
    gc.disable()
    try:
        try:
            return apply_once(args)
        except KeyboardInterrupt:
            raise Interrupted(_INTERRUPTED) from None
    except KindplanError as e:
        return failed(e)
    finally:
        if collecting:  # main() may run inside a longer-lived process (the tests)
            gc.enable()


def _apply_flags(argv: list[str]) -> dict[str, list[object]] | None:
    """`apply SNAPSHOT` and the flags of _VALUES, by flag (the snapshot under ""), typed as
    typer types them; None if anything else is there."""
    if not argv or argv[0] != "apply":
        return None
    flags: dict[str, list[object]] = {}
    words = iter(argv[1:])
    for word in words:
        name, equals, value = word.partition("=")
        if not word.startswith("-"):
            flags.setdefault("", []).append(word)
            continue
        if name not in _VALUES or (name in flags and name not in _REPEATABLE):
            return None
        kind = _VALUES[name]
        if kind is None:  # a flag without a value
            if equals:
                return None
            flags[name] = [True]
            continue
        text = value if equals else next(words, None)
        typed = _typed(kind, text)
        if typed is None:
            return None
        flags.setdefault(name, []).append(typed)
    snapshot = flags.get("", [])
    if len(snapshot) != 1 or snapshot[0] == "-":
        return None
    return flags


def _typed(
    kind: tuple[Callable[[str], object], Callable[[object], bool]], text: str | None
) -> object | None:
    """`text` as typer takes it for a flag of `kind`; None if it may not take it so."""
    if text is None or text.startswith("-"):
        return None
    convert, fits = kind
    try:
        value = convert(text)
    except ValueError:
        return None
    return value if fits(value) else None


def _answer(flags: dict[str, list[object]]) -> int | ApplyArgs | None:
    """What the record says for these flags: printed, and OK; else the apply to run here; None
    if another apply holds the node's lock."""
    from kindplan.core.routes import DEFAULT_ROUTE_PROTO
    from kindplan.inputs.sources import read_input
    from kindplan.node.converged import Remember, converged_record, inputs_digest, load_record
    from kindplan.node.locking import apply_lock, lock_holder
    from kindplan.node.netns import check_name
    from kindplan.node.statedir import target_dir

    def text(name: str) -> str | None:
        return str(flags[name][-1]) if name in flags else None

    def number(name: str) -> int | None:
        value = flags[name][-1] if name in flags else None
        return value if isinstance(value, int) else None

    conf_dir, netns = text("--conf-dir"), text("--netns")
    check_name(netns)
    route_proto = number("--route-proto")
    target = Target(
        node=text("--node"),
        netns=netns,
        conf_dir=None if conf_dir is None else os.path.abspath(conf_dir),  # as typer's callback
        uplink=text("--uplink"),
        mtu=number("--mtu"),
        route_proto=DEFAULT_ROUTE_PROTO if route_proto is None else route_proto,
        adopt="--adopt" in flags,
        cni_cache_dir=text("--cni-cache-dir"),
        masq_backend=text("--masq-backend"),
        cross_subnet=text("--cross-subnet"),
        route_style=text("--route-style"),
    )
    state_dir = Path(text("--state-dir") or DEFAULT_STATE_DIR)
    if not _state_dir(state_dir):  # the default too, as typer checks it
        return None
    path = target_dir(state_dir, netns) / "converged.json"
    if lock_holder(apply_lock(netns)) is not None:  # the usual way says whose, and waits
        return None
    pod_subnets = split(map(str, flags.get("--pod-subnet", [])))
    timeout = float(str(flags["--lock-timeout"][-1])) if "--lock-timeout" in flags else None
    lock_timeout = LOCK_TIMEOUT_SECONDS if timeout is None else timeout

    def run_here() -> ApplyArgs:  # the module only then: a converged node's apply needs none of it
        from kindplan.cli.applyonce import ApplyArgs

        return ApplyArgs(str(flags[""][0]), None, pod_subnets, target, state_dir, lock_timeout)

    if load_record(path) is None:  # a first apply: nothing read twice
        return run_here()
    given = read_input(str(flags[""][0]), pod_subnets)
    options = target.options()
    remember = Remember(path, inputs_digest(given.data, given.pod_subnets, options, netns), "", str)
    record = converged_record(netns, options, remember, lock_timeout=lock_timeout)
    if record is None:
        return run_here()
    sys.stderr.write(record.warnings)
    sys.stdout.write(record.output)
    sys.stdout.flush()
    return ExitStatus.OK


@contextmanager
def _sigint_deferred() -> Iterator[None]:
    """As apply's: a first Ctrl-C during the check is noted, a second one stops it."""

    def handle(signum: int, _frame: object) -> None:
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
