"""The nftables masquerade backend against real nft in namespaces: IPv4, IPv6, dual-stack; the
switch between backends and its rollback; exclusions in both; kindnet's table taken over; a
converged read that spawns no nft; and an nftables-only host (the iptables binaries hidden in a
mount namespace)."""

from __future__ import annotations

import json
import subprocess
import sys
from ipaddress import ip_network
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from nodes import KINDPLAN, Node, kindplan
from shell import sh

from kindplan.core.masq.iptables import restore_payload
from kindplan.core.masq.value import wanted
from kindplan.errors import RuntimeFailure
from kindplan.node.netns import enter_netns
from kindplan.node.nftables import Nftables, ruleset_generation
from kindplan.resources import load_schema

pytestmark = pytest.mark.root

# kindnet (>= v1.5) leaves this table on a node (kubernetes-sigs/kindnet: one batch over netlink)
KINDNET_TABLE = """\
table inet kindnet-ipmasq {
	set noMasqV4 {
		type ipv4_addr
		flags interval
		auto-merge
		elements = { 10.244.0.0/16 }
	}
	set noMasqV6 {
		type ipv6_addr
		flags interval
		auto-merge
	}
	chain postrouting {
		type nat hook postrouting priority srcnat - 10; policy accept;
		ct state established,related accept
		fib daddr type local accept
		ip daddr @noMasqV4 accept
		ip6 daddr @noMasqV6 accept
		masquerade
	}
}
"""


def nft(node: Node, *args: str) -> str:
    return sh("nft", *args, ns=node.ns)


def tables(node: Node) -> list[str]:
    return nft(node, "list", "tables").splitlines()


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def rollback(node: Node) -> subprocess.CompletedProcess[str]:
    return kindplan("rollback", "--netns", node.ns, "--state-dir", str(node.tmp / "state"))


def test_ipv4_converges_and_plans_no_changes(seed_worker2: Node) -> None:
    node = seed_worker2
    planned = ok(node.plan("--masq-backend", "nftables"))
    assert "+ nftables: table ip kindplan-masq (new)" in planned.stdout
    assert "+ ip daddr @no-masquerade accept (10.244.0.0/16)" in planned.stdout
    as_json = json.loads(ok(node.plan("--masq-backend", "nftables", "--json")).stdout)
    Draft202012Validator(load_schema("plan.schema.json")).validate(as_json)
    assert "nftables" in {c["kind"] for c in as_json["changes"]}
    ok(node.apply("--masq-backend", "nftables"))
    assert tables(node) == ["table ip kindplan-masq"]  # no iptables nat table made
    listed = nft(node, "list", "table", "ip", "kindplan-masq")
    assert "type nat hook postrouting priority srcnat + 10; policy accept;" in listed
    assert "elements = { 10.244.0.0/16 }" in listed
    assert node.plan("--masq-backend", "nftables", "--detailed-exitcode").returncode == 0
    # auto keeps the backend that holds the masquerade
    assert node.plan("--detailed-exitcode").returncode == 0
    assert ok(rollback(node))
    assert tables(node) == []


def test_dual_stack_has_a_table_per_family(dual_worker: Node) -> None:
    node = dual_worker
    ok(
        node.apply(
            "--masq-backend", "nftables", "--no-masquerade-cidr", "192.0.2.0/24,2001:db8::/32"
        )
    )
    assert sorted(tables(node)) == ["table ip kindplan-masq", "table ip6 kindplan-masq"]
    v6 = nft(node, "list", "table", "ip6", "kindplan-masq")
    assert "ip6 daddr @no-masquerade accept" in v6
    assert "2001:db8::/32" in v6
    assert "192.0.2.0/24" in nft(node, "list", "table", "ip", "kindplan-masq")
    assert node.plan("--detailed-exitcode").returncode == 2  # the exclusions are the flag's
    again = ["--no-masquerade-cidr", "192.0.2.0/24", "--no-masquerade-cidr", "2001:db8::/32"]
    assert node.plan(*again, "--detailed-exitcode").returncode == 0


