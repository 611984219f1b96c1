"""trace --svg as a picture: measured from the SVG it draws, no word is covered by a hop's dot or
by another word, no word runs out of its box or the picture, every walk's path starts where the
walk does (the outside box for a walk from outside), and an unused outside box is not drawn."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
import yaml

from kindplan.core.trace import trace_packet
from kindplan.core.tracesvg import render_svg
from kindplan.core.traceworld import Uplink, build_world, families, resolve
from kindplan.inputs.kinds import parse_snapshot

ROOT = Path(__file__).resolve().parents[2]
SVG = "{http://www.w3.org/2000/svg}"
# DejaVu Sans's advance per character, rounded up: digits 0.636 em, bold digits 0.696 em.
EM = {False: 0.64, True: 0.72}


@dataclass(frozen=True)
class Box:
    what: str
    x1: float
    y1: float
    x2: float
    y2: float

    def overlaps(self, other: Box) -> bool:
        return (
            self.x1 < other.x2 and other.x1 < self.x2 and self.y1 < other.y2 and other.y1 < self.y2
        )

    def holds(self, other: Box) -> bool:
        return (
            self.x1 <= other.x1
            and other.x2 <= self.x2
            and self.y1 <= other.y1
            and other.y2 <= self.y2
        )


def text_box(e: Any) -> Box:
    x, y, size = float(e.get("x")), float(e.get("y")), float(e.get("font-size"))
    width = len(e.text or "") * size * EM[e.get("font-weight") == "bold"]
    return Box(f"text {e.text!r}", x, y - 0.8 * size, x + width, y + 0.25 * size)


def circle_box(e: Any) -> Box:
    cx, cy, r = (float(e.get(k)) for k in ("cx", "cy", "r"))
    return Box(f"dot at {cx:.0f},{cy:.0f}", cx - r, cy - r, cx + r, cy + r)


def rect_box(e: Any) -> Box:
    x, y = float(e.get("x", 0)), float(e.get("y", 0))
    return Box("box", x, y, x + float(e.get("width")), y + float(e.get("height")))


def problems(svg: str) -> list[str]:
    """Every overlap the picture has: a dot on a word, two words, a word out of its box."""
    root = ElementTree.fromstring(svg.encode())
    # A hop's number sits in its own dot (white on the dot's colour): part of the dot.
    words = [text_box(e) for e in root.iter(f"{SVG}text") if e.get("fill") != "white"]
    dots = [circle_box(e) for e in root.iter(f"{SVG}circle")]
    picture, *rects = [rect_box(e) for e in root.iter(f"{SVG}rect")]
    found = [f"{d.what} covers {w.what}" for d in dots for w in words if d.overlaps(w)]
    found += [
        f"{a.what} and {b.what}"
        for i, a in enumerate(words)
        for b in words[i + 1 :]
        if a.overlaps(b)
    ]
    found += [  # two traces' dots side by side, not on each other (a ring holds its own dot)
        f"{a.what} and {b.what}"
        for i, a in enumerate(dots)
        for b in dots[i + 1 :]
        if a.overlaps(b) and not (a.holds(b) or b.holds(a))
    ]
    for w in words:
        inside = [r for r in rects if r.x1 <= w.x1 <= r.x2 and r.y1 <= w.y1 <= r.y2]
        home = min(inside, key=lambda r: (r.x2 - r.x1) * (r.y2 - r.y1), default=picture)
        if not home.holds(w):
            found.append(f"{w.what} runs out of its box")
    return found


def snapshot_doc(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "fixtures" / name / "snapshot.yaml").read_text())


def picture(doc: dict[str, Any], source: str, target: str, port: int | None = None) -> str:
    snapshot = parse_snapshot(json.dumps(doc).encode()).snapshot
    world = build_world(snapshot, Uplink())
    src, dst = resolve(snapshot, source, "--from"), resolve(snapshot, target, "--to")
    traces = [trace_packet(world, src, dst, v, port=port) for v in families(src, dst)]
    return render_svg(snapshot, traces)


def with_host_port(doc: dict[str, Any]) -> dict[str, Any]:
    doc["pods"][0]["hostPorts"] = [{"hostPort": 8080, "containerPort": 80}]
    return doc


def with_long_names(doc: dict[str, Any]) -> dict[str, Any]:
    doc["pods"][0]["namespace"] = "kube-system-with-a-rather-long-namespace-name"
    doc["pods"][0]["name"] = "coredns-5d78c9869d-abcde-and-then-some"
    return doc


WALKS = {
    "dual-stack pod to node": (snapshot_doc("dual-stack"), "web-1", "dual-worker2", None),
    "dual-stack pod to pod": (snapshot_doc("dual-stack"), "web-1", "web-2", None),
    "dual-stack pod to outside": (snapshot_doc("dual-stack"), "web-1", "203.0.113.10", None),
    "outside to a hostPort": (
        with_host_port(snapshot_doc("seed-lab")),
        "203.0.113.10",
        "172.18.0.12",
        8080,
    ),
    "outside to a pod (dropped)": (snapshot_doc("seed-lab"), "203.0.113.10", "web-1", None),
    "long names": (with_long_names(snapshot_doc("seed-lab")), "10.244.2.8", "web-0", None),
}


@pytest.mark.parametrize("walk", WALKS.values(), ids=WALKS.keys())
def test_nothing_covers_a_word(walk: tuple[dict[str, Any], str, str, int | None]) -> None:
    svg = picture(*walk)
    assert problems(svg) == []


def test_the_check_finds_a_dot_on_a_word() -> None:
    """The measure itself: the picture of before this check (dots on the node's PodCIDR line)."""
    covered = (
        '<svg xmlns="http://www.w3.org/2000/svg" width="400" height="200">'
        '<rect width="400" height="200"/>'
        '<rect x="20" y="60" width="270" height="100"/>'
        '<text x="30" y="114" font-size="11">PodCIDR 10.244.1.0/24, fd00:10:244:1::/64</text>'
        '<circle cx="260" cy="110" r="9"/></svg>'
    )
    found = problems(covered)
    assert any(p.startswith("dot at 260,110 covers text 'PodCIDR") for p in found), found
    assert any(p.endswith("runs out of its box") for p in found), found


def test_a_walk_from_outside_starts_at_the_outside_box() -> None:
    svg = picture(*WALKS["outside to a hostPort"])
    root = ElementTree.fromstring(svg.encode())
    first = root.findall(f"{SVG}path")[0]  # the picture's own paths, not the arrows' heads
    start = re.match(r"M(\d+),(\d+)", first.get("d", ""))
    assert start is not None
    outside = next(rect_box(r) for r in root.iter(f"{SVG}rect") if r.get("stroke") == "#ef6c00")
    x, y = float(start[1]), float(start[2])
    assert outside.x1 <= x <= outside.x2 and outside.y1 <= y <= outside.y2, (x, y, outside)


def test_no_outside_box_without_an_outside_end() -> None:
    svg = picture(*WALKS["dual-stack pod to node"])
    texts = [e.text for e in ElementTree.fromstring(svg.encode()).iter(f"{SVG}text")]
    assert "outside the cluster" not in texts and "-" not in texts
    leaves = picture(snapshot_doc("seed-lab"), "web-1", "203.0.113.10")
    assert "203.0.113.10" in leaves
