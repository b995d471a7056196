"""Phase diagrams: one metric over two swept fields (or one), the mean over seeds in each cell.

``patchbench plot --heatmap X Y --metric M`` draws them and ``patchbench leaderboard --pivot
X Y`` prints them. The numbers are the leaderboard's: the records go through
``build_boards``, whose rows are the swept arms' variants, and each cell is the cell of one
row (patch cost paired by seed with the variant's own control, the learned epoch with its
seeds that never learned counted apart).

One phase diagram per benchmark spec, architecture, arm and patch (controls, ``none``,
included) whose variants carry both fields; ``--arm`` keeps one arm. A field is named by its
full path or by a trailing part of it that names one swept field of that arm (``lr`` for
``arms.small_lr.optimizer.lr``). Rows are X's values, columns Y's, in numeric order. Without Y
(an arm swept over one field) the diagram has one column, keyed ``""``. The report's heatmaps
are drawn from these diagrams too.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import PatchbenchError
from ..spec.sweep import base_arm, segments
from .leaderboard import Board, Cell, Measure, Row, build_boards, cell_text, header
from .table import Column as TableColumn
from .table import Table

LEARNED = "patch_learned_epoch"
EMPTY = object()
ALIASES = {"learned_epoch": LEARNED}
"""Metric names on the command line → the leaderboard's column ids."""


@dataclass
class PhaseCell:
    row: Row
    column: Measure

    @property
    def cell(self) -> Cell:
        return self.row.cells[self.column.id]

    @property
    def never(self) -> bool:
        """No seed learned: the learned epoch has no mean to show."""
        return self.column.id == LEARNED and self.cell.n == 0 and self.row.completed > 0

    def text(self, with_n: bool = True) -> str:
        """The leaderboard's cell text (``never``; ``2.5 ± 0.7 (2/3)`` when some seeds
        never learned), with the number of seeds."""
        text = cell_text(self.row, self.column, ci=False)
        if with_n and self.cell.n and "(" not in text:
            text += f" (n={self.cell.n})"
        return text


@dataclass
class Phase:
    board: Board
    architecture: str
    arm: str
    patch: str
    column: Measure
    x_field: str
    y_field: str | None
    """None for a sweep over one field: then ``ys`` is ``[""]``."""
    xs: list[str]
    ys: list[str]
    cells: dict[tuple[str, str], PhaseCell] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    """A value's text key (``value_key``) → the value as stored."""

    @property
    def title(self) -> str:
        return f"{self.board.benchmark} v{self.board.version} / {self.architecture} / " \
               f"{self.arm} / {self.patch}: {header(self.column)}"