def test_exclusions_in_the_iptables_backend_too(seed_worker2: Node) -> None:
    node = seed_worker2
    ok(node.apply("--masq-backend", "iptables", "--no-masquerade-cidr", "192.0.2.0/24"))
    saved = sh("iptables-save", "-t", "nat", ns=node.ns)
    assert "-A KIND-MASQ-AGENT -d 192.0.2.0/24 -m comment" in saved
    assert tables(node) == ["table ip nat"]


def test_switching_backends_removes_the_other_in_the_same_apply_and_rolls_back(
    dual_worker: Node,
) -> None:
    node = dual_worker
    ok(node.apply("--masq-backend", "iptables"))
    assert "KIND-MASQ-AGENT" in sh("ip6tables-save", "-t", "nat", ns=node.ns)
    planned = ok(node.plan("--masq-backend", "nftables"))
    assert "- iptables-nft nat: chain KIND-MASQ-AGENT and 1 jump(s)" in planned.stdout
    assert "+ nftables: table ip6 kindplan-masq (new)" in planned.stdout
    ok(node.apply("--masq-backend", "nftables"))
    for tool in ("iptables-save", "ip6tables-save"):
        assert "KIND-MASQ-AGENT" not in sh(tool, "-t", "nat", ns=node.ns)
    assert {"table ip kindplan-masq", "table ip6 kindplan-masq"} <= set(tables(node))
    # journaled: the rollback puts the chains back and takes the tables away, verified
    back = ok(rollback(node))
    assert "verified" in back.stdout
    assert not {"table ip kindplan-masq", "table ip6 kindplan-masq"} & set(tables(node))
    for tool in ("iptables-save", "ip6tables-save"):
        assert "-j KIND-MASQ-AGENT" in sh(tool, "-t", "nat", ns=node.ns)
    assert node.plan("--masq-backend", "iptables", "--detailed-exitcode").returncode == 0


def test_kindnets_table_is_shown_then_taken_over_with_adopt_and_rolled_back(
    seed_worker2: Node,
) -> None:
    node = seed_worker2
    sh("nft", "-f", "-", ns=node.ns, stdin=KINDNET_TABLE)
    before = nft(node, "list", "table", "inet", "kindnet-ipmasq")
    planned = ok(node.plan())  # auto: kindnet's nftables table says nftables
    assert "+ nftables: table ip kindplan-masq (new)" in planned.stdout
    assert "kindnet's table inet kindnet-ipmasq masquerades IPv4 and IPv6 too" in planned.stdout
    assert "- nftables" not in planned.stdout  # not kindplan's: no change without --adopt
    taken = ok(node.plan("--adopt"))
    assert "- nftables: table inet kindnet-ipmasq (kindnet's, taken over), IPv4" in taken.stdout
    ok(node.apply("--adopt"))
    assert tables(node) == ["table ip kindplan-masq"]
    assert node.plan("--detailed-exitcode").returncode == 0
    ok(rollback(node))
    assert tables(node) == ["table inet kindnet-ipmasq"]
    assert nft(node, "list", "table", "inet", "kindnet-ipmasq") == before


def test_classic_kind_masq_agent_is_replaced_by_the_nftables_table(seed_worker2: Node) -> None:
    node = seed_worker2
    # what classic kindnetd leaves (lab/kindnetd.py writes it as kindnetd does)
    payload = restore_payload(wanted(4, [ip_network("10.244.0.0/16")]))
    sh("iptables-restore", "--noflush", ns=node.ns, stdin=payload)
    planned = ok(node.plan("--masq-backend", "nftables", "--adopt"))
    assert "- iptables-nft nat: chain KIND-MASQ-AGENT and 1 jump(s)" in planned.stdout
    ok(node.apply("--masq-backend", "nftables", "--adopt"))
    assert "KIND-MASQ-AGENT" not in sh("iptables-save", "-t", "nat", ns=node.ns)
    ok(rollback(node))
    assert "-j KIND-MASQ-AGENT" in sh("iptables-save", "-t", "nat", ns=node.ns)
    assert "table ip kindplan-masq" not in tables(node)


