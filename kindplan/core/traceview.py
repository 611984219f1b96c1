"""A trace as people read it (format_trace) and as programs do (trace_to_json). Pure."""

from __future__ import annotations

from typing import Any

from kindplan.core.addresses import format_ip, format_net
from kindplan.core.trace import End, Hop, Nat, Trace
from kindplan.core.tracepolicy import PolicyCheck
from kindplan.core.traceworld import Endpoint, route_listing

ORIGINS = {
    "kindplan": "kindplan's desired route",
    "ptp": "ptp, in the pod",
    "kernel": "connected, the node network",
    "node": "the node's default route",
    "assumed": "assumed: not in the snapshot",
    "observed": "observed on the node",
}


def _endpoint(e: Endpoint, version: int) -> str:
    ip = e.ip(version)
    return e.label if e.kind == "outside" else f"{e.label} ({format_ip(ip) if ip else '-'})"


def format_trace(trace: Trace) -> str:
    """The walk, one block per hop, and how it ends."""
    port = f" {trace.proto}/{trace.port}" if trace.port is not None else ""
    lines = [
        f"IPv{trace.version}{port}: {_endpoint(trace.source, trace.version)} -> "
        f"{_endpoint(trace.target, trace.version)}"
    ]
    for hop in trace.hops:
        lines += _hop_lines(hop)
    lines.append(_end_line(trace.end))
    return "\n".join(lines) + "\n"


def _hop_lines(hop: Hop) -> list[str]:
    ns = hop.namespace
    where = ns.label if ns.kind == "node" else f"{ns.label} on {ns.node}"
    came = f", in on {hop.iif}" if hop.iif else ", sent from here"
    state = " [observed]" if ns.observed else ""
    lines = [
        f"{hop.index:>2}  {where}{state}{came}: {_packet(hop)}, table {hop.table}",
    ]
    for nat in hop.nat:
        if nat.kind == "dnat":
            lines.append(f"      DNAT   {nat.chain}: {nat.before} -> {nat.after}")
    for note in hop.notes:
        lines.append(f"      note   {note}")
    if hop.type == "local":
        lines.append(f"      local  {format_ip(hop.dst)} is an address here")
    elif hop.route is not None:
        lines.append(
            f"      route  {route_listing(hop.route.route)}  ({ORIGINS[hop.route.origin]})"
        )
        via = f" via {format_ip(hop.gateway)}" if hop.gateway else ""
        lines.append(f"      out    dev {hop.dev}{via}")
    else:
        lines.append("      route  none matches")
    if hop.policy is not None:  # filter hooks (forward, input) come before POSTROUTING's SNAT
        lines.append(f"      policy {hop.policy.hook}: {hop.policy.text}")
    for nat in hop.nat:
        if nat.kind != "dnat":
            lines.append(f"      SNAT   {_snat(nat)}")
    if hop.drift:
        lines.append(f"      DRIFT  {hop.drift}")
    return lines


def _packet(hop: Hop) -> str:
    port = f":{hop.port}" if hop.port is not None else ""
    return f"{format_ip(hop.src)} -> {format_ip(hop.dst)}{port}"


def _snat(nat: Nat) -> str:
    what = f"source {nat.before} kept" if nat.kind == "return" else f"{nat.before} -> {nat.after}"
    return f"{nat.chain} -> {_short(nat.rule)}: {what}"


def _short(rule: str) -> str:
    """A rule without its comment, which is long and says what the reader sees anyway."""
    head, sep, rest = rule.partition(' -m comment --comment "')
    if not sep:
        return rule.removeprefix("-A ")
    tail = rest.partition('" ')[2]
    return f"{head} {tail}".removeprefix("-A ")


def _end_line(end: End) -> str:
    port = f":{end.port}" if end.port is not None else ""
    packet = f"{format_ip(end.src)} -> {format_ip(end.dst)}{port}"
    return f"{end.kind.upper()} at {end.at}: {end.why} [{packet}]"


def trace_to_json(traces: list[Trace]) -> dict[str, Any]:
    """The traces as a document valid under schemas/trace.schema.json."""
    return {
        "apiVersion": "kindplan/v1",
        "kind": "Trace",
        "traces": [_trace(t) for t in traces],
    }


def _trace(t: Trace) -> dict[str, Any]:
    return {
        "family": f"IPv{t.version}",
        "proto": t.proto,
        "port": t.port,
        "from": _endpoint_json(t.source, t.version),
        "to": _endpoint_json(t.target, t.version),
        "hops": [_hop(h) for h in t.hops],
        "end": {
            "kind": t.end.kind,
            "at": t.end.at,
            "why": t.end.why,
            "src": format_ip(t.end.src),
            "dst": format_ip(t.end.dst),
            "port": t.end.port,
        },
    }


def _endpoint_json(e: Endpoint, version: int) -> dict[str, Any]:
    ip = e.ip(version)
    return {"kind": e.kind, "name": e.name, "ip": format_ip(ip) if ip else None, "node": e.node}


def _hop(h: Hop) -> dict[str, Any]:
    route = None
    if h.route is not None:
        r = h.route.route
        route = {
            "text": route_listing(r),
            "dst": format_net(r.dst),
            "gateway": format_ip(r.gateway) if r.gateway else None,
            "dev": r.ifname,
            "scope": r.scope,
            "metric": r.metric,
            "proto": r.proto,
            "origin": h.route.origin,
        }
    return {
        "index": h.index,
        "namespace": {
            "kind": h.namespace.kind,
            "name": h.namespace.name,
            "node": h.namespace.node,
            "observed": h.namespace.observed,
        },
        "iif": h.iif,
        "table": h.table,
        "packet": {"src": format_ip(h.src), "dst": format_ip(h.dst), "port": h.port},
        "type": h.type,
        "route": route,
        "dev": h.dev,
        "gateway": format_ip(h.gateway) if h.gateway else None,
        "nat": [
            {"kind": n.kind, "chain": n.chain, "rule": n.rule, "before": n.before, "after": n.after}
            for n in h.nat
        ],
        "notes": list(h.notes),
        "drift": h.drift,
        **({"policy": _policy(h.policy)} if h.policy is not None else {}),
    }


def _policy(check: PolicyCheck) -> dict[str, Any]:
    return {
        "node": check.node,
        "hook": check.hook,
        "allowed": check.allowed,
        "text": check.text,
        "chains": [
            {"chain": chain, "accepted": accepted, "rule": comment}
            for chain, accepted, comment in check.chains
        ],
    }
