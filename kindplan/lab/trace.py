"""`lab trace`: kindplan's walk of a packet, compared hop by hop with the kernel's own answers.

For each hop of the plan's walk the kernel of that namespace is asked the same question with
`ip route get DST from SRC [iif DEV]` (a forwarded packet's lookup when it came in on a device);
at the end a listener in the namespace where the plan delivers the packet (the outside host, for
a packet that leaves the cluster there) says which source address it saw, so SNAT and hostPort
DNAT are judged by what arrives, not by reading rules. That connection is a real one on the
traced port and protocol (TCP: connected and answered; UDP: a datagram and its echo), so on a
lab with NetworkPolicies it also judges the walk's policy verdict: allowed (naming the rules
that admit it) when it is answered, dropped when it is not (the policy line).
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from dataclasses import dataclass

from kindplan.core.addresses import format_ip, parse_cidr, parse_ip
from kindplan.core.model import Snapshot
from kindplan.core.trace import Hop, Trace, trace_packet
from kindplan.core.traceworld import Endpoint, Uplink, World, build_world, families, resolve
from kindplan.lab.probe import TIMEOUT_SECONDS, Listeners, seen_source
from kindplan.lab.run import lab_snapshot
from kindplan.lab.topology import (
    OUTSIDE_V4,
    OUTSIDE_V6,
    V4_SUBNET,
    Lab,
    segment_gateways,
    segment_v6,
)
from kindplan.node.cnicache import read_cni_cache, with_local_pods
from kindplan.node.netns import enter_netns

PROBE_PORT = 7000
OUTSIDE = "outside"
IP_FREEBIND = 15  # linux/in.h
RESEND = 0.25  # seconds between a UDP trace's datagrams, as lab probe
PAYLOAD = b"kindplan trace\n"


@dataclass(frozen=True)
class Verdict:
    """One line of the comparison: a hop (or the end), the plan's answer and the kernel's."""

    where: str
    plan: str
    kernel: str
    detail: str = ""  # what the kernel said beyond the answer compared (an errno, say)
    agree: bool | None = None  # set where the answers are compared by meaning (the policy)

    @property
    def same(self) -> bool:
        return self.plan == self.kernel if self.agree is None else self.agree

    def text(self) -> str:
        """The line `lab trace` prints (after same/DIFF)."""
        detail = f" ({self.detail})" if self.detail else ""
        if self.agree is not None:
            return f"{self.where}: plan {self.plan}; connection {self.kernel}{detail}"
        if self.same:
            return f"{self.where}: {self.plan}{detail}"
        return f"{self.where}: plan {self.plan}; kernel {self.kernel}{detail}"


def lab_cluster(lab: Lab) -> tuple[Snapshot, World]:
    """The lab's snapshot with every node's pods (and hostPorts) from its CNI cache, as a world
    whose node network and default gateway are the lab's."""
    snapshot = lab_snapshot(lab)
    network = snapshot.cluster.cni.network_name
    for node in lab.nodes:
        pods, _ = read_cni_cache(lab.node_dir(node, "cache"), node.name, network)
        snapshot, _ = with_local_pods(snapshot, node.name, pods)
    networks, gateways = [], []
    for segment in range(lab.segments):  # each node takes the network (and gateway) it is on
        v4_gateway, v6_gateway, length = segment_gateways(lab, segment)
        networks.append(parse_cidr(V4_SUBNET if length == 16 else f"172.18.{segment}.0/24"))
        gateways.append(parse_ip(v4_gateway))
        if lab.dual_stack:
            networks.append(parse_cidr(f"{segment_v6(segment)}/64"))
            gateways.append(parse_ip(v6_gateway))
    return snapshot, build_world(snapshot, Uplink("eth0", tuple(networks), tuple(gateways)))


def endpoint(lab: Lab, snapshot: Snapshot, text: str, where: str) -> Endpoint:
    """A lab pod or node, an address, or 'outside' (the lab's outside host)."""
    if text == OUTSIDE:
        ips = (parse_ip(OUTSIDE_V4), parse_ip(OUTSIDE_V6))[: 2 if lab.dual_stack else 1]
        return Endpoint("outside", OUTSIDE, ips)
    return resolve(snapshot, text, where)


