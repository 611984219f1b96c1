"""The policy lab and the NetworkPolicy cases of tests/netpol/cases, in the upstream e2e suite's
model: namespaces x, y, z with pods a, b, c over three nodes, TCP and UDP on 80 and 81.

One lab serves the whole module (it comes up in about a second). The harness is proven on its
own first: with no policy every pair is reachable, and a drop rule added by hand in one node
makes exactly the expected cells X. The cases then run through the lab (`lab policy`, `lab
label`, `lab probe`) and compare each matrix with the one upstream expects, never skipped.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import netpolcases
import pytest
from docexamples import assert_prints, example, shell
from netpolcases import PODS, Case, Matrix
from shell import NETNS_PREFIX, sh

from kindplan.lab import topology
from kindplan.lab.matrix import ProbePod, probe
from kindplan.lab.policy import probe_pods, read_document
from kindplan.lab.run import set_labels, set_policies

pytestmark = pytest.mark.root
TIMEOUT = 1.0  # a pair's time to answer; no packet is lost between namespaces


class PolicyLab:
    def __init__(self, state: Path) -> None:
        self.name = f"{NETNS_PREFIX}{os.getpid()}-np"
        self.state = state

    def run(self, command: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                *(sys.executable, "-m", "kindplan.cli", "lab", command),
                *("--name", self.name, "--state-dir", str(self.state), *args),
            ],
            capture_output=True,
            text=True,
            check=False,
        )

    @property
    def lab(self) -> topology.Lab:
        return topology.load(self.name, self.state)

    def pods(self) -> tuple[ProbePod, ...]:
        return probe_pods(self.lab)

    def ips(self) -> dict[str, str]:
        return {p.label: p.ips[0] for p in self.pods()}

    def matrix(self, port: int, protocol: str) -> Matrix:
        return probe(self.pods(), port, protocol, timeout=TIMEOUT).combined()


@pytest.fixture(scope="module")
def plab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PolicyLab]:
    made = PolicyLab(tmp_path_factory.mktemp("netpol") / "labs")
    up = made.run("up", "--cluster", str(netpolcases.MODEL))
    assert up.returncode == 0, up.stdout + up.stderr
    yield made
    made.run("down")


def _all(value: bool) -> Matrix:
    return {(s, d): value for s in PODS for d in PODS}


def test_snapshot_lists_every_pod_with_its_labels_ports_and_real_address(plab: PolicyLab) -> None:
    doc = read_document(plab.lab)
    assert [(n["name"], n["labels"]) for n in doc["namespaces"]] == [
        (ns, {"kubernetes.io/metadata.name": ns, "ns": ns}) for ns in "xyz"
    ]
    assert [f"{p['namespace']}/{p['name']}" for p in doc["pods"]] == list(PODS)
    nodes = {n.name: n for n in plab.lab.nodes}
    for pod in doc["pods"]:
        assert pod["labels"] == {"pod": pod["name"]}
        assert [(p["name"], p["containerPort"], p["protocol"]) for p in pod["ports"]] == [
            (f"serve-{port}-{proto.lower()}", port, proto)
            for port in (80, 81)
            for proto in ("TCP", "UDP")
        ]
        # host-local's address, inside the PodCIDR of the node the List put the pod on, and
        # held by the pod's own namespace
        cidr = nodes[pod["node"]].pod_cidrs[0].rsplit(".", 1)[0]
        assert pod["ips"][0].startswith(cidr + ".")
        netns = next(p.netns for p in plab.pods() if p.label == f"{pod['namespace']}/{pod['name']}")
        assert pod["ips"][0] in sh("ip", "-o", "addr", "show", "dev", "eth0", ns=netns)
    assert doc["networkPolicies"] == []


@pytest.mark.parametrize("protocol", ["TCP", "UDP"])
def test_without_policy_every_pair_is_reachable(plab: PolicyLab, protocol: str) -> None:
    assert plab.matrix(80, protocol) == _all(True)


def test_a_port_no_pod_declares_is_reachable_nowhere(plab: PolicyLab) -> None:
    assert plab.matrix(8080, "TCP") == _all(False)


@pytest.mark.parametrize("protocol", ["TCP", "UDP"])
def test_the_harness_sees_a_drop_in_one_node_exactly(plab: PolicyLab, protocol: str) -> None:
    """A drop of x/a's port 80 in its node's forwarding makes column x/a X (its own cell stays:
    a pod reaches itself over its loopback), on 80 only; the other cells stay reachable."""
    lab = plab.lab
    x_a = next(p for p in plab.pods() if p.label == "x/a")
    node_ns = lab.node(x_a.node).ns
    table = f"kpt_drop_{protocol.lower()}"
    sh("nft", "add", "table", "inet", table, ns=node_ns)
    try:
        sh("nft", "add chain inet", table, "f { type filter hook forward priority 0; }", ns=node_ns)
        rule = f"ip daddr {x_a.ips[0]} {protocol.lower()} dport 80 drop"
        sh("nft", "add rule inet", table, "f", rule, ns=node_ns)
        expected = netpolcases.expected_matrix(".", ["* -> x/a X", "x/a -> x/a ."])
        observed = plab.matrix(80, protocol)
        assert observed == expected, netpolcases.summary(expected, observed)
        assert plab.matrix(81, protocol) == _all(True)
    finally:
        sh("nft", "delete", "table", "inet", table, ns=node_ns)


def test_probe_json_and_text(plab: PolicyLab) -> None:
    out = plab.run("probe", "--port", "81", "--protocol", "UDP", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert set(doc) == {"pods", "reachable"}
    assert list(doc["pods"]) == list(PODS)
    assert doc["pods"]["x/a"] == {"node": "kind-control-plane", "ips": [plab.ips()["x/a"]]}
    assert doc["reachable"] == {s: dict.fromkeys(PODS, True) for s in PODS}
    text = plab.run("probe", "--port", "80").stdout.splitlines()
    assert (
        text[0]
        == "TCP/80 IPv4: 81 of 81 pairs reachable (rows from, columns to; . reachable, X not)"
    )
    assert text[1] == "\t".join(["-", *PODS])
    assert text[2] == "\t".join(["x/a", *["."] * 9])
    assert text[-1].startswith("81 probes in ")


def test_policy_replaces_clears_and_refuses_bad_files(plab: PolicyLab, tmp_path: Path) -> None:
    deny = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "deny", "namespace": "x"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }
    one, other = tmp_path / "deny.json", tmp_path / "list.yaml"
    one.write_text(json.dumps(deny))
    other.write_text(
        "apiVersion: v1\nkind: List\nitems:\n  - "
        + json.dumps({**deny, "metadata": {"name": "d2", "namespace": "y"}})
        + "\n"
    )
    try:
        applied = plab.run("policy", str(one), str(other))
        assert applied.returncode == 0, applied.stderr
        assert applied.stdout.splitlines()[0] == f"lab {plab.name}: 2 NetworkPolicies"
        names = [p["metadata"]["name"] for p in read_document(plab.lab)["networkPolicies"]]
        assert names == ["deny", "d2"]
        bad = tmp_path / "bad.yaml"
        bad.write_text("kind: Pod\napiVersion: v1\nmetadata: {name: p}\n")
        refused = plab.run("policy", str(bad))
        assert (refused.returncode, refused.stdout) == (65, "")
        assert refused.stderr == f"error: {bad}: 'Pod' is not a NetworkPolicy\n"
        assert len(read_document(plab.lab)["networkPolicies"]) == 2  # nothing half-applied
    finally:
        empty = tmp_path / "empty.yaml"
        empty.write_text("apiVersion: v1\nkind: List\nitems: []\n")
        cleared = plab.run("policy", str(empty))
        assert cleared.returncode == 0, cleared.stderr
        assert read_document(plab.lab)["networkPolicies"] == []


def test_label_sets_and_removes(plab: PolicyLab) -> None:
    out = plab.run("label", "x/b", "pod2=updated")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == f"lab {plab.name}: x/b: pod=b, pod2=updated"
    out = plab.run("label", "x/b", "pod2-")
    pods = read_document(plab.lab)["pods"]
    assert next(p for p in pods if p["name"] == "b" and p["namespace"] == "x")["labels"] == {
        "pod": "b"
    }
    refused = plab.run("label", "w/b", "k=v")
    assert refused.returncode == 64 and "'w/b' is no pod" in refused.stderr


def test_the_readme_example(tmp_path: Path) -> None:
    """The README's policy lab examples (the lab, then a policy's effect), run as written
    under a lab of the test's own."""
    made = PolicyLab(tmp_path / "labs")
    made.name += "doc"
    options = f"--name {made.name} --state-dir {made.state}"
    shown = {str(made.state): "/run/kindplan-lab", made.name: "kp"}
    steps = [
        *example("kindplan lab up --cluster tests/netpol/model.yaml").steps,
        *example("kindplan lab policy tests/netpol/allow-from-b.yaml").steps,
    ]
    try:
        for step in steps:
            command = step.command.replace("tests/netpol/", f"{netpolcases.MODEL.parent}/")
            command = re.sub(r"\bkindplan lab (\w+)", rf"kindplan lab \1 {options}", command)
            assert_prints(step, shell(command, tmp_path), shown)
    finally:
        made.run("down")


