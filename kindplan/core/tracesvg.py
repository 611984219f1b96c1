"""render_svg: a picture of the nodes, their pods and the path of each trace. Pure.

Nodes stand side by side on the node network, each with its pods inside; the outside world is a
box of its own, drawn when a walk starts, ends or leaves there. Every hop is a numbered dot in
the namespace it happens in, joined by arrows in the order of the walk; the end is marked where
it happens (delivered, leaves, dropped + why). Large clusters draw only the nodes on a path, and
on each node the pods on a path first.

Nothing may cover a word: every box keeps a lane on its right for the dots (one column per
trace) and its text to the left of the lane, one address or PodCIDR a line. Text widths are
estimated from the font size (`text_width`); tests/unit/test_tracesvg.py measures the picture
it draws with its own estimate and fails on any overlap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from itertools import pairwise

from kindplan.core.addresses import format_ip, format_net
from kindplan.core.model import Node, Pod, Snapshot
from kindplan.core.trace import Trace
from kindplan.core.traceworld import route_listing

NODE_W, OUT_W, POD_GAP, MARGIN, GAP, TOP = 370, 330, 10, 20, 40, 110
LINE = 15  # one line of 11-px text in a box
DOT_R, END_R, DOT_STEP = 9, 14, 30  # a hop's dot, the ring of the end, one trace's column
BOW = 80  # how far above the boxes an arrow between two boxes bows (below the title)
LANE = 2 * DOT_STEP + END_R + 14  # the dots' lane on a box's right: two traces (IPv4, IPv6)
MAX_ALL_NODES, MAX_PODS = 8, 6
COLORS = ("#1565c0", "#c62828", "#2e7d32", "#6a1b9a")
END_COLORS = {"delivered": "#2e7d32", "leaves": "#ef6c00", "dropped": "#c62828"}
OUTSIDE = ("outside", "")


def _pod_key(pod: Pod) -> str:
    return f"{pod.namespace}/{pod.name}"


def text_width(text: str, size: float, *, bold: bool = False) -> float:
    """How wide `text` may be in DejaVu Sans: its digits, the widest of what kindplan writes
    most (addresses), advance 0.636 em (bold 0.696); a bit more per character, to be safe."""
    return len(text) * size * (0.72 if bold else 0.64)


@dataclass
class _Canvas:
    """The picture's elements so far, and each namespace's anchor point for the paths' dots:
    the right end of its lane, the first trace's column (later traces step to the left)."""

    body: list[str] = field(default_factory=list)
    anchors: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)
    width: float = 0.0  # the widest line drawn so far (the legend may be wider than the boxes)

    def text(
        self,
        x: float,
        y: float,
        text: str,
        *,
        size: int = 13,
        bold: bool = False,
        color: str = "#212121",
        fit: float | None = None,
    ) -> None:
        """A line of text; with `fit`, cut short (ending in "...") to at most that width."""
        if fit is not None and text_width(text, size, bold=bold) > fit:
            keep = int(fit / text_width("x", size, bold=bold)) - 3
            text = text[: max(keep, 1)] + "..."
        self.body.append(_text(x, y, text, size=size, bold=bold, color=color))
        self.width = max(self.width, x + text_width(text, size, bold=bold))


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
    height = 0.0
    for i, node in enumerate(nodes):
        x = MARGIN + i * (NODE_W + GAP)
        h = _node(canvas, node, _pods_wanted_first(snapshot, node, on_path | ends), x, TOP)
        height = max(height, TOP + h)
    right = MARGIN + len(nodes) * (NODE_W + GAP)
    outside = _outside_box(canvas, traces, right)
    if outside:
        height = max(height, TOP + outside)
        right += OUT_W
    net_y = height + 30
    canvas.body.append(
        f'<line x1="{MARGIN}" y1="{net_y}" x2="{right - (OUT_W / 2 if outside else GAP)}" '
        f'y2="{net_y}" stroke="#555" stroke-width="3"/>'
    )
    canvas.text(MARGIN, net_y + 18, "node network (each node's uplink)", size=12)
    for i in range(len(nodes)):
        cx = MARGIN + i * (NODE_W + GAP) + NODE_W / 2
        canvas.body.append(f'<line x1="{cx}" y1="{height}" x2="{cx}" y2="{net_y}" stroke="#555"/>')
    if outside:
        cx = right - OUT_W / 2
        canvas.body.append(
            f'<line x1="{cx}" y1="{TOP + outside}" x2="{cx}" y2="{net_y}" stroke="#555"/>'
        )
    legend_y = net_y + 50
    for k, trace in enumerate(traces):
        legend_y = _path(canvas, trace, k, legend_y)
    canvas.text(MARGIN, 30, _title(traces), size=15, bold=True)
    width = max(right, canvas.width) + MARGIN
    total_h = legend_y + MARGIN
    head = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{total_h:.0f}" '
        f'viewBox="0 0 {width:.0f} {total_h:.0f}" font-family="DejaVu Sans, Arial, sans-serif">',
        "<defs>",
        *(
            f'<marker id="arrow{k}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
            f'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
            f'fill="{color}"/></marker>'
            for k, color in enumerate(COLORS)
        ),
        "</defs>",
        f'<rect width="{width:.0f}" height="{total_h:.0f}" fill="white"/>',
    ]
    return "\n".join([*head, *canvas.body, "</svg>"]) + "\n"