def lab_traces(
    lab: Lab,
    source: str,
    target: str,
    port: int = PROBE_PORT,
    *,
    family: int | None = None,
    proto: str = "tcp",
) -> list[Trace]:
    """The walks from `source` to `target`: one per family both ends have, or only `family`."""
    snapshot, world = lab_cluster(lab)
    src = endpoint(lab, snapshot, source, "FROM")
    dst = endpoint(lab, snapshot, target, "TO")
    return [
        trace_packet(world, src, dst, v, port=port, proto=proto) for v in families(src, dst, family)
    ]


def compare(lab: Lab, trace: Trace) -> list[Verdict]:
    """The plan's answer and the kernel's at every hop, then at the end (what a listener saw),
    then, where a policy table was crossed, its verdict against what the connection did."""
    verdicts = [_compare_hop(lab, hop) for hop in trace.hops]
    end, answered = _compare_end(lab, trace)
    verdicts.append(end)
    policy = compare_policy(trace, answered)
    if policy is not None:
        verdicts.append(policy)
    return verdicts


def policy_verdict(trace: Trace) -> tuple[bool, str] | None:
    """The walk's NetworkPolicy verdict, (allowed, why), or None: no policy table crossed.
    Allowed names every rule that admitted it (the source's egress, the destination's
    ingress); dropped says who is isolated and what no rule admits."""
    checks = [hop.policy for hop in trace.hops if hop.policy is not None]
    if not checks:
        return None
    dropped = next((c for c in checks if not c.allowed), None)
    if dropped is not None:
        return False, dropped.text
    rules = [comment for c in checks for _, ok, comment in c.chains if ok and comment]
    if rules:
        return True, "allowed by " + " and ".join(dict.fromkeys(rules))
    return True, "allowed: no policy isolates either end for it"


def compare_policy(trace: Trace, answered: bool | None) -> Verdict | None:
    """The policy verdict against the real connection (None: no table crossed, or nothing
    could listen there)."""
    verdict = policy_verdict(trace)
    if verdict is None or answered is None:
        return None
    allowed, why = verdict
    where = f"policy {trace.proto}/{trace.port or PROBE_PORT}"
    connection = "answered" if answered else "not answered"
    return Verdict(where, why, connection, agree=allowed == answered)


def namespace_of(lab: Lab, kind: str, name: str) -> str:
    if kind == "node":
        return lab.node(name).ns
    namespace, _, pod_name = name.rpartition("/")
    return next(p.ns for p in lab.pods if p.name == pod_name and namespace in ("", p.namespace))


def _compare_hop(lab: Lab, hop: Hop) -> Verdict:
    ns = namespace_of(lab, hop.namespace.kind, hop.namespace.name)
    where = f"hop {hop.index} {hop.namespace.label}" + (f" (in on {hop.iif})" if hop.iif else "")
    if hop.type == "local":
        plan = "local"
    elif hop.type == "unicast":
        plan = f"dev {hop.dev}" + (f" via {format_ip(hop.gateway)}" if hop.gateway else "")
    else:
        plan = "unreachable"
    return Verdict(where, plan, kernel_answer(ns, hop))