# -- the cases ----------------------------------------------------------------------------------

CASES = netpolcases.all_cases()


def _restore(lab: topology.Lab, labels: dict[str, dict[str, str]]) -> None:
    """Put back the labels a case changed (KEY=old value, or KEY- for one it added)."""
    now = _labels(lab)
    for target, before in labels.items():
        changes = [f"{k}={v}" for k, v in before.items() if now[target].get(k) != v]
        changes += [f"{k}-" for k in now[target] if k not in before]
        if changes:
            set_labels(lab, target, changes, lambda _: None)


def _labels(lab: topology.Lab) -> dict[str, dict[str, str]]:
    doc = read_document(lab)
    found = {n["name"]: dict(n["labels"]) for n in doc["namespaces"]}
    found |= {f"{p['namespace']}/{p['name']}": dict(p.get("labels", {})) for p in doc["pods"]}
    return found


def run_case(plab: PolicyLab, case: Case) -> list[str]:
    """Every step of the case through the lab; the summaries of the probes that differ."""
    lab, ips, quiet = plab.lab, plab.ips(), lambda _: None
    before = _labels(lab)
    failures = []
    try:
        for i, step in enumerate(case.steps):
            if step.policies is not None:
                set_policies(lab, netpolcases.with_ips(step.policies, ips), quiet)
            for target, changes in step.labels:
                set_labels(lab, target, list(changes), quiet)
            for p in step.probes:
                observed = plab.matrix(p.port, p.protocol)
                if netpolcases.wrong_cells(p.expected, observed):
                    where = f"{case.name} step {i + 1}: {p.protocol}/{p.port}"
                    failures.append(f"{where}\n{netpolcases.summary(p.expected, observed)}")
    finally:
        set_policies(lab, [], quiet)
        _restore(lab, before)
    return failures