def test_a_converged_read_spawns_no_nft_until_the_ruleset_changes(seed_worker2: Node) -> None:
    node = seed_worker2
    ok(node.apply("--masq-backend", "nftables"))
    with enter_netns(node.ns):
        reader = Nftables()
        first = reader.read_masq()
        generation = ruleset_generation()
        assert generation is not None
        assert reader.read_masq() == first
        assert reader.read_masq() == first
        assert reader.listings == 1  # one nft -j list table; the two rounds after: none
        sh("nft", "add", "table", "ip", "someone-else")
        assert ruleset_generation() != generation
        assert reader.read_masq() == first
        assert reader.listings == 2  # the generation moved: listed again


def test_a_refused_transaction_is_one_clean_line_and_changes_nothing(seed_worker2: Node) -> None:
    node = seed_worker2
    ok(node.apply("--masq-backend", "nftables"))
    before = nft(node, "list", "ruleset")
    with (
        enter_netns(node.ns),
        pytest.raises(
            RuntimeFailure,
            match=r"^nft -f exited 1: line 2: Error: Could not process rule: No such file or dir",
        ) as caught,
    ):
        Nftables().run("add table ip kindplan-masq\nadd rule ip kindplan-masq nowhere accept\n")
    assert "\n" not in str(caught.value)
    assert nft(node, "list", "ruleset") == before


HIDE = (
    "set -e; empty=$(mktemp); "
    "for tool in /usr/sbin/xtables-nft-multi /usr/sbin/xtables-legacy-multi; do "
    'mount --bind "$empty" "$tool"; done; exec "$@"'
)


def without_iptables(*args: str) -> subprocess.CompletedProcess[str]:
    """kindplan in a mount namespace where every iptables binary is hidden (an empty file over
    the two multi-call binaries every iptables* name links to)."""
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", HIDE, "sh", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_an_nftables_only_host_converges_plans_no_changes_and_rolls_back(
    dual_worker: Node,
) -> None:
    node = dual_worker
    probe = without_iptables(
        sys.executable, "-c", "import shutil; print(shutil.which('iptables-save'))"
    )
    assert probe.stdout.strip() == "None", probe.stderr
    state = ["--state-dir", str(node.tmp / "state")]
    applied = without_iptables(*KINDPLAN, "apply", *node.args(), *state)  # auto, no flag
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "applied: added nftables: table ip kindplan-masq (new)" in applied.stdout
    assert sorted(tables(node)) == ["table ip kindplan-masq", "table ip6 kindplan-masq"]
    planned = without_iptables(*KINDPLAN, "plan", *node.args(), "--detailed-exitcode")
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert planned.stdout.strip().endswith("No changes.")
    back = without_iptables(*KINDPLAN, "rollback", "--netns", node.ns, *state)
    assert back.returncode == 0, back.stdout + back.stderr
    assert tables(node) == []
    # the iptables backend asked for there: one line, nothing half-applied
    refused = without_iptables(
        *KINDPLAN, "apply", *node.args(), *state, "--masq-backend", "iptables"
    )
    assert refused.returncode == 1
    assert "iptables" in refused.stderr and "Traceback" not in refused.stderr


def test_render_writes_the_nftables_table_that_nft_takes(
    seed_worker2: Node, tmp_path: Path
) -> None:
    node = seed_worker2
    out = tmp_path / "out"
    out.mkdir()
    ok(kindplan("render", str(node.snapshot), "--node", node.name, "--out", str(out),
                "--masq-backend", "nftables"))  # fmt: skip
    assert not (out / "iptables.rules").exists()
    sh("nft", "-f", str(out / "ip-kindplan-masq.nft"), ns=node.ns)
    assert tables(node) == ["table ip kindplan-masq"]
    ok(node.apply("--masq-backend", "nftables"))
    assert "nftables" not in node.apply("--masq-backend", "nftables").stdout  # nothing to redo