def _title(traces: list[Trace]) -> str:
    if not traces:
        return "kindplan trace"
    t = traces[0]
    return f"kindplan trace: {t.source.label} -> {t.target.label}"


def _outside_box(canvas: _Canvas, traces: list[Trace], x: float) -> float:
    """The outside world, when a walk starts or ends there or leaves the cluster: its height
    (0: not drawn). One address a line; a walk that leaves by a default route names none."""
    addresses = sorted(
        {e.name for t in traces for e in (t.source, t.target) if e.kind == "outside"}
    )
    if not addresses and not any(t.end.kind == "leaves" for t in traces):
        return 0.0
    lines = addresses or ["(by a node's default route)"]
    h = 26 + LINE * len(lines) + 16
    canvas.body.append(
        f'<rect x="{x}" y="{TOP}" width="{OUT_W - GAP}" height="{h}" rx="8" '
        'fill="#fff3e0" stroke="#ef6c00"/>'
    )
    room = OUT_W - GAP - 10 - LANE
    canvas.text(x + 10, TOP + 20, "outside the cluster", bold=True, fit=room)
    for n, line in enumerate(lines):
        canvas.text(x + 10, TOP + 38 + n * LINE, line, size=11, fit=room)
    canvas.anchors[OUTSIDE] = (x + OUT_W - GAP - DOT_STEP, TOP + 20)
    return h


def _pods_wanted_first(snapshot: Snapshot, node: Node, wanted: set[tuple[str, str]]) -> list[Pod]:
    """The node's pods, those on a path or at an end first: a node shows only the first few."""
    pods = [p for p in snapshot.pods if p.node == node.name]
    pods.sort(key=lambda p: (("pod", _pod_key(p)) not in wanted, p.namespace, p.name))
    return pods


def _node(canvas: _Canvas, node: Node, pods: list[Pod], x: float, y: float) -> float:
    """A node's box: its name, one InternalIP and one PodCIDR a line, its pods below."""
    lines = [*map(format_ip, node.internal_ips)]
    lines += [f"PodCIDR {format_net(c)}" for c in node.pod_cidrs]
    head = 26 + LINE * len(lines) + 6
    shown, hidden = pods[:MAX_PODS], len(pods) - MAX_PODS
    pod_h = 36 + LINE * max((len(p.ips) for p in shown), default=1)
    h = head + len(shown) * (pod_h + POD_GAP) + (20 if hidden > 0 else 0) + 6
    canvas.body.append(
        f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{h}" rx="10" fill="#eceff1" '
        'stroke="#37474f"/>'
    )
    room = NODE_W - 10 - LANE  # the text's width, left of the dots' lane
    canvas.text(x + 10, y + 20, f"node {node.name}", bold=True, fit=room)
    for n, line in enumerate(lines):
        canvas.text(x + 10, y + 38 + n * LINE, line, size=11, fit=room)
    canvas.anchors["node", node.name] = (x + NODE_W - DOT_STEP, y + 20)
    for k, pod in enumerate(shown):
        py = y + head + k * (pod_h + POD_GAP)
        _pod(canvas, pod, x + 12, py, pod_h)
    if hidden > 0:
        canvas.text(x + 12, y + h - 14, f"... and {hidden} more pods", size=11)
    return h