def test_no_policy_case(plab: PolicyLab) -> None:
    """The case that needs no enforcement runs whatever this kindplan compiles."""
    case = next(c for c in CASES if c.name == "no-policy")
    assert run_case(plab, case) == []


@pytest.mark.parametrize("case", [c for c in CASES if c.name != "no-policy"], ids=lambda c: c.name)
def test_case(plab: PolicyLab, case: Case) -> None:
    failures = run_case(plab, case)
    assert not failures, "\n".join(failures)


def test_a_case_passes_where_the_nodes_deny_what_it_expects(plab: PolicyLab) -> None:
    """default-deny-ingress through the whole runner, with x's isolation made by hand: a drop
    of every new connection to x's pods forwarded by each node (kindplan's own tables, once it
    compiles policies, deny the same cells)."""
    case = next(c for c in CASES if c.name == "default-deny-ingress")
    x_ips = " , ".join(p.ips[0] for p in plab.pods() if p.label.startswith("x/"))
    made = []
    try:
        for node in plab.lab.nodes:
            sh("nft", "add", "table", "inet", "kpt_isolate_x", ns=node.ns)
            made.append(node.ns)
            chain = "f { type filter hook forward priority 0; }"
            sh("nft", "add chain inet kpt_isolate_x", chain, ns=node.ns)
            # new connections only: the replies to x's own connections must pass
            rule = f"ip daddr {{ {x_ips} }} ct state new drop"
            sh("nft", "add rule inet kpt_isolate_x f", rule, ns=node.ns)
        assert run_case(plab, case) == []
    finally:
        for ns in made:
            sh("nft", "delete", "table", "inet", "kpt_isolate_x", ns=ns)


