"""render_svg: a picture of the nodes, their pods and the path of each trace. Pure.

Nodes stand side by side on the node network, each with its pods inside; the outside world is a
box of its own. Every hop is a numbered dot in the namespace it happens in, joined by arrows in
the order of the walk; the end is marked where it happens (delivered, leaves, dropped + why).
Large clusters draw only the nodes on a path, and on each node the pods on a path first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape

from kindplan.core.addresses import format_ip, format_net
from kindplan.core.model import Node, Pod, Snapshot
from kindplan.core.trace import Trace
from kindplan.core.traceworld import route_listing

NODE_W, POD_H, POD_GAP, HEAD_H, MARGIN, GAP = 270, 44, 10, 74, 20, 40
MAX_ALL_NODES, MAX_PODS = 8, 6
COLORS = ("#1565c0", "#c62828", "#2e7d32", "#6a1b9a")
END_COLORS = {"delivered": "#2e7d32", "leaves": "#ef6c00", "dropped": "#c62828"}


def _pod_key(pod: Pod) -> str:
    return f"{pod.namespace}/{pod.name}"


@dataclass
class _Canvas:
    """The picture's elements so far, and each namespace's anchor point for the paths' dots."""

    body: list[str] = field(default_factory=list)
    boxes: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)


def render_svg(snapshot: Snapshot, traces: list[Trace]) -> str:
    """An SVG document (UTF-8 text) of the cluster and the traces' paths."""
    on_path = {(h.namespace.kind, h.namespace.name) for t in traces for h in t.hops}
    ends = {(t.source.kind, t.source.name) for t in traces}
    ends |= {(t.target.kind, t.target.name) for t in traces}
    path_nodes = {h.namespace.node for t in traces for h in t.hops}
    path_nodes |= {e.node for t in traces for e in (t.source, t.target) if e.node}
    nodes = [
        n for n in snapshot.nodes if len(snapshot.nodes) <= MAX_ALL_NODES or n.name in path_nodes
    ]
    canvas = _Canvas()
    body, boxes = canvas.body, canvas.boxes
    height = 0.0
    for i, node in enumerate(nodes):
        x = MARGIN + i * (NODE_W + GAP)
        h = _node(canvas, node, _pods_wanted_first(snapshot, node, on_path | ends), x, 60.0)
        height = max(height, 60 + h)
    outside_x = MARGIN + len(nodes) * (NODE_W + GAP)
    width = outside_x + 200 + MARGIN
    net_y = height + 30
    body.append(
        f'<line x1="{MARGIN}" y1="{net_y}" x2="{outside_x + 100}" y2="{net_y}" '
        'stroke="#555" stroke-width="3"/>'
    )
    body.append(_text(MARGIN, net_y + 18, "node network (each node's uplink)", size=12))
    for i in range(len(nodes)):
        cx = MARGIN + i * (NODE_W + GAP) + NODE_W / 2
        body.append(f'<line x1="{cx}" y1="{height}" x2="{cx}" y2="{net_y}" stroke="#555"/>')
    body.append(
        f'<rect x="{outside_x}" y="60" width="200" height="{HEAD_H}" rx="8" '
        'fill="#fff3e0" stroke="#ef6c00"/>'
    )
    body.append(_text(outside_x + 10, 82, "outside the cluster", bold=True))
    outside = {t.target.name for t in traces if t.target.kind == "outside"}
    outside |= {t.source.name for t in traces if t.source.kind == "outside"}
    body.append(_text(outside_x + 10, 102, ", ".join(sorted(outside)) or "-", size=11))
    body.append(
        f'<line x1="{outside_x + 100}" y1="{60 + HEAD_H}" x2="{outside_x + 100}" '
        f'y2="{net_y}" stroke="#555"/>'
    )
    boxes["outside", ""] = (outside_x + 160, 60 + HEAD_H - 18)
    legend_y = net_y + 50
    for k, trace in enumerate(traces):
        legend_y = _path(canvas, trace, k, legend_y)
    total_h = legend_y + MARGIN
    head = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{total_h}" '
        f'viewBox="0 0 {width} {total_h}" font-family="DejaVu Sans, Arial, sans-serif">',
        "<defs>",
        *(
            f'<marker id="arrow{k}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
            f'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
            f'fill="{color}"/></marker>'
            for k, color in enumerate(COLORS)
        ),
        "</defs>",
        f'<rect width="{width}" height="{total_h}" fill="white"/>',
        _text(MARGIN, 30, _title(traces), size=15, bold=True),
    ]
    return "\n".join([*head, *body, "</svg>"]) + "\n"


def _title(traces: list[Trace]) -> str:
    if not traces:
        return "kindplan trace"
    t = traces[0]
    return f"kindplan trace: {t.source.label} -> {t.target.label}"


def _pods_wanted_first(snapshot: Snapshot, node: Node, wanted: set[tuple[str, str]]) -> list[Pod]:
    """The node's pods, those on a path or at an end first: a node shows only the first few."""
    pods = [p for p in snapshot.pods if p.node == node.name]
    pods.sort(key=lambda p: (("pod", _pod_key(p)) not in wanted, p.namespace, p.name))
    return pods