def value_key(value: Any) -> str:
    """A swept value as text, the same for equal values (lists included)."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def ordered(values: set[str]) -> list[str]:
    """Numbers in numeric order, anything else in text order after them."""
    def key(text: str) -> tuple[int, float, str]:
        try:
            number = float(json.loads(text))
        except (ValueError, TypeError):
            return (1, 0.0, text)
        return (0, number if math.isfinite(number) else 0.0, text)
    return sorted(values, key=key)


def allowed_metrics(boards: list[Board]) -> list[str]:
    """Stored final metrics, then patch_cost and learned_epoch."""
    found: list[str] = []
    for b in boards:
        found += [c.id for c in b.columns if c.id not in found and c.id not in
                  (LEARNED, "patch_cost", "clean_at_anneal")]
    return found + ["patch_cost", "learned_epoch"]


def match_field(name: str, fields: list[str], flag: str) -> str | None:
    """The swept field ``name`` names: itself, or the one field it ends (on a segment);
    None when it names none of them."""
    if name in fields:
        return name
    want = segments(name)
    hits = [f for f in fields if segments(f)[-len(want):] == want]
    if len(hits) > 1:
        raise PatchbenchError(f"{flag}: {name!r} names several swept fields "
                              f"({', '.join(hits)}); give one in full")
    return hits[0] if hits else None


def phases(records: list[dict], x: str, y: str | None, metric: str, arm: str | None = None,
           flag: str = "--heatmap") -> list[Phase]:
    """The phase diagrams of ``metric`` over fields ``x`` (rows) and ``y`` (columns); with
    ``y`` None, over ``x`` alone (one column)."""
    boards = build_boards(records)
    if not boards:
        raise PatchbenchError(f"{flag}: no trial records in the given results")
    allowed = allowed_metrics(boards)
    if metric not in allowed:
        raise PatchbenchError(f"--metric: unknown metric {metric!r}; allowed: "
                              f"{', '.join(allowed)}")
    column_id = ALIASES.get(metric, metric)
    swept = sorted({f for b in boards for r in b.rows for f in r.sweep})
    if not swept:
        raise PatchbenchError(f"{flag}: these results hold no swept values (trials of a spec "
                              "with `sweep:` carry them)")
    arms = sorted({base_arm(r.arm) for b in boards for r in b.rows if r.sweep})
    if arm is not None and arm not in arms:
        raise PatchbenchError(f"--arm: no swept arm {arm!r}; allowed: {', '.join(arms)}")
    out: list[Phase] = []
    tried: list[Phase | object | None] = []
    for board in boards:
        column = next((c for c in board.columns if c.id == column_id), None)
        if column is None:
            continue
        groups: dict[tuple[str, str, str], list[Row]] = {}
        for row in board.rows:
            if row.sweep and (arm is None or base_arm(row.arm) == arm):
                groups.setdefault((row.architecture, base_arm(row.arm), row.patch),
                                  []).append(row)
        for (arch, name, patch), rows in groups.items():
            phase = _phase(board, arch, name, patch, rows, column, x, y, flag)
            tried.append(phase)
            if isinstance(phase, Phase):
                out.append(phase)
    over = f"{x} and {y}" if y is not None else x
    if not out and any(p is EMPTY for p in tried):
        hint = " (patch cost needs a control: `control: true` on the arm)" \
            if column_id == "patch_cost" else ""
        raise PatchbenchError(f"--metric: {metric} has no values over {over}{hint}")
    if not out:
        which = "arm " + repr(arm) if arm else "arm"
        what = f"both {x!r} and {y!r}" if y is not None else f"{x!r} alone"
        raise PatchbenchError(
            f"{flag}: no {which} is swept over {what}; swept fields: {', '.join(swept)}")
    return out


def _phase(board: Board, arch: str, arm: str, patch: str, rows: list[Row], column: Measure,
           x: str, y: str | None, flag: str) -> Phase | object | None:
    """The phase diagram of these rows; None when they are not swept over both fields (over
    ``x`` when ``y`` is None), EMPTY when they are but hold no value of the metric."""
    if patch == "none" and column.id in (LEARNED, "patch_cost"):
        return EMPTY  # a control learns no patch and has no patch cost
    fields = sorted({f for r in rows for f in r.sweep})
    fx = match_field(x, fields, flag)
    fy = match_field(y, fields, flag) if y is not None else None
    if fx is None or (y is not None and fy is None):
        return None
    if fx == fy:
        raise PatchbenchError(f"{flag}: {x!r} and {y!r} are the same field ({fx})")
    others = [f for f in fields if f not in (fx, fy)]
    if others:
        over = "two fields: give two of " if y is not None else \
            "the fields its arm is swept over: give " + ("two of " if len(fields) > 2 else "")
        raise PatchbenchError(f"{flag}: {arm} is also swept over {', '.join(others)}; a phase "
                              f"diagram is over {over}" + ", ".join(fields))
    phase = Phase(board, arch, arm, patch, column, fx, fy, [], [])
    for row in rows:
        if fx not in row.sweep or (fy is not None and fy not in row.sweep):
            continue
        kx = value_key(row.sweep[fx])
        ky = value_key(row.sweep[fy]) if fy is not None else ""
        phase.values[kx] = row.sweep[fx]
        phase.values[ky] = row.sweep[fy] if fy is not None else None
        phase.cells[(kx, ky)] = PhaseCell(row, column)
    if not any(c.cell.n or c.never for c in phase.cells.values()):
        return EMPTY  # e.g. patch cost of a control: nothing to show
    phase.xs = ordered({kx for kx, _ in phase.cells})
    phase.ys = ordered({ky for _, ky in phase.cells})
    return phase


# ---------------------------------------------------------------- tables

CAPTION = ("rows: {x}; columns: {y}; cells: mean ± std over completed seeds at the final "
           "epoch (n seeds); learned epoch: the mean over the seeds that learned, (k/n) when "
           "only k of n did, never when none did")


def as_table(phase: Phase) -> Table:
    """Rows X's values, columns Y's; a record per cell."""
    corner = phase.x_field if phase.y_field is None else f"{phase.x_field} \\ {phase.y_field}"
    columns = [TableColumn(corner, numeric=False)]
    columns += [TableColumn(y, higher_is_better=phase.column.higher_is_better) for y in phase.ys]
    rows = [[x] + [phase.cells[(x, y)].text() if (x, y) in phase.cells else "-"
                   for y in phase.ys] for x in phase.xs]
    data = []
    for (kx, ky), c in phase.cells.items():
        d = c.cell.as_dict()
        data.append({"benchmark": phase.board.benchmark, "version": phase.board.version,
                     "spec_hash": phase.board.spec_hash, "architecture": phase.architecture,
                     "arm": phase.arm, "variant": c.row.arm, "patch": phase.patch,
                     "metric": phase.column.id, "x_field": phase.x_field,
                     "x": phase.values[kx], "y_field": phase.y_field, "y": phase.values[ky],
                     "mean": d["mean"], "std": d["std"], "n": d["n"],
                     "completed": c.row.completed,
                     "never": c.row.never_learned if phase.column.id == LEARNED else None})
    return Table(phase.title, columns, rows, CAPTION.format(x=phase.x_field, y=phase.y_field),
                 data=data)