def test_the_harness_fails_a_case_it_cannot_see(plab: PolicyLab) -> None:
    """A case whose expectation the lab does not meet is reported with upstream's summary: the
    default-deny case with its expectation turned around."""
    case = next(c for c in CASES if c.name == "default-deny-ingress")
    probe_ = case.steps[0].probes[0]
    wrong: dict[tuple[str, str], bool] = {k: not v for k, v in probe_.expected.items()}
    turned = netpolcases.Case(
        case.name,
        case.upstream,
        (netpolcases.Step(case.steps[0].policies, (), (netpolcases.Probe(80, "TCP", wrong),)),),
    )
    failures = run_case(plab, turned)
    assert len(failures) == 1
    assert failures[0].splitlines()[1] == (
        "reachability: correct:0, incorrect:72, result=False (the 9 pod->itself cells ignored)"
    )


# -- lab trace and lab snapshot on a policy lab ---------------------------------------------------

ALLOW_FROM_B = Path(__file__).parents[1] / "netpol" / "allow-from-b.yaml"


def _policy_line(out: subprocess.CompletedProcess[str]) -> str:
    return next(line for line in out.stdout.splitlines() if "policy " in line[:16])


def test_lab_trace_judges_the_policy_verdict_with_a_real_connection(plab: PolicyLab) -> None:
    """x/a admits x/b on its named ports serve-80-tcp and serve-81-udp only: the walk's verdict
    (the rule that admits, or the isolation that drops) and a real connection on the traced
    port and protocol agree, allowed and dropped, TCP and UDP (echoed)."""
    applied = plab.run("policy", str(ALLOW_FROM_B))
    assert applied.returncode == 0, applied.stderr
    try:
        cases = [
            (
                "x/b",
                "80",
                "tcp",
                "plan allowed by x/allow-from-b ingress rule 0; connection answered",
            ),
            (
                "x/b",
                "81",
                "udp",
                "plan allowed by x/allow-from-b ingress rule 0; connection answered",
            ),
            (
                "x/c",
                "80",
                "tcp",
                "plan dropped: x/a is isolated for ingress (policies: x/allow-from-b) and no rule "
                "admits TCP 80 from x/c; connection not answered",
            ),
            (
                "x/b",
                "80",
                "udp",
                "plan dropped: x/a is isolated for ingress (policies: x/allow-from-b) and no rule "
                "admits UDP 80 from x/b; connection not answered",
            ),
        ]
        for source, port, proto, policy in cases:
            out = plab.run("trace", source, "x/a", "--port", port, "--proto", proto)
            assert out.returncode == 0, out.stdout + out.stderr
            assert _policy_line(out) == f"  same  policy {proto}/{port}: {policy}"
            assert out.stdout.splitlines()[-1] == "plan and kernel agree at every hop"
        # y/a has no policy: the tables it crosses name no rule
        out = plab.run("trace", "y/b", "y/a", "--port", "80")
        assert _policy_line(out) == (
            "  same  policy tcp/80: plan allowed: no policy isolates either end for it; "
            "connection answered"
        )
    finally:
        set_policies(plab.lab, [], lambda _: None)