def _node(canvas: _Canvas, node: Node, pods: list[Pod], x: float, y: float) -> float:
    body, boxes = canvas.body, canvas.boxes
    shown, hidden = pods[:MAX_PODS], len(pods) - MAX_PODS
    h = HEAD_H + len(shown) * (POD_H + POD_GAP) + (20 if hidden > 0 else 0) + 10
    body.append(
        f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{h}" rx="10" fill="#eceff1" '
        'stroke="#37474f"/>'
    )
    body.append(_text(x + 10, y + 20, f"node {node.name}", bold=True))
    body.append(_text(x + 10, y + 38, ", ".join(map(format_ip, node.internal_ips)), size=11))
    body.append(
        _text(x + 10, y + 54, "PodCIDR " + ", ".join(map(format_net, node.pod_cidrs)), size=11)
    )
    boxes["node", node.name] = (x + NODE_W - 30, y + 30)
    for k, pod in enumerate(shown):
        py = y + HEAD_H + k * (POD_H + POD_GAP)
        body.append(
            f'<rect x="{x + 12}" y="{py}" width="{NODE_W - 24}" height="{POD_H}" rx="6" '
            'fill="#e3f2fd" stroke="#1565c0"/>'
        )
        body.append(_text(x + 20, py + 17, f"pod {_pod_key(pod)}", size=12, bold=True))
        ips = ", ".join(map(format_ip, pod.ips))
        ports = "".join(f"  :{h.host_port}->{h.container_port}" for h in pod.host_ports)
        body.append(_text(x + 20, py + 34, f"{ips}  ({pod.host_interface}){ports}", size=10))
        boxes["pod", _pod_key(pod)] = (x + NODE_W - 40, py + POD_H / 2)
    if hidden > 0:
        body.append(_text(x + 12, y + h - 14, f"... and {hidden} more pods", size=11))
    return h


def _path(canvas: _Canvas, trace: Trace, k: int, legend_y: float) -> float:
    body, boxes = canvas.body, canvas.boxes
    color = COLORS[k % len(COLORS)]
    offset = k * 14
    points = []
    for hop in trace.hops:
        x, y = boxes.get((hop.namespace.kind, hop.namespace.name), (0.0, 0.0))
        points.append((x - offset, y + offset / 2))
    end = trace.end
    end_point = None
    if end.kind == "leaves":
        ox, oy = boxes["outside", ""]
        end_point = (ox - offset, oy + offset / 2)
    for (x1, y1), (x2, y2) in zip(
        points, points[1:] + ([end_point] if end_point else []), strict=False
    ):
        body.append(
            f'<path d="M{x1:.0f},{y1:.0f} C{x1:.0f},{y1 + 60:.0f} {x2:.0f},{y2 + 60:.0f} '
            f'{x2:.0f},{y2:.0f}" fill="none" stroke="{color}" stroke-width="2.5" '
            f'marker-end="url(#arrow{k % len(COLORS)})"/>'
        )
    for hop, (x, y) in zip(trace.hops, points, strict=True):
        body.append(f'<circle cx="{x:.0f}" cy="{y:.0f}" r="9" fill="{color}"/>')
        body.append(
            _text(
                x - 4 if hop.index < 10 else x - 7,
                y + 4,
                str(hop.index),
                size=10,
                color="white",
                bold=True,
            )
        )
    if points:
        x, y = end_point or points[-1]
        mark = END_COLORS[end.kind]
        body.append(
            f'<circle cx="{x:.0f}" cy="{y:.0f}" r="14" fill="none" stroke="{mark}" '
            'stroke-width="3"/>'
        )
    body.append(
        _text(
            MARGIN,
            legend_y,
            f"IPv{trace.version}: {trace.source.label} -> {trace.target.label}",
            size=13,
            bold=True,
            color=color,
        )
    )
    legend_y += 18
    for hop in trace.hops:
        what = (
            f"{format_ip(hop.dst)} is local"
            if hop.type == "local"
            else route_listing(hop.route.route)
            if hop.route
            else "no route"
        )
        nat = "; ".join(
            f"{n.kind.upper()} {n.before} -> {n.after}" for n in hop.nat if n.kind != "return"
        )
        line = f"{hop.index}. {hop.namespace.label}: {what}" + (f"  [{nat}]" if nat else "")
        if hop.drift:
            line += f"  DRIFT {hop.drift}"
        body.append(_text(MARGIN + 10, legend_y, line, size=11))
        legend_y += 16
    body.append(
        _text(
            MARGIN + 10,
            legend_y,
            f"{end.kind.upper()} at {end.at}: {end.why}",
            size=11,
            bold=True,
            color=END_COLORS[end.kind],
        )
    )
    return legend_y + 28


def _text(
    x: float, y: float, text: str, *, size: int = 13, bold: bool = False, color: str = "#212121"
) -> str:
    weight = ' font-weight="bold"' if bold else ""
    return (
        f'<text x="{x:.0f}" y="{y:.0f}" font-size="{size}" fill="{color}"{weight}>'
        f"{escape(text)}</text>"
    )
