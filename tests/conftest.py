"""Shared fixtures: throw-away network namespaces, the root rule, the golden-file update switch.

Tests marked `root` need root and the real tools. Outside CI they skip cleanly without them; in CI
(CI=true) a kernel test that cannot run fails instead, because those are the tests that matter most.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from shell import CNI_BIN, NETNS_PREFIX, sh

# Every tool a kernel test uses: a missing one must fail CI, not skip. Both iptables backends
# (Debian's iptables package has both): the backend tests switch a node between them.
REQUIRED_TOOLS = (
    "ip",
    "iptables-restore",
    "iptables-save",
    "ip6tables-restore",
    "iptables-legacy",
    "iptables-nft",
    "nft",  # nftables: the nftables masquerade backend's kernel tests
    "runuser",  # util-linux: test_nonroot runs kindplan as nobody in a mount namespace
    "unshare",
)
_counter = itertools.count()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="rewrite fixtures/*/expected from the current renderer (review the git diff!)",
    )


def _missing_for_root_tests() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if not (CNI_BIN / "ptp").exists():
        missing.append(str(CNI_BIN / "ptp"))
    return f"missing tools: {', '.join(missing)}" if missing else None


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") is None:
        return
    reason = _missing_for_root_tests()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"kernel test cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def _netns_list() -> list[str]:
    if shutil.which("ip") is None:
        return []
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


def _owner_alive(name: str) -> bool:
    """Names are kpt-<pid>-<n>: a namespace whose test process still runs is not a leftover."""
    pid = name.removeprefix(NETNS_PREFIX).split("-")[0]
    return pid.isdigit() and Path(f"/proc/{pid}").exists()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Remove namespaces left by an earlier, killed test run (our prefix, owner gone)."""
    if os.geteuid() != 0:
        return
    for name in _netns_list():
        if name.startswith(NETNS_PREFIX) and not _owner_alive(name):
            subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def make_netns() -> Iterator[Callable[[], str]]:
    """Factory of uniquely named, empty network namespaces (lo up), all removed at teardown."""
    made: list[str] = []

    def make() -> str:
        name = f"{NETNS_PREFIX}{os.getpid()}-{next(_counter)}"
        sh("ip", "netns", "add", name)
        made.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    yield make
    for name in made:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def netns(make_netns: Callable[[], str]) -> str:
    return make_netns()