def test_lab_trace_names_a_policy_verdict_the_kernel_does_not_keep(plab: PolicyLab) -> None:
    """Where the kernel does otherwise than the compiled table says (a drop added by hand; the
    node's policy table deleted by hand), the policy line parts and lab trace exits 1."""
    applied = plab.run("policy", str(ALLOW_FROM_B))
    assert applied.returncode == 0, applied.stderr
    lab = plab.lab
    x_a = next(p for p in plab.pods() if p.label == "x/a")
    node_ns = lab.node(x_a.node).ns
    try:
        sh("nft", "add", "table", "inet", "kpt_drop_trace", ns=node_ns)
        sh(
            "nft",
            "add chain inet kpt_drop_trace f { type filter hook forward priority 0; }",
            ns=node_ns,
        )
        sh(
            "nft",
            "add rule inet kpt_drop_trace f ip daddr",
            x_a.ips[0],
            "tcp dport 80 drop",
            ns=node_ns,
        )
        out = plab.run("trace", "x/b", "x/a", "--port", "80")
        assert out.returncode == 1, out.stdout + out.stderr
        assert _policy_line(out) == (
            "  DIFF  policy tcp/80: plan allowed by x/allow-from-b ingress rule 0; "
            "connection not answered"
        )
        sh("nft", "delete", "table", "inet", "kpt_drop_trace", ns=node_ns)
        sh("nft", "delete", "table", "inet", "kindplan-policy", ns=node_ns)
        out = plab.run("trace", "x/c", "x/a", "--port", "80")
        assert out.returncode == 1, out.stdout + out.stderr
        assert _policy_line(out).startswith("  DIFF  policy tcp/80: plan dropped: x/a is isolated")
        assert _policy_line(out).endswith("; connection answered")
    finally:
        subprocess.run(
            ["ip", "netns", "exec", node_ns, "nft", "delete", "table", "inet", "kpt_drop_trace"],
            capture_output=True,
            check=False,
        )
        set_policies(plab.lab, [], lambda _: None)


def test_lab_snapshot_keeps_the_pods_labels_and_ports(plab: PolicyLab) -> None:
    """`lab snapshot` rebuilds the pods from the CNI caches (veths, hostPorts) and keeps what
    only the List knows of them: their labels and ports, which kindplan trace needs."""
    out = plab.run("snapshot")
    assert out.returncode == 0, out.stderr
    printed = {(p["namespace"], p["name"]): p for p in json.loads(out.stdout)["pods"]}
    recorded = read_document(plab.lab)["pods"]
    assert len(printed) == len(recorded) == 9
    for pod in recorded:
        shown = printed[pod["namespace"], pod["name"]]
        assert (shown["labels"], shown["ports"], shown["ips"]) == (
            pod["labels"],
            pod["ports"],
            pod["ips"],
        )
        assert shown["hostInterface"] == pod["hostInterface"]


def test_show_lists_the_policy_table(plab: PolicyLab, tmp_path: Path) -> None:
    """`kindplan show` on a lab node: no table without policies; with them the table's size,
    each policy and the local pods it selects (named from --snapshot, else addresses), the
    pods isolated each way; a table of that name without kindplan's marker is named, not read."""
    lab = plab.lab
    node = lab.node("kind-control-plane")  # x/a and y/c run here

    def show(*args: str) -> list[str]:
        out = subprocess.run(
            [sys.executable, "-m", "kindplan.cli", "show", "--netns", node.ns, *args],
            capture_output=True,
            text=True,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout.splitlines()[
            out.stdout.splitlines().index("ip6tables nat: no KIND-MASQ-AGENT chain; 0 jumps") + 1 :
        ]

    assert show() == ["NetworkPolicy: no table inet kindplan-policy"]
    deny = tmp_path / "deny.yaml"
    deny.write_text(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        "metadata: {name: deny-ingress, namespace: y}\n"
        "spec: {podSelector: {}, policyTypes: [Ingress], ingress: []}\n"
    )
    applied = plab.run("policy", str(ALLOW_FROM_B), str(deny))
    assert applied.returncode == 0, applied.stderr
    ips = plab.ips()
    try:
        assert show("--snapshot", str(lab.snapshot_path)) == [
            "NetworkPolicy: table inet kindplan-policy (6 sets, 7 elements, 8 rules)",
            "  policy x/allow-from-b: selects x/a; ingress rule 0",
            "  policy y/deny-ingress: selects y/c; no rule admits",
            "  isolated for ingress: x/a, y/c",
            "  isolated for egress: none",
        ]
        assert show()[1:3] == [
            f"  policy x/allow-from-b: selects {ips['x/a']}; ingress rule 0",
            f"  policy y/deny-ingress: selects {ips['y/c']}; no rule admits",
        ]
    finally:
        set_policies(lab, [], lambda _: None)
    assert show() == ["NetworkPolicy: no table inet kindplan-policy"]
    sh("nft", "add", "table", "inet", "kindplan-policy", ns=node.ns)
    try:
        assert show() == [
            "NetworkPolicy: table inet kindplan-policy: not kindplan's (no marker); left alone"
        ]
    finally:
        sh("nft", "delete", "table", "inet", "kindplan-policy", ns=node.ns)
