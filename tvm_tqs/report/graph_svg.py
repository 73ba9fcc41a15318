"""The fused graph as inline SVG: one box per call site, coloured by its planned precision."""

from __future__ import annotations

from html import escape

from .svg import FONT

PRECISION_COLORS = {"fp32": "#b0b0b0", "fp16": "#4e79a7", "int8": "#59a14f", "int4": "#f28e2b"}
GROUP_COLORS = ("#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#1f77b4", "#ff7f0e")
MAX_DRAWN_EDGES = 160  # beyond this many sites the graph is drawn as a strip in program order


def _depths(n: int, edges: list) -> list[int]:
    """Longest-path layer of every site (sites are in program order, so producers come first)."""
    depth = [0] * n
    for src, dst in sorted(edges, key=lambda e: e[1]):
        depth[dst] = max(depth[dst], depth[src] + 1)
    return depth


def _group_marks(sites: list[dict]) -> dict[str, tuple[str, str]]:
    """Shared weight groups (more than one site) -> (short tag, outline colour)."""
    counts: dict[str, int] = {}
    for s in sites:
        if s.get("group"):
            counts[s["group"]] = counts.get(s["group"], 0) + 1
    shared = [
        g
        for g in sorted(counts, key=lambda g: min(s["site"] for s in sites if s.get("group") == g))
        if counts[g] > 1
    ]
    return {g: (f"w{i}", GROUP_COLORS[i % len(GROUP_COLORS)]) for i, g in enumerate(shared)}


def _tooltip(s: dict, tag: str | None) -> str:
    parts = [f"site {s['site']}: {'+'.join(s['kinds'])}", s["precision"]]
    if s.get("tqs") is not None:
        parts.append(f"TQS {s['tqs']:.3g}")
    if tag:
        parts.append(f"weight shared ({tag})")
    if s.get("reason") and s["precision"] == "fp32":
        parts.append(s["reason"])
    return " | ".join(parts)


def graph_svg(sites: list[dict], edges: list) -> str:
    """`sites` are the plan's SitePlan dicts in site order; `edges` (producer, consumer) pairs."""
    n = len(sites)
    marks = _group_marks(sites)
    if n > MAX_DRAWN_EDGES:
        return _strip(sites, marks)
    depth = _depths(n, edges)
    layers: dict[int, list[int]] = {}
    for i, d in enumerate(depth):
        layers.setdefault(d, []).append(i)
    box_w, box_h, gap_x, gap_y = 118, 30, 14, 26
    widest = max(len(v) for v in layers.values())
    width = max(widest * (box_w + gap_x) + gap_x, 300)
    height = len(layers) * (box_h + gap_y) + gap_y
    pos = {}
    for d, members in layers.items():
        row_w = len(members) * (box_w + gap_x) - gap_x
        x0 = (width - row_w) / 2
        for j, i in enumerate(members):
            pos[i] = (x0 + j * (box_w + gap_x), gap_y / 2 + d * (box_h + gap_y))
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-label="fused graph" {FONT}>'
    ]
    for src, dst in edges:
        (ax, ay), (bx, by) = pos[src], pos[dst]
        x1, y1, x2, y2 = ax + box_w / 2, ay + box_h, bx + box_w / 2, by
        mid = (y1 + y2) / 2
        out.append(
            f'<path d="M{x1:.1f},{y1:.1f} C{x1:.1f},{mid:.1f} {x2:.1f},{mid:.1f} {x2:.1f},{y2:.1f}" '
            'fill="none" stroke="#888" stroke-width="1"/>'
        )
    for i, s in enumerate(sites):
        x, y = pos[i]
        tag, outline = marks.get(s.get("group"), (None, "#444"))
        fixed = len(s["options"]) <= 1
        fill = PRECISION_COLORS.get(s["precision"], "#ddd") if not fixed else "#eeeeee"
        dash = ' stroke-dasharray="3,2"' if fixed else ""
        label = f"{s['site']} {s['anchor']}"[:18]
        out.append(
            f'<g class="site" data-site="{s["site"]}"><title>{escape(_tooltip(s, tag))}</title>'
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{box_w}" height="{box_h}" rx="5" fill="{fill}" '
            f'stroke="{outline}" stroke-width="{2.5 if tag else 1}"{dash}/>'
            f'<text x="{x + 6:.1f}" y="{y + 13:.1f}">{escape(label)}</text>'
            f'<text x="{x + 6:.1f}" y="{y + 25:.1f}" fill="#333">{s["precision"] if not fixed else "fp32 (fixed)"}'
            f"{' · ' + tag if tag else ''}</text></g>"
        )
    out.append("</svg>")
    return "".join(out)


def _strip(sites: list[dict], marks: dict) -> str:
    """Large graphs (unrolled recurrences): sites in program order, wrapped in rows; no edges."""
    per_row, cell = 40, 16
    rows = (len(sites) + per_row - 1) // per_row
    width, height = per_row * cell + 8, rows * cell + 8
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="fused graph" {FONT}>'
    ]
    for i, s in enumerate(sites):
        x, y = 4 + (i % per_row) * cell, 4 + (i // per_row) * cell
        tag, outline = marks.get(s.get("group"), (None, "#666"))
        fixed = len(s["options"]) <= 1
        fill = "#eeeeee" if fixed else PRECISION_COLORS.get(s["precision"], "#ddd")
        out.append(
            f'<rect class="site" data-site="{s["site"]}" x="{x}" y="{y}" width="{cell - 3}" height="{cell - 3}" '
            f'fill="{fill}" stroke="{outline}" stroke-width="{2 if tag else 0.5}">'
            f"<title>{escape(_tooltip(s, tag))}</title></rect>"
        )
    out.append("</svg>")
    return "".join(out)
