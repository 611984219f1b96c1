"""Odd or corrupt state, and odd flags: one line and a clear exit status, never a traceback; and
one applier per namespace, whatever the flags."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
from pathlib import Path

import pytest
from nodes import KINDPLAN, Node, big_node, kindplan, our_routes
from shell import sh

from kindplan.node.journal import Journal

pytestmark = pytest.mark.root


def one_line(result: subprocess.CompletedProcess[str], status: int, *parts: str) -> None:
    """The command failed with `status` and said so in one `error:` line holding `parts`."""
    assert result.returncode == status, (result.returncode, result.stderr)
    # A wait for the node lock is announced first (whose lock, how long): a line of its own.
    lines = [x for x in result.stderr.splitlines() if not x.startswith("waiting for ")]
    assert len(result.stderr.splitlines()) - len(lines) <= 1, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for part in parts:
        assert part in result.stderr, result.stderr


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# -- one applier per namespace -------------------------------------------------------------------


def test_applies_with_different_state_dirs_on_one_namespace_take_turns(
    netns: str, tmp_path: Path
) -> None:
    """An apply stopped while it holds the lock (SIGSTOP after its first batch) keeps every other
    apply of the namespace out: another --state-dir, or no --netns from inside the namespace."""
    node, a, _ = big_node(netns, tmp_path)
    journal = Journal(tmp_path / "one", netns).path
    first = subprocess.Popen(
        [*KINDPLAN, "apply", *node.args(a), "--state-dir", str(tmp_path / "one")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while not (journal.exists() and journal.stat().st_size) and first.poll() is None:
            pass
        first.send_signal(signal.SIGSTOP)
        assert first.poll() is None, "finished before it could be stopped"
        held = our_routes(netns)
        other_dir = kindplan(
            "apply", *node.args(a), "--state-dir", str(tmp_path / "two"), "--lock-timeout", "1"
        )
        one_line(other_dir, 1, "another kindplan apply holds the lock")
        inside = ["ip", "netns", "exec", netns, *KINDPLAN, "apply", str(a), "--node", node.name]
        three = ["--conf-dir", str(tmp_path / "cni"), "--state-dir", str(tmp_path / "three")]
        from_inside = subprocess.run(
            [*inside, *three, "--lock-timeout", "1"],
            capture_output=True,
            text=True,
            check=False,
        )
        one_line(from_inside, 1, "another kindplan apply holds the lock")
        rollback = kindplan(
            "rollback",
            "--netns",
            netns,
            "--state-dir",
            str(tmp_path / "one"),
            "--lock-timeout",
            "1",
        )
        one_line(rollback, 1, "another kindplan apply holds the lock")
        assert our_routes(netns) == held, "nobody wrote while the first held the lock"
    finally:
        first.send_signal(signal.SIGCONT)
        _, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    after = kindplan("apply", *node.args(a), "--state-dir", str(tmp_path / "two"))
    assert (after.returncode, after.stdout) == (0, "No changes.\n"), after.stderr


@pytest.mark.parametrize("command", ["apply", "plan", "rollback", "history", "show"])
def test_a_rejected_netns_creates_nothing_anywhere(
    seed_worker2: Node, tmp_path: Path, command: str
) -> None:
    node = seed_worker2
    state = tmp_path / "deep" / "er" / "state"
    before = tree(tmp_path)
    args = {
        "apply": [str(node.snapshot), "--node", node.name, "--state-dir", str(state)],
        "plan": [str(node.snapshot), "--node", node.name],
        "rollback": ["--state-dir", str(state)],
        "history": ["--state-dir", str(state)],
        "show": [],
    }[command]
    result = kindplan(command, *args, "--netns", "../../x")
    assert result.returncode == 64 and "not a namespace name" in result.stderr, result.stderr
    assert result.stderr.count("\n") <= 6 and "Traceback" not in result.stderr
    assert tree(tmp_path) == before


# -- corrupt or odd state --------------------------------------------------------------------


PRIVATE_MOUNTS = ["unshare", "-m", "--propagation", "private", "sh", "-c"]


def test_a_full_state_filesystem_is_one_line_and_changes_nothing(
    seed_worker2: Node, tmp_path: Path
) -> None:
    """ENOSPC for the journal: a tiny full tmpfs in a private mount namespace (the host's mounts
    are not touched); the apply says so and, its undo not on disk, changes nothing."""
    node = seed_worker2
    full = tmp_path / "full"
    full.mkdir()
    script = (
        f"mount -t tmpfs -o size=16k tmpfs {full} && "
        f"(dd if=/dev/zero of={full}/fill bs=4k 2>/dev/null || true) && "
        f'exec "$@"'
    )
    result = subprocess.run(
        [*PRIVATE_MOUNTS, script, "sh", *KINDPLAN, "apply", *node.args(), "--state-dir", str(full)],
        capture_output=True,
        text=True,
        check=False,
    )
    one_line(result, 1, "cannot write the journal: No space left on device", "nothing was changed")
    assert our_routes(node.ns) == [] and not node.conflist.exists()
    assert tree(full) == [], "the tmpfs was private: nothing of it reached this namespace"


def test_a_state_dir_that_is_a_file(seed_worker2: Node, tmp_path: Path) -> None:
    node = seed_worker2
    state = tmp_path / "state-file"
    state.write_text("x")
    for command in (
        ["apply", *node.args()],
        ["rollback", "--netns", node.ns],
        ["history", "--netns", node.ns],
    ):
        result = kindplan(*command, "--state-dir", str(state))
        assert result.returncode == 64 and "is not a directory" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    assert our_routes(node.ns) == []


@pytest.mark.parametrize(
    "content",
    ["directory", "nested 100,000 deep", "dst a number", "families holds a number"],
)
def test_an_unusable_journal_is_one_line_naming_it_and_what_to_do(
    seed_worker2: Node, content: str
) -> None:
    node = seed_worker2
    assert node.apply().returncode == 0
    journal = Journal(node.tmp / "state", node.ns).path
    lines = journal.read_text().splitlines()
    journal.unlink()
    if content == "directory":
        journal.mkdir()
    elif content == "nested 100,000 deep":
        journal.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    elif content == "dst a number":
        journal.write_text("\n".join(lines).replace('"dst":"10.244.0.0/24"', '"dst":5') + "\n")
    else:
        journal.write_text("\n".join(lines).replace('"families":[4]', '"families":4') + "\n")
    state = ["--netns", node.ns, "--state-dir", str(node.tmp / "state")]
    for command in ("rollback", "history"):
        one_line(kindplan(command, *state), 1, str(journal), "unusable journal", "move it aside")
    routes = our_routes(node.ns)
    sh("ip", "-n", node.ns, "route", "del", "10.244.0.0/24")
    again = node.apply()
    if content in ("directory", "nested 100,000 deep"):  # an apply cannot append to these
        one_line(again, 1, "unusable journal", "move it aside")
        assert our_routes(node.ns) != routes, "no change without its undo on disk"
        return
    # The header lines an apply reads are fine: it appends its generation, which rollback
    # undoes; the bad one is named when rollback comes to it.
    assert again.returncode == 0, again.stderr
    assert our_routes(node.ns) == routes
    assert kindplan("rollback", *state).returncode == 0
    assert "10.244.0.0/24" not in " ".join(our_routes(node.ns))
    one_line(kindplan("rollback", *state), 1, "(line ", "unusable journal", "move it aside")


def test_a_cni_cache_dir_name_too_long_for_the_kernel(seed_worker2: Node, tmp_path: Path) -> None:
    node = seed_worker2
    long = str(tmp_path / ("c" * 300))
    for command in ("plan", "apply"):
        extra = ["--state-dir", str(tmp_path / "state")] if command == "apply" else []
        result = kindplan(command, *node.args(), "--cni-cache-dir", long, *extra)
        assert result.returncode == 64 and "longer than 255" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    saved = tmp_path / "saved.json"
    assert node.plan("--out", str(saved)).returncode == 0
    document = json.loads(saved.read_text())
    document["inputs"]["options"]["cni_cache_dir"] = long
    saved.write_text(json.dumps(document))
    result = kindplan("apply", "--plan", str(saved), "--state-dir", str(tmp_path / "state"))
    one_line(result, 65, "inputs.options.cni_cache_dir", "longer than 255")
    assert our_routes(node.ns) == []


@pytest.mark.parametrize("kind", ["directory", "FIFO", "not UTF-8"])
def test_show_conf_file_that_cannot_be_shown(seed_worker2: Node, tmp_path: Path, kind: str) -> None:
    conf = tmp_path / "conf"
    if kind == "directory":
        conf.mkdir()
    elif kind == "FIFO":
        os.mkfifo(conf)
    else:
        conf.write_bytes(b'{"name": "\xff\xfe"}\n')
    result = kindplan("show", "--netns", seed_worker2.ns, "--conf-file", str(conf))
    assert result.returncode == 1 and "routes with protocol 75" in result.stdout
    want = "not UTF-8" if kind == "not UTF-8" else "not a regular file"
    assert result.stderr.count("\n") == 1 and want in result.stderr, result.stderr


def test_a_second_sigint_stops_at_once_in_one_line(netns: str, tmp_path: Path) -> None:
    """The first Ctrl-C waits for the batch in flight; a second one does not wait, and every
    batch it cut short had its undo on disk already."""
    node, a, _ = big_node(netns, tmp_path)
    proc = subprocess.Popen(
        [*KINDPLAN, "apply", *node.args(a), "--state-dir", str(tmp_path / "state")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    journal = Journal(tmp_path / "state", netns).path
    while not (journal.exists() and journal.stat().st_size) and proc.poll() is None:
        pass
    os.kill(proc.pid, signal.SIGINT)
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.count("\n") == 1, err
    assert err.startswith("error: interrupted"), err
    back = kindplan("rollback", "--netns", netns, "--state-dir", str(tmp_path / "state"))
    assert back.returncode == 0, back.stderr
    assert our_routes(netns) == []


# -- rollback does what it says ---------------------------------------------------------------


def test_rollback_says_what_it_removed_re_added_and_restored(seed_worker2: Node) -> None:
    node = seed_worker2
    state = ["--netns", node.ns, "--state-dir", str(node.tmp / "state")]
    sh("ip", "-n", node.ns, "route", "add", "10.244.1.0/24", "via", "172.18.0.77")  # adopted
    sh("ip", "-n", node.ns, "route", "add", "10.244.9.0/24", "via", "172.18.0.19", "proto", "75")
    assert node.apply("--adopt").returncode == 0  # deletes the stale 10.244.9.0/24
    back = kindplan("rollback", *state)
    assert back.returncode == 0, back.stderr
    lines = back.stdout.splitlines()
    assert "re-added: route 10.244.9.0/24 via 172.18.0.19 dev eth0 proto 75" in lines, lines
    assert any(x.startswith("restored: route 10.244.1.0/24 via 172.18.0.77") for x in lines)
    assert any(x.startswith("removed: route 10.244.0.0/24 via 172.18.0.10") for x in lines)
    chain = re.compile(r"removed: iptables(-nft|-legacy)? nat: chain KIND-MASQ-AGENT")  # backend
    assert any(chain.match(x) for x in lines), lines
    assert any(x.startswith("removed: file ") for x in lines)
    assert any(x.startswith("removed: address 10.244.2.1/32") for x in lines)


@pytest.mark.parametrize("before", ["someone's conflist", "no conflist"])
def test_rollback_leaves_a_conflist_edited_since_and_says_how_to_finish(
    seed_worker2: Node, before: str
) -> None:
    node = seed_worker2
    state = ["--netns", node.ns, "--state-dir", str(node.tmp / "state")]
    original = '{"name": "old"}\n'
    if before == "someone's conflist":
        node.conflist.parent.mkdir(parents=True)
        node.conflist.write_text(original)
    empty = our_routes(node.ns)
    assert node.apply().returncode == 0
    edited = node.conflist.read_text().replace('"mtu": 1500', '"mtu": 1450')
    assert edited != node.conflist.read_text()
    node.conflist.write_text(edited)
    back = kindplan("rollback", *state)
    assert back.returncode == 0, back.stderr
    assert our_routes(node.ns) == empty, "the rest was rolled back"
    assert node.conflist.read_text() == edited, "the edit is left alone"
    assert back.stderr.count("\n") == 1 and back.stderr.startswith("left alone: file ")
    assert "1 left alone (see above)" in back.stdout
    assert "Nothing to roll back" in kindplan("rollback", *state).stdout, "the generation went"
    how = back.stderr.split("to finish by hand, ", 1)[1].strip()
    command = how.split(": ", 1)[1]
    if before == "someone's conflist":
        assert command.startswith("cp ")
    else:
        assert command.startswith("rm ") and "the apply created it" in how
    subprocess.run(command, shell=True, check=True)  # the operator finishes
    if before == "someone's conflist":
        assert node.conflist.read_text() == original
    else:
        assert not node.conflist.exists()


def test_rollback_puts_jumps_back_at_their_old_positions(seed_worker2: Node) -> None:
    """Copies of the jump among foreign POSTROUTING rules: the apply keeps the first where it
    is, and rollback puts the others back between the same foreign rules, not after them."""
    from kindplan.core.masq.iptables import jump_rule

    node = seed_worker2
    assert node.apply().returncode == 0
    jump = shlex.split(jump_rule().removeprefix("-A POSTROUTING "))

    def postrouting() -> list[str]:
        return sh("iptables", "-t", "nat", "-S", "POSTROUTING", ns=node.ns).splitlines()[1:]

    sh("iptables", "-t", "nat", "-I", "POSTROUTING", "1", "-s", "172.17.0.0/16", "-j",
       "MASQUERADE", ns=node.ns)  # fmt: skip
    sh("iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "172.20.0.0/16", "-j", "MASQUERADE",
       ns=node.ns)  # fmt: skip
    sh("iptables", "-t", "nat", "-A", "POSTROUTING", *jump, ns=node.ns)
    sh("iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "docker0", "-j", "RETURN", ns=node.ns)
    sh("iptables", "-t", "nat", "-A", "POSTROUTING", *jump, ns=node.ns)
    before = postrouting()
    assert [i for i, rule in enumerate(before) if "KIND-MASQ-AGENT" in rule] == [1, 3, 5]
    assert node.apply().returncode == 0
    after = postrouting()
    assert after == [before[0], before[1], before[2], before[4]], "the first copy stays put"
    back = kindplan("rollback", "--netns", node.ns, "--state-dir", str(node.tmp / "state"))
    assert back.returncode == 0, back.stderr
    assert postrouting() == before
