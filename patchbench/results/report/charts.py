"""Chart geometry for `patchbench report`: learning curves and heatmaps as plain shapes.

Python computes every coordinate and colour; the template only writes them out as inline SVG,
so the page needs no chart library and no network. Each drawn number keeps its exact value
(for tooltips, and for tests that read the page back).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..curves import seed_curves
from ..phase import ordered

# matplotlib's default cycle, so an arm has the same colour here as in `patchbench plot`.
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf"]

# Plot area inside the SVG, in px: room on the left and below for the tick labels.
WIDTH, HEIGHT = 760, 320
LEFT, RIGHT, TOP, BOTTOM = 44, 12, 10, 34


@dataclass
class CurvePoint:
    x: float
    y: float
    epoch: int
    value: float
    low: float
    high: float
    seeds: int


@dataclass
class Series:
    arm: str
    patch: str
    metric: str
    label: str
    colour: str
    dashed: bool
    path: str
    band: str | None
    points: list[CurvePoint]


@dataclass
class Mark:
    x: float
    colour: str
    label: str


@dataclass
class Tick:
    pos: float
    label: str


@dataclass
class CurveChart:
    architecture: str
    title: str  # the architecture, or "architecture / patch" where a spec has several
    series: list[Series]
    anneals: list[Mark]
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    top: int = TOP
    right_edge: int = WIDTH - RIGHT
    bottom_edge: int = HEIGHT - BOTTOM


def group_colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def nice_step(span: float, target: int = 8) -> int:
    """The smallest of 1, 2, 5, 10, 20, 25, 50, ... epochs giving at most `target` ticks."""
    for magnitude in (1, 10, 100, 1000, 10000):
        for base in (1, 2, 2.5, 5):
            step = base * magnitude
            if step == int(step) and span / step <= target:
                return int(step)
    return int(max(1, span // target))


def curve_chart(architecture: str, title: str, groups: list[tuple[str, str, str, list[dict]]],
                metrics: dict[str, str]) -> CurveChart | None:
    """Curves of one panel. `groups` holds (arm, patch, colour, completed records) in the
    leaderboard's row order; `metrics` maps clean_acc and the metric that defines "learned"
    (patch-only accuracy, the attack success rate...) to their short names, clean_acc solid.
    Per group and metric: the mean over seeds as the line, the
    min..max over seeds as the band; anneal epochs are drawn half an epoch early, between
    the last epoch before the change and the first after it, as `patchbench plot` does."""
    raw: list[tuple[str, str, str, str, Any, Any]] = []
    for arm, patch, colour, recs in groups:
        for metric in metrics:
            epochs, values = seed_curves(recs, metric)
            if epochs is not None:
                raw.append((arm, patch, colour, metric, epochs, values))
    if not raw:
        return None
    last = max(int(epochs[-1]) for *_, epochs, _ in raw)
    sx = _scale(0, last, LEFT, WIDTH - RIGHT)
    sy = _scale(0.0, 1.0, HEIGHT - BOTTOM, TOP)
    series = []
    for arm, patch, colour, metric, epochs, values in raw:
        mean, low, high = values.mean(0), values.min(0), values.max(0)
        points = [CurvePoint(sx(e), sy(m), int(e), float(m), float(lo), float(hi), len(values))
                  for e, m, lo, hi in zip(epochs, mean, low, high)]
        band = None
        if len(values) > 1:
            upper = [(sx(e), sy(h)) for e, h in zip(epochs, high)]
            lower = [(sx(e), sy(lo)) for e, lo in zip(epochs, low)][::-1]
            band = _path(upper + lower) + " Z"
        label = arm if patch != "none" else f"{arm} (no patch)"
        series.append(Series(arm, patch, metric, f"{label}: {metrics[metric]}", colour,
                             metric != "clean_acc", _path([(p.x, p.y) for p in points]),
                             band, points))
    anneals = []
    for arm, patch, colour, recs in groups:
        for epoch in sorted(int(e) for e in recs[0]["summary"].get("anneals") or {}):
            anneals.append(Mark(sx(epoch - 0.5), colour, f"{arm}: anneal at epoch {epoch}"))
    step = nice_step(last)
    x_ticks = [Tick(sx(e), str(e)) for e in range(0, last + 1, step)]
    y_ticks = [Tick(sy(v), f"{v:g}") for v in (0, 0.25, 0.5, 0.75, 1.0)]
    return CurveChart(architecture, title, series, anneals, x_ticks, y_ticks)


def _scale(lo: float, hi: float, out_lo: float, out_hi: float):
    span = (hi - lo) or 1.0
    return lambda v: round(out_lo + (float(v) - lo) / span * (out_hi - out_lo), 2)


def _path(xy: list[tuple[float, float]]) -> str:
    return " ".join(f"{'M' if i == 0 else 'L'}{x},{y}" for i, (x, y) in enumerate(xy))


# ---------------------------------------------------------------- heatmaps

CELL, AXIS_LEFT, AXIS_TOP = 46, 70, 22

# viridis at five stops: perceptually even and readable in grey.
VIRIDIS = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]


@dataclass
class HeatCell:
    x: float
    y: float
    fill: str
    ink: str
    text: str
    value: float | None
    x_value: str
    y_value: str


@dataclass
class Heatmap:
    title: str
    row: str
    metric: str
    x_field: str
    y_field: str | None
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    cells: list[HeatCell]
    width: int
    height: int
    cell: int = CELL
    label_top: int = AXIS_TOP - 6  # baseline of the x labels, above the cells
    label_right: int = AXIS_LEFT - 6  # right edge of the y labels, left of the cells


@dataclass
class HeatGrid:
    """One (row, metric) grid of values keyed by (x value, y value) of the swept fields."""

    title: str
    row: str
    metric: str
    values: dict[tuple[str, str], tuple[float | None, str]] = field(default_factory=dict)


def heatmaps(grids: list[HeatGrid], x_field: str, y_field: str | None,
             order: tuple[list[str], list[str]] | None = None) -> list[Heatmap]:
    """Lay out grids that share their swept fields; one colour scale per metric (its min..max
    over every grid), so that grids of one metric compare across arms. ``order``: the x and
    y values in the order to draw them (default: numbers, then text, in order)."""
    if order:
        xs, ys = order
    else:
        xs = ordered({x for g in grids for x, _ in g.values})
        ys = ordered({y for g in grids for _, y in g.values}) if y_field else [""]
    ranges: dict[str, tuple[float, float]] = {}
    for g in grids:
        nums = [v for v, _ in g.values.values() if v is not None]
        if nums:
            lo, hi = ranges.get(g.metric, (min(nums), max(nums)))
            ranges[g.metric] = (min(lo, *nums), max(hi, *nums))
    out = []
    for g in grids:
        lo, hi = ranges.get(g.metric, (0.0, 1.0))
        cells = []
        for j, y in enumerate(ys):
            for i, x in enumerate(xs):
                value, text = g.values.get((x, y), (None, "-"))
                fill, ink = _colour(value, lo, hi)
                cells.append(HeatCell(AXIS_LEFT + i * CELL, AXIS_TOP + j * CELL, fill, ink, text,
                                      value, x, y))
        out.append(Heatmap(
            g.title, g.row, g.metric, x_field, y_field,
            [Tick(AXIS_LEFT + (i + 0.5) * CELL, x) for i, x in enumerate(xs)],
            [Tick(AXIS_TOP + (j + 0.5) * CELL, y) for j, y in enumerate(ys)] if y_field else [],
            cells, AXIS_LEFT + len(xs) * CELL + 4, AXIS_TOP + len(ys) * CELL + 4))
    return out


def _colour(value: float | None, lo: float, hi: float) -> tuple[str, str]:
    if value is None:
        return "#eeeeee", "#555555"
    # Values equal but for float rounding (a constant patch cost) get one colour, not two.
    t = 0.5 if math.isclose(hi, lo, abs_tol=1e-9) else (value - lo) / (hi - lo)
    pos = t * (len(VIRIDIS) - 1)
    i = min(int(pos), len(VIRIDIS) - 2)
    a, b = VIRIDIS[i], VIRIDIS[i + 1]
    rgb = [round(a[k] + (b[k] - a[k]) * (pos - i)) for k in range(3)]
    ink = "#000000" if t > 0.55 else "#ffffff"
    return "#{:02x}{:02x}{:02x}".format(*rgb), ink
