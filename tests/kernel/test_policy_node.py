"""kindplan's NetworkPolicy table (table inet kindplan-policy) against real nft in a namespace:
written, read back equal, elements changed alone (the chains and rules untouched, one element
transaction), rewritten, deleted, rolled back (compare-and-swap), a converged round with no nft
process, someone else's table of that name left alone, and a transaction nft refuses changing
nothing.

The tables are hand-built in the shape a policy table has (inet, a forward base chain, sets of
ipv4_addr / ipv6_addr / address . protocol . port, an interval set, rules with comments); the
compile is replaced by one that returns them (compile_policy is the seam between the cluster's
policies and this table)."""

from __future__ import annotations

import re
import socket
from dataclasses import replace
from pathlib import Path

import pytest
from nodes import Node
from shell import sh

import kindplan.core.compiler
import kindplan.node.nftables
from kindplan.core.model import Options
from kindplan.core.nfttable import NftChain, NftSet, NftTable
from kindplan.core.planview import format_plan
from kindplan.core.policychanges import DelPolicyTable, WritePolicyElements, WritePolicyTable
from kindplan.core.policytable import MARKER
from kindplan.inputs.files import load_snapshot
from kindplan.node.converged import Remember, converged_record, inputs_digest
from kindplan.node.engine import apply_opened, make_plan, rollback_opened
from kindplan.node.journal import Journal
from kindplan.node.opener import open_node
from kindplan.node.statedir import target_dir

pytestmark = pytest.mark.root

BASE = "type filter hook forward priority filter; policy accept;"
PORTS = "ipv4_addr . inet_proto . inet_service"
TABLE = NftTable(
    "inet",
    "kindplan-policy",
    (
        NftSet(
            "allow-0",
            "ipv4_addr",
            ("interval",),
            frozenset({"10.244.1.0/24", "192.0.2.0/25", "198.51.100.7"}),
            "x/allow-y rule 0",
        ),
        NftSet(
            "allow-0-ports",
            PORTS,
            (),
            frozenset({"10.244.2.8 . tcp . 80", "10.244.2.8 . udp . 53"}),
        ),
        NftSet("isolated4", "ipv4_addr", (), frozenset({"10.244.2.8"})),
        NftSet("isolated6", "ipv6_addr", (), frozenset({"fd00:10:244:2::8"})),
        NftSet("span", PORTS, ("interval",), frozenset({"10.244.2.8 . tcp . 8000-8080"})),
    ),
    (
        NftChain(
            "forward",
            BASE,
            (
                'ct state established,related accept comment "replies"',
                'ip daddr @isolated4 jump ingress comment "isolated pods"',
                "ip6 daddr @isolated6 jump ingress",
            ),
        ),
        NftChain(
            "ingress",
            "",
            (
                "ip saddr @allow-0 ip daddr . meta l4proto . th dport @allow-0-ports accept "
                'comment "x/allow-y rule 0"',
                "ip daddr . meta l4proto . th dport @span accept",
                'drop comment "x isolated"',
            ),
        ),
    ),
)


def with_elements(table: NftTable, name: str, elements: set[str]) -> NftTable:
    sets = tuple(
        replace(s, elements=frozenset(elements)) if s.name == name else s for s in table.sets
    )
    return replace(table, sets=sets)