def kernel_answer(ns: str, hop: Hop) -> str:
    """`ip route get` in `ns` for the hop's packet, in the plan's words."""
    args = ["ip", "-n", ns, "-j", "route", "get", format_ip(hop.dst), "from", format_ip(hop.src)]
    if hop.iif is not None:
        args += ["iif", hop.iif]
    out = subprocess.run(args, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        error = out.stderr.strip()
        unreachable = "unreachable" in error.lower() or "no route" in error.lower()
        return "unreachable" if unreachable else f"error: {error}"
    answer = (json.loads(out.stdout) or [{}])[0]
    if answer.get("type") == "local":
        return "local"
    if answer.get("type", "unicast") != "unicast":
        return str(answer["type"])
    gateway = answer.get("gateway")
    return f"dev {answer.get('dev')}" + (f" via {gateway}" if gateway else "")


def _compare_end(lab: Lab, trace: Trace) -> tuple[Verdict, bool | None]:
    """A listener where the plan delivers the packet: which source did it see (or nothing)?
    And was the connection answered (None: nothing listened)?"""
    end = trace.end
    port = end.port or PROBE_PORT
    listen_ns = _listener_ns(lab, trace)
    source = trace.source
    if source.kind == "outside":
        source_ns = lab.outside_ns
    else:
        source_ns = namespace_of(lab, source.kind, source.name)
    src, dst = source.ip(trace.version), trace.target.ip(trace.version)
    assert src is not None and dst is not None
    plan = f"{end.kind}, source {format_ip(end.src)}" if end.kind != "dropped" else "no answer"
    where = f"end ({end.kind} at {end.at})"
    if end.kind == "dropped":  # listen where the target lives, if it is in the lab
        listen_ns = _target_ns(lab, trace)
    if listen_ns is None:
        return Verdict(where, plan, plan + " (no listener there: not checked)"), None
    to = (format_ip(dst), trace.port or PROBE_PORT)
    try:
        if trace.proto == "udp":
            seen, echoed = _udp_seen(
                listen_ns, (format_ip(end.dst), port), source_ns, to, format_ip(src)
            )
            if not echoed:
                return Verdict(where, plan, "no answer", f"from {seen}, not echoed back"), False
        else:
            listeners = Listeners()
            reason = listeners.listen(listen_ns, format_ip(end.dst), port)
            if reason is not None:
                return Verdict(where, plan, reason), None
            with listeners.running():
                seen = seen_source(source_ns, *to, format_ip(src))
    except OSError as e:
        return Verdict(where, plan, "no answer", str(e.strerror or e)), False
    kind = end.kind if end.kind != "dropped" else "delivered"
    return Verdict(where, plan, f"{kind}, source {seen}"), True


def _listener_ns(lab: Lab, trace: Trace) -> str | None:
    if not trace.hops:
        return None
    last = trace.hops[-1].namespace
    if trace.end.kind == "delivered":
        return namespace_of(lab, last.kind, last.name)
    if trace.end.kind == "leaves" and format_ip(trace.end.dst) in (OUTSIDE_V4, OUTSIDE_V6):
        return lab.outside_ns
    return None


def _target_ns(lab: Lab, trace: Trace) -> str | None:
    t = trace.target
    if t.kind == "outside":
        return lab.outside_ns if t.name == OUTSIDE else None
    return namespace_of(lab, t.kind, t.name)


def _udp_seen(
    listen_ns: str, listen: tuple[str, int], source_ns: str, to: tuple[str, int], source: str
) -> tuple[str, bool]:
    """A datagram from `source` in `source_ns` to `to`, sent again every RESEND seconds until
    it arrives, and the receiver in `listen_ns` echoing it back (sockets keep the namespace
    they were made in): the source address the receiver saw and whether the echo came back
    (a reply, which conntrack lets through where the datagram was allowed), or OSError (a
    timeout: nothing arrived)."""
    family = socket.AF_INET6 if ":" in listen[0] else socket.AF_INET
    with enter_netns(listen_ns):
        server = socket.socket(family, socket.SOCK_DGRAM)
    with enter_netns(source_ns):
        client = socket.socket(family, socket.SOCK_DGRAM)
    deadline = time.monotonic() + TIMEOUT_SECONDS
    seen: str | None = None
    with server, client:
        server.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)  # an IPv6 address still in DAD
        server.bind(listen)
        client.bind((source, 0))
        server.settimeout(RESEND)
        client.settimeout(RESEND)
        while time.monotonic() < deadline:
            client.sendto(PAYLOAD, to)
            try:
                data, peer = server.recvfrom(256)
            except TimeoutError:
                continue
            seen = str(peer[0])
            server.sendto(data, peer)
            try:
                if client.recvfrom(256)[0] == PAYLOAD:
                    return seen, True
            except TimeoutError:
                continue
    if seen is None:
        raise TimeoutError("timed out")
    return seen, False
