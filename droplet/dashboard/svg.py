"""Pictures as inline SVG, drawn on the server: a DAG's graph and line charts over time.

Why by hand rather than with a plotting library: the pages refresh every couple of seconds,
an SVG of a few dozen elements costs microseconds to write, scales with the page, and its text
(function names, worker ids, axis labels) stays text that a person can select and a browser
test can find. Every name that reaches the markup is escaped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

NODE_W, NODE_H = 170, 54
GAP_X, GAP_Y = 70, 26
PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4d7c0f",
           "#be185d")


@dataclass(frozen=True)
class Placement:
    """Where a DAG function is pinned: a worker id ("" when unpinned), and whether it lives."""

    worker: str
    alive: bool


def layers(functions: Sequence[str], edges: Sequence[tuple[str, str]]) -> list[list[str]]:
    """Functions by depth: sources first, each function one layer after its deepest upstream
    (longest path). Edges naming unknown functions are ignored; a cycle cannot be registered,
    but one would not loop here (an upstream on the path being walked is passed over). The
    walk keeps its own stack: recursion failed on a chain of some 330 functions."""
    known = set(functions)
    ups: dict[str, list[str]] = {f: [] for f in functions}
    for source, sink in edges:
        if source in known and sink in known:
            ups[sink].append(source)
    depth: dict[str, int] = {}
    for root in functions:
        if root in depth:
            continue
        on_path = {root}
        stack = [(root, iter(ups[root]))]
        while stack:
            name, parents = stack[-1]
            parent = next((p for p in parents if p not in depth and p not in on_path), None)
            if parent is not None:
                on_path.add(parent)
                stack.append((parent, iter(ups[parent])))
                continue
            stack.pop()
            on_path.discard(name)
            depth[name] = 1 + max((depth[p] for p in ups[name] if p in depth), default=-1)
    out: list[list[str]] = [[] for _ in range(1 + max(depth.values(), default=-1))]
    for name in functions:
        out[depth[name]].append(name)
    return out


def dag_svg(name: str, functions: Sequence[str], edges: Sequence[tuple[str, str]],
            placements: Mapping[str, Placement]) -> str:
    """A DAG drawn left to right: a box per function naming the worker it is pinned on (red
    when that worker is dead or nothing is pinned), an arrow per connection."""
    columns = layers(functions, edges)
    tallest = max((len(c) for c in columns), default=1)
    width = max(1, len(columns)) * (NODE_W + GAP_X) - GAP_X + 20
    height = tallest * (NODE_H + GAP_Y) - GAP_Y + 20
    where: dict[str, tuple[float, float]] = {}
    for col, members in enumerate(columns):
        offset = (tallest - len(members)) * (NODE_H + GAP_Y) / 2
        for row, function in enumerate(members):
            where[function] = (10 + col * (NODE_W + GAP_X), 10 + offset + row * (NODE_H + GAP_Y))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="dag" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label={quoteattr("DAG " + name)}>',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#475569"/>'
        "</marker></defs>",
    ]
    for source, sink in edges:
        if source in where and sink in where:
            (x1, y1), (x2, y2) = where[source], where[sink]
            parts.append(
                f'<line class="edge" x1="{x1 + NODE_W:.0f}" y1="{y1 + NODE_H / 2:.0f}" '
                f'x2="{x2:.0f}" y2="{y2 + NODE_H / 2:.0f}" stroke="#475569" stroke-width="2" '
                'marker-end="url(#arrow)"/>'
            )
    for function, (x, y) in where.items():
        placed = placements.get(function, Placement("", False))
        ok = bool(placed.worker) and placed.alive
        label = placed.worker if placed.worker else "not pinned"
        if placed.worker and not placed.alive:
            label += " (dead)"
        fill, stroke = ("#eff6ff", "#2563eb") if ok else ("#fef2f2", "#dc2626")
        parts.append(
            f'<g class="node" data-function={quoteattr(function)}>'
            f'<rect x="{x:.0f}" y="{y:.0f}" width="{NODE_W}" height="{NODE_H}" rx="8" '
            f'fill="{fill}" stroke="{stroke}" stroke-width="2"/>'
            f'<text x="{x + NODE_W / 2:.0f}" y="{y + 22:.0f}" text-anchor="middle" '
            f'font-size="14" font-weight="bold">{escape(_clip(function, 20))}</text>'
            f'<text class="pin" x="{x + NODE_W / 2:.0f}" y="{y + 41:.0f}" text-anchor="middle" '
            f'font-size="11" fill="#475569">{escape(_clip(label, 26))}</text>'
            f"<title>{escape(function)} on {escape(label)}</title></g>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _clip(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "\u2026"


@dataclass(frozen=True)
class Series:
    label: str
    points: Sequence[tuple[float, float]]  # (unix time, value)


def line_chart(title: str, series: Sequence[Series], unit: str, window_s: float,
               now: float | None = None, width: int = 560, height: int = 220) -> str:
    """Lines over the last window_s seconds, with a time axis (seconds ago), a value axis from
    zero to a round maximum, and a legend. An empty chart says that it has no data yet."""
    now = time.time() if now is None else now
    left, right, top, bottom = 56, 12, 28, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    start = now - window_s
    values = [v for s in series for t, v in s.points if t >= start and math.isfinite(v)]
    top_value = _nice_ceiling(max(values, default=0.0))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label={quoteattr(title)}>',
        f'<text x="{left}" y="16" font-size="13" font-weight="bold">{escape(title)}</text>',
    ]
    for i in range(5):
        y = top + plot_h - plot_h * i / 4
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" '
                     'stroke="#e2e8f0"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="10" '
                     f'fill="#475569">{escape(_number(top_value * i / 4, unit))}</text>')
    for i in range(6):
        x = left + plot_w * i / 5
        ago = window_s * (5 - i) / 5
        parts.append(f'<text x="{x:.1f}" y="{height - 14}" text-anchor="middle" font-size="10" '
                     f'fill="#475569">{escape(_ago(ago))}</text>')
    parts.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" '
                 'stroke="#94a3b8"/>')
    if not values:
        parts.append(f'<text x="{left + plot_w / 2}" y="{top + plot_h / 2}" text-anchor="middle" '
                     'font-size="12" fill="#64748b">no data yet</text>')
    for index, one in enumerate(series):
        color = PALETTE[index % len(PALETTE)]
        shown = [(t, v) for t, v in one.points if t >= start and math.isfinite(v)]
        xy = [(left + plot_w * (t - start) / window_s,
               top + plot_h - plot_h * (v / top_value if top_value else 0)) for t, v in shown]
        if xy:
            coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
            parts.append(f'<polyline class="line" fill="none" stroke="{color}" '
                         f'stroke-width="2" points="{coords}"/>')
            # A dot per point: a lone point (one bin of data) shows too.
            parts += [f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="2.5" '
                      f'fill="{color}"/>' for x, y in xy]
        lx = left + 8 + (index % 4) * 130
        ly = top + 14 + (index // 4) * 14
        parts.append(f'<rect x="{lx}" y="{ly - 8}" width="10" height="3" fill="{color}"/>'
                     f'<text x="{lx + 14}" y="{ly - 4}" font-size="10">'
                     f"{escape(_clip(one.label, 18))}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k at or above value (1 for nothing)."""
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if value <= step * power:
            return step * power
    return 10 * power


def _number(value: float, unit: str) -> str:
    if unit == "s":
        if value == 0:
            return "0"
        return f"{value * 1e3:.3g} ms" if value < 1 else f"{value:.3g} s"
    return f"{value:.3g}{unit}"


def _ago(seconds: float) -> str:
    if seconds <= 0:
        return "now"
    return f"-{seconds:.0f}s" if seconds < 120 else f"-{seconds / 60:.0f}m"