class Policy:
    """The node, the table the compile returns, and every nft process kindplan runs."""

    def __init__(self, node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
        self.node = node
        self.want: NftTable | None = None
        self.runs: list[tuple[list[str], str | None]] = []
        self.transaction_timeout: float | None = None  # seconds for `nft -f` (None: the runner's)
        self.snapshot = load_snapshot(str(node.snapshot)).snapshot
        self.options = Options(node=node.name, conf_dir=str(node.tmp / "cni"))
        self.journal = Journal(node.tmp / "state", node.ns)
        monkeypatch.setattr(kindplan.core.compiler, "policy_table", lambda s, n: self.want)
        real = kindplan.node.nftables._run

        def run(cmd: list[str], stdin: str | None, timeout: float | None = None) -> str:
            self.runs.append((cmd, stdin))
            if cmd[:2] == ["nft", "-f"] and self.transaction_timeout is not None:
                timeout = self.transaction_timeout
            return real(cmd, stdin, timeout)

        monkeypatch.setattr(kindplan.node.nftables, "_run", run)

    def apply(self, want: NftTable | None) -> list[str]:
        """Apply with `want` as the policy table; the nft transactions it sent."""
        self.want = want
        before = len(self.runs)
        with open_node(self.node.ns, 5) as handles:
            _, report = apply_opened(self.snapshot, self.options, handles, journal=self.journal)
        assert report is None or report.ok, report and (report.failures, report.residue)
        return [stdin or "" for cmd, stdin in self.runs[before:] if cmd[:2] == ["nft", "-f"]]

    def listing(self, *flags: str) -> str:
        return sh("nft", *flags, "list", "table", "inet", "kindplan-policy", ns=self.node.ns)


@pytest.fixture
def policy(seed_worker2: Node, monkeypatch: pytest.MonkeyPatch) -> Policy:
    return Policy(seed_worker2, monkeypatch)


def handles(listing: str) -> list[str]:
    """The `# handle N` of every chain and rule of `nft -a list table`, in order."""
    return [
        line.strip()
        for line in listing.splitlines()
        if "# handle" in line and not line.strip().startswith(("set ", "table "))
    ]


def observed(policy: Policy) -> NftTable | None:
    with open_node(policy.node.ns, None) as node:
        planned = make_plan(policy.snapshot, policy.options, node.kernel, node.iptables)
    return planned.observed.policy


def test_written_read_back_equal_and_converged(policy: Policy) -> None:
    sent = policy.apply(TABLE)
    assert [p for p in sent if "kindplan-policy" in p] == [sent[-1]]  # one transaction
    assert sent[-1].startswith("create table inet kindplan-policy")
    assert f'comment "{MARKER}"' in policy.listing()
    assert observed(policy) == TABLE
    assert policy.apply(TABLE) == []


def test_an_element_change_sends_elements_only_and_keeps_every_handle(policy: Policy) -> None:
    policy.apply(TABLE)
    before = handles(policy.listing("-a"))
    changed = with_elements(TABLE, "allow-0", {"10.244.1.0/24", "198.51.100.9"})
    changed = with_elements(changed, "isolated6", {"fd00:10:244:2::8", "fd00:10:244:2::9"})
    (sent,) = policy.apply(changed)
    assert sent.splitlines() == [
        "delete element inet kindplan-policy allow-0 { 192.0.2.0/25, 198.51.100.7 }",
        "add element inet kindplan-policy allow-0 { 198.51.100.9 }",
        "add element inet kindplan-policy isolated6 { fd00:10:244:2::9 }",
    ]
    assert handles(policy.listing("-a")) == before  # chains and rules untouched
    assert observed(policy) == changed


def test_a_structure_change_rewrites_the_table_in_one_transaction(policy: Policy) -> None:
    policy.apply(TABLE)
    chains = (
        TABLE.chains[0],
        replace(TABLE.chains[1], rules=(*TABLE.chains[1].rules[:-1], 'reject comment "x"')),
    )
    rewritten = replace(TABLE, chains=chains)
    (sent,) = policy.apply(rewritten)
    assert sent.startswith("delete table inet kindplan-policy\ncreate table inet kindplan-policy")
    assert observed(policy) == rewritten
    assert policy.apply(rewritten) == []


def test_no_policy_wanted_deletes_the_table_and_nothing_else(policy: Policy) -> None:
    sh("nft", "add table inet neighbours", ns=policy.node.ns)
    policy.apply(TABLE)
    assert policy.apply(None) == ["delete table inet kindplan-policy\n"]
    assert "kindplan-policy" not in sh("nft", "list", "tables", ns=policy.node.ns)
    assert "table inet neighbours" in sh("nft", "list", "tables", ns=policy.node.ns)
    assert policy.apply(None) == []


def test_rollback_puts_the_table_back_exactly(policy: Policy) -> None:
    policy.apply(TABLE)
    listed = policy.listing()
    policy.apply(with_elements(TABLE, "allow-0-ports", {"10.244.2.8 . tcp . 443"}))
    policy.apply(replace(TABLE, chains=(*TABLE.chains[:1], replace(TABLE.chains[1], rules=()))))
    policy.apply(None)
    for _ in range(3):  # the deletion, the rewrite, the element change
        with open_node(policy.node.ns, 5) as node:
            done = rollback_opened(node, policy.journal)
        assert done is not None and done.report.ok and not done.residue and not done.left_alone
    assert policy.listing() == listed
    with open_node(policy.node.ns, 5) as node:
        done = rollback_opened(node, policy.journal)  # the first apply: the table made
    assert done is not None and not done.residue
    assert "kindplan-policy" not in sh("nft", "list", "tables", ns=policy.node.ns)


def test_rollback_leaves_a_table_changed_since_alone_and_says_how_to_finish(
    policy: Policy,
) -> None:
    policy.apply(TABLE)
    policy.apply(with_elements(TABLE, "isolated4", {"10.244.2.8", "10.244.2.9"}))
    sh("nft", "add element inet kindplan-policy isolated4 { 10.244.2.10 }", ns=policy.node.ns)
    edited = policy.listing()
    with open_node(policy.node.ns, 5) as node:
        done = rollback_opened(node, policy.journal)
    assert done is not None
    ((undo, how),) = done.left_alone
    assert isinstance(undo, WritePolicyElements)
    path = re.search(r"nft -f (\S+)", how)
    assert path is not None, how
    assert (
        "delete element inet kindplan-policy isolated4 { 10.244.2.9 }" in Path(path[1]).read_text()
    )
    assert policy.listing() == edited


def test_a_converged_round_runs_no_nft(policy: Policy) -> None:
    policy.want = TABLE
    with open_node(policy.node.ns, 5) as node:  # the loop's handles: kept across rounds
        apply_opened(policy.snapshot, policy.options, node, journal=policy.journal)
        before = len(policy.runs)
        _, report = apply_opened(policy.snapshot, policy.options, node, journal=policy.journal)
        assert report is None
        assert policy.runs[before:] == []  # neither nft list nor nft -f: the generation held


def test_someone_else_s_table_of_that_name_is_left_alone(policy: Policy) -> None:
    ns = policy.node.ns
    sh("nft", 'add table inet kindplan-policy { comment "theirs"; }', ns=ns)
    sh("nft", "add chain inet kindplan-policy c { type filter hook forward priority 0; }", ns=ns)
    theirs = policy.listing()
    with open_node(ns, None) as node:
        planned = make_plan(policy.snapshot, policy.options, node.kernel, node.iptables)
    policy.want = TABLE
    assert not any(isinstance(c, WritePolicyTable | DelPolicyTable) for c in planned.plan.changes)
    with open_node(ns, 5) as node:
        planned, _ = apply_opened(policy.snapshot, policy.options, node)
    assert any("is not kindplan's" in w for w in planned.plan.warnings)
    assert policy.listing() == theirs
    policy.want = None
    with open_node(ns, 5) as node:
        apply_opened(policy.snapshot, policy.options, node)
    assert policy.listing() == theirs


def test_a_refused_transaction_changes_nothing(policy: Policy) -> None:
    policy.apply(TABLE)
    listed = policy.listing()
    broken = replace(
        TABLE, chains=(*TABLE.chains, NftChain("more", "", ("ip saddr @no-such-set accept",)))
    )
    policy.want = broken
    with open_node(policy.node.ns, 5) as node:
        _, report = apply_opened(policy.snapshot, policy.options, node, journal=policy.journal)
    assert report is not None and not report.ok
    assert any("nft -f exited 1" in f for f in report.failures), report.failures
    assert policy.listing() == listed


def test_a_table_of_lines_kindplan_cannot_read_is_rewritten(policy: Policy) -> None:
    policy.apply(TABLE)
    sh(
        "nft",
        "add set inet kindplan-policy extra { type ipv4_addr; timeout 1h; }",
        ns=policy.node.ns,
    )
    with open_node(policy.node.ns, None) as node:
        planned = make_plan(policy.snapshot, policy.options, node.kernel, node.iptables)
    assert planned.observed.policy_unread
    (change,) = [c for c in planned.plan.changes if isinstance(c, WritePolicyTable)]
    assert change.old is not None
    policy.apply(TABLE)
    assert "extra" not in policy.listing()
    assert observed(policy) == TABLE


def test_the_converged_record_covers_the_table(policy: Policy) -> None:
    node = policy.node
    record = target_dir(node.tmp / "state", node.ns) / "converged.json"
    inputs = inputs_digest(node.snapshot.read_bytes(), (), policy.options, node.ns)
    remember = Remember(record, inputs, "", format_plan)
    policy.want = TABLE
    with open_node(node.ns, 5) as handles:
        apply_opened(policy.snapshot, policy.options, handles, remember=remember)

    def fast() -> bool:
        return converged_record(node.ns, policy.options, remember, lock_timeout=5) is not None

    before = len(policy.runs)
    assert fast()  # a one-shot apply of a converged node with a policy table: the fast path
    assert policy.runs[before:] == []  # fresh handles, and still no nft: the generation alone
    sh("nft", "add element inet kindplan-policy isolated4 { 10.244.2.9 }", ns=node.ns)
    assert not fast()  # an element more: the full path, which takes it out again
    with open_node(node.ns, 5) as handles:
        apply_opened(policy.snapshot, policy.options, handles, remember=remember)
    assert observed(policy) == TABLE and fast()


def test_an_nft_that_does_not_answer_in_time_leaves_the_table_whole(policy: Policy) -> None:
    policy.apply(TABLE)
    listed = policy.listing()
    rewritten = replace(TABLE, chains=(TABLE.chains[0], replace(TABLE.chains[1], rules=())))
    policy.transaction_timeout = 0.001
    policy.want = rewritten
    with open_node(policy.node.ns, 5) as node:
        _, report = apply_opened(policy.snapshot, policy.options, node, journal=policy.journal)
    assert report is not None
    assert any("nft -f: no answer in 0.001 s" in f for f in report.failures), report.failures
    # killed before or after its commit: the old table or the new one, never half of either
    assert observed(policy) in (TABLE, rewritten)
    policy.transaction_timeout = None
    if observed(policy) == rewritten:  # it had committed: the journal undoes it
        with open_node(policy.node.ns, 5) as node:
            done = rollback_opened(node, policy.journal)
        assert done is not None and not done.residue
    assert policy.listing() == listed


def _foreign_commits(ns: str, rounds: int) -> None:
    """Another component's commits in a table of its own, as kube-proxy's every sync."""
    sh(
        "nft",
        "add table ip kube-proxy-like; add set ip kube-proxy-like s { type ipv4_addr; }",
        ns=ns,
    )
    for i in range(rounds):
        sh("nft", f"add element ip kube-proxy-like s {{ 10.96.0.{i + 1} }}", ns=ns)


def test_a_watch_round_after_someone_else_s_commits_lists_nothing(policy: Policy) -> None:
    """The generation moved (another table committed to), kindplan's table was not named in
    any commit: the round holds its reading, no nft process."""
    policy.want = TABLE
    with open_node(policy.node.ns, 5) as node:  # the loop's handles: kept across rounds
        apply_opened(policy.snapshot, policy.options, node, journal=policy.journal)
        apply_opened(policy.snapshot, policy.options, node, journal=policy.journal)
        _foreign_commits(policy.node.ns, 3)
        before = len(policy.runs)
        _, report = apply_opened(policy.snapshot, policy.options, node, journal=policy.journal)
        assert report is None
        assert policy.runs[before:] == []


def test_a_watch_round_repairs_an_edit_of_kindplan_s_table_among_other_commits(
    policy: Policy,
) -> None:
    """Someone edits kindplan's table between foreign commits: the event names it, the round
    lists the table and puts the element back."""
    policy.want = TABLE
    ns = policy.node.ns
    with open_node(ns, 5) as node:
        apply_opened(policy.snapshot, policy.options, node, journal=policy.journal)
        apply_opened(policy.snapshot, policy.options, node, journal=policy.journal)
        _foreign_commits(ns, 1)
        sh("nft", "add element inet kindplan-policy isolated4 { 10.244.2.99 }", ns=ns)
        _foreign_commits(ns, 1)
        before = len(policy.runs)
        _, report = apply_opened(policy.snapshot, policy.options, node, journal=policy.journal)
        assert report is not None and report.ok
        sent = [stdin for cmd, stdin in policy.runs[before:] if cmd[:2] == ["nft", "-f"]]
        assert sent == ["delete element inet kindplan-policy isolated4 { 10.244.2.99 }\n"]
    assert observed(policy) == TABLE


def test_events_lost_count_as_touched(netns: str) -> None:
    """A receive buffer too small for a commit's events (ENOBUFS): the table counts as
    touched, whoever's commit it was; a later foreign commit alone does not."""
    from kindplan.node.netns import enter_netns
    from kindplan.node.nftevents import TableEvents

    with enter_netns(netns):
        events = TableEvents("inet", "kindplan-policy")
        assert events.touched() is False
        _foreign_commits(netns, 2)
        assert events.touched() is False and events.foreign > 0
        sock = events._sock
        assert sock is not None
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)  # the kernel's least
        many = ", ".join(f"10.97.{i // 250}.{i % 250 + 1}" for i in range(2000))
        sh("nft", f"add element ip kube-proxy-like s {{ {many} }}", ns=netns)
        assert events.touched() is True
        assert events.touched() is False  # read on past the loss: nothing left
        sh("nft", 'add table inet kindplan-policy { comment "x"; }', ns=netns)
        assert events.touched() is True
        events.close()
        assert events.touched() is True  # nothing heard: never "untouched"