def test_a_converged_watch_round_spawns_no_process(seed_worker2: Node) -> None:
    """The loop's round on a converged nftables node: no nft, no iptables-save (the node has no
    iptables nat table; the generation says kindplan's tables are as last listed)."""
    import io

    from kindplan.agent.logs import Log
    from kindplan.agent.metrics import Health, Metrics
    from kindplan.agent.watch import Loop, LoopSettings, Telemetry
    from kindplan.core.model import Options
    from kindplan.inputs.files import FileSource

    node = seed_worker2
    ok(node.apply("--masq-backend", "nftables"))
    options = Options(node=node.name, conf_dir=str(node.tmp / "cni"), masq_backend="nftables")
    source = FileSource(str(node.snapshot))
    telemetry = Telemetry(Log("text", io.StringIO()), Metrics(), Health(60))
    loop = Loop(source, options, node.ns, node.tmp / "state", settings=LoopSettings(),
                telemetry=telemetry)  # fmt: skip
    spawned: list[object] = []
    real = subprocess.Popen

    class Counted(real):  # type: ignore[misc, valid-type]
        def __init__(self, *args: object, **kwargs: object) -> None:
            spawned.append(args[0])
            super().__init__(*args, **kwargs)

    try:
        with enter_netns(node.ns):
            assert loop.round().ok  # lists the tables once
            subprocess.Popen = Counted  # type: ignore[misc]
            try:
                outcome = loop.round()
                assert outcome.ok and not outcome.applied
                assert spawned == []
                sh("nft", "add", "table", "ip", "someone-else")  # the generation moves
                spawned.clear()
                assert loop.round().ok
            finally:
                subprocess.Popen = real  # type: ignore[misc]
        assert [cmd[:3] for cmd in spawned] == [["nft", "-j", "list"]]  # type: ignore[index]
    finally:
        loop._handles.drop()
        source.close()


GOLDEN_TABLES = sorted(
    (Path(__file__).parents[2] / "fixtures").glob("*/expected/*/*-kindplan-masq.nft")
)
GOLDEN_POLICY_TABLES = sorted(
    (Path(__file__).parents[2] / "fixtures").glob("*/expected/*/policy.nft")
)


@pytest.mark.parametrize(
    "path", GOLDEN_TABLES, ids=lambda p: f"{p.parts[-4]}/{p.parts[-2]}/{p.name}"
)
def test_nft_takes_every_golden_table_and_reads_it_back_as_written(netns: str, path: Path) -> None:
    from kindplan.core.masq.nftables import parse_table

    sh("nft", "-c", "-f", str(path), ns=netns)  # check mode: parsed and validated, nothing made
    assert sh("nft", "list", "tables", ns=netns) == ""
    sh("nft", "-f", str(path), ns=netns)
    family = path.name.split("-", 1)[0]
    version = 6 if family == "ip6" else 4
    read = parse_table(version, sh("nft", "-j", "list", "table", family, "kindplan-masq", ns=netns))
    assert read.right and read.hooks == 1
    elements = path.read_text().split("elements = { ", 1)[1].split(" }", 1)[0].split(", ")
    assert [str(n) for n in read.masq.exempt] == elements  # type: ignore[union-attr]


def test_there_are_golden_tables() -> None:
    assert len(GOLDEN_TABLES) >= 6
    assert len(GOLDEN_POLICY_TABLES) >= 3


@pytest.mark.parametrize(
    "path", GOLDEN_POLICY_TABLES, ids=lambda p: f"{p.parts[-4]}/{p.parts[-2]}/{p.name}"
)
def test_nft_takes_every_golden_policy_table_and_lists_it_as_rendered(
    netns: str, path: Path
) -> None:
    """render's policy.nft is one transaction nft takes, and the table it makes is read back by
    the node side's reader (core/policytable.py) as kindplan's, whole, equal to the compiled one."""
    from kindplan.core.compiler import policy_table
    from kindplan.core.policytable import parse_listing
    from kindplan.inputs.kinds import parse_snapshot

    sh("nft", "-c", "-f", str(path), ns=netns)
    assert sh("nft", "list", "tables", ns=netns) == ""
    sh("nft", "-f", str(path), ns=netns)
    read = parse_listing(sh("nft", "list", "table", "inet", "kindplan-policy", ns=netns))
    assert read.table is not None and read.unread == () and not read.foreign
    snapshot = parse_snapshot((path.parents[2] / "snapshot.yaml").read_bytes()).snapshot
    node = snapshot.node(path.parts[-2])
    assert node is not None
    assert read.table == policy_table(snapshot, node)