def _pod(canvas: _Canvas, pod: Pod, x: float, y: float, h: float) -> None:
    """A pod's box in its node's: its name, one IP a line, its veth and hostPorts."""
    canvas.body.append(
        f'<rect x="{x}" y="{y}" width="{NODE_W - 24}" height="{h}" rx="6" '
        'fill="#e3f2fd" stroke="#1565c0"/>'
    )
    room = NODE_W - 24 - 8 - LANE
    canvas.text(x + 8, y + 17, f"pod {_pod_key(pod)}", size=12, bold=True, fit=room)
    for n, ip in enumerate(pod.ips):
        canvas.text(x + 8, y + 33 + n * LINE, format_ip(ip), size=10, fit=room)
    ports = "".join(f"  :{p.host_port}->{p.container_port}" for p in pod.host_ports)
    interface = f"{pod.host_interface}{ports}"
    canvas.text(x + 8, y + 33 + len(pod.ips) * LINE, interface, size=10, fit=room)
    canvas.anchors["pod", _pod_key(pod)] = (x + NODE_W - 24 - DOT_STEP + 8, y + 17)


def _points(canvas: _Canvas, trace: Trace, k: int) -> tuple[list[tuple[float, float]], int]:
    """Where the walk's dots go (the outside box first, for a walk from outside), and how many
    of them lead up to the first hop's."""
    column = k * DOT_STEP  # each trace its own column of the lanes
    anchors = canvas.anchors
    points = []
    start = 0
    if trace.source.kind == "outside" and OUTSIDE in anchors:
        ox, oy = anchors[OUTSIDE]
        points.append((ox - column, oy))
        start = 1
    for hop in trace.hops:
        x, y = anchors.get((hop.namespace.kind, hop.namespace.name), (0.0, 0.0))
        points.append((x - column, y))
    if trace.end.kind == "leaves" and OUTSIDE in anchors:
        ox, oy = anchors[OUTSIDE]
        points.append((ox - column, oy))
    return points, start


def _path(canvas: _Canvas, trace: Trace, k: int, legend_y: float) -> float:
    body = canvas.body
    color = COLORS[k % len(COLORS)]
    points, start = _points(canvas, trace, k)
    for (x1, y1), (x2, y2) in pairwise(points):
        # Within a box (a pod to its node) straight up or down its lane; between boxes an arc
        # that bows above them all, where no text is: no line crosses a word.
        within = abs(x1 - x2) < DOT_STEP
        to = (
            f"L{x2:.0f},{y2:.0f}"
            if within
            else f"C{x1:.0f},{y1 - BOW:.0f} {x2:.0f},{y2 - BOW:.0f} {x2:.0f},{y2:.0f}"
        )
        body.append(
            f'<path d="M{x1:.0f},{y1:.0f} {to}" fill="none" stroke="{color}" '
            f'stroke-width="2.5" marker-end="url(#arrow{k % len(COLORS)})"/>'
        )
    hop_points = points[start : start + len(trace.hops)]
    extra = [p for i, p in enumerate(points) if not start <= i < start + len(trace.hops)]
    for x, y in extra:  # the outside world as a walk's start or its way out: a plain dot
        body.append(f'<circle cx="{x:.0f}" cy="{y:.0f}" r="{DOT_R}" fill="{color}"/>')
    for hop, (x, y) in zip(trace.hops, hop_points, strict=True):
        body.append(f'<circle cx="{x:.0f}" cy="{y:.0f}" r="{DOT_R}" fill="{color}"/>')
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
    end = trace.end
    if points:
        x, y = points[-1]
        body.append(
            f'<circle cx="{x:.0f}" cy="{y:.0f}" r="{END_R}" fill="none" '
            f'stroke="{END_COLORS[end.kind]}" stroke-width="3"/>'
        )
    return _legend(canvas, trace, color, legend_y)


def _legend(canvas: _Canvas, trace: Trace, color: str, legend_y: float) -> float:
    """The walk in words under the picture: a line per hop and its end."""
    title = f"IPv{trace.version}: {trace.source.label} -> {trace.target.label}"
    canvas.text(MARGIN, legend_y, title, size=13, bold=True, color=color)
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
        canvas.text(MARGIN + 10, legend_y, line, size=11)
        legend_y += 16
    end = trace.end
    canvas.text(
        MARGIN + 10,
        legend_y,
        f"{end.kind.upper()} at {end.at}: {end.why}",
        size=11,
        bold=True,
        color=END_COLORS[end.kind],
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
