"""Epoch-by-epoch tables: one metric per leaderboard row and epoch, the mean over seeds.

``patchbench leaderboard RESULTS --epochs METRIC`` prints them: when a patch or a backdoor is
learned under each arm, as numbers rather than curves. Rows and their order are the
leaderboard's (``build_boards``); each cell averages the completed seeds that evaluated the
metric at that epoch. ``--epochs patch_cost`` shows the patch cost at every epoch: control −
patched of ``--cost-metric`` (default clean accuracy), paired by seed, averaged over the
seeds both evaluated at that epoch; its rows are the patched rows that have a control.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from ..errors import PatchbenchError
from .leaderboard import (DEFAULT_COST_METRIC, LABELS, Board, Row, arm_label, build_boards,
                          metric_meta)
from .record_check import completed
from .table import Column as TableColumn
from .table import Table


CAPTION = "mean ± std over completed seeds at each epoch (n: seeds)"


@dataclass
class EpochCell:
    values: list[float]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    def text(self) -> str:
        return f"{self.mean:.2f}" + ("" if self.std is None else f" ± {self.std:.2f}")


@dataclass
class EpochTable:
    board: Board
    metric: str
    short: str
    epochs: list[int]
    caption: str = CAPTION
    rows: list[tuple[Row, dict[int, EpochCell]]] = field(default_factory=list)

    @property
    def title(self) -> str:
        return f"{self.board.title}: {self.short} per epoch"


COST = "patch_cost"
"""The one name ``--epochs`` takes that is not a metric: the patch cost at each epoch."""


def cost_caption(short: str) -> str:
    return (f"control {short} − patched {short}, paired by seed: mean ± std over the completed "
            "seeds both evaluated at each epoch (n: seeds)")


def _by_epoch(record: dict, metric: str) -> dict[int, float]:
    return {int(h["epoch"]): float(h[metric]) for h in record["history"]
            if isinstance(h.get(metric), (int, float))}


def epoch_tables(records: list[dict], metric: str,
                 cost_metric: str | None = None) -> list[EpochTable]:
    """One table per benchmark spec; a one-line error when no record has the metric.
    ``metric`` may be ``patch_cost``: control − patched ``cost_metric`` per epoch."""
    done = completed(records)
    cost_metric = cost_metric or DEFAULT_COST_METRIC
    present = sorted({k for r in done for h in r["history"] for k, v in h.items()
                      if k != "epoch" and isinstance(v, (int, float))})
    if metric != COST and metric not in present:
        allowed = ", ".join(present + [COST]) if present else "(no completed trials)"
        raise PatchbenchError(f"--epochs: {metric!r} is not a metric in these results; "
                              f"allowed: {allowed}")
    if metric == COST and cost_metric not in present:
        raise PatchbenchError(f"--cost-metric: {cost_metric!r} is not a metric in these "
                              f"results; allowed: {', '.join(present) or '(no completed trials)'}")
    measured = cost_metric if metric == COST else metric
    short = metric_meta(done).get(measured, {}).get("short", measured)
    tables = []
    for board in build_boards(records):
        table = EpochTable(board, metric, short if metric != COST else f"patch cost ({short})",
                           [], cost_caption(short) if metric == COST else CAPTION)
        for row in board.rows:
            cells: dict[int, EpochCell] = {}
            if metric != COST:
                for r in _row_records(done, board, row):
                    for epoch, value in _by_epoch(r, metric).items():
                        cells.setdefault(epoch, EpochCell([])).values.append(value)
            elif row.patch != "none":
                controls = {r["seed"]: _by_epoch(r, cost_metric)
                            for r in _row_records(done, board, row, "none")}
                for r in _row_records(done, board, row):
                    control = controls.get(r["seed"], {})
                    for epoch, value in _by_epoch(r, cost_metric).items():
                        if epoch in control:
                            cells.setdefault(epoch, EpochCell([])).values.append(
                                control[epoch] - value)
            if cells:
                table.rows.append((row, dict(sorted(cells.items()))))
        table.epochs = sorted({e for _, cells in table.rows for e in cells})
        if table.rows:
            tables.append(table)
    if metric == COST and done and not tables:
        raise PatchbenchError(f"--epochs patch_cost: no patched trial has a completed control "
                              f"(patch none, same arm and seed) with {cost_metric} at one of "
                              "its epochs in these results")
    return tables


def _row_records(done: list[dict], board: Board, row: Row, patch: str | None = None
                 ) -> list[dict]:
    """The completed records of a board's row (or of its arm's row with ``patch``)."""
    patch = row.patch if patch is None else patch
    return [r for r in done if r["spec_hash"] == board.spec_hash
            and r["benchmark"] == board.benchmark
            and (r["architecture"], arm_label(r), r["patch"])
            == (row.architecture, row.arm, patch)]


def as_table(t: EpochTable) -> Table:
    """Rows as the leaderboard's, a column per epoch; a record per row and epoch."""
    columns = [TableColumn(name, numeric=False) for name in LABELS] + [TableColumn("n")]
    columns += [TableColumn(str(e)) for e in t.epochs]
    rows = [[row.architecture, row.arm, row.patch, str(max(len(c.values) for c in cells.values()))]
            + [cells[e].text() if e in cells else "-" for e in t.epochs]
            for row, cells in t.rows]
    data = [{"benchmark": t.board.benchmark, "version": t.board.version,
             "spec_hash": t.board.spec_hash, "architecture": row.architecture, "arm": row.arm,
             "patch": row.patch, "metric": t.metric, "epoch": epoch, "mean": cell.mean,
             "std": cell.std, "n": len(cell.values)}
            for row, cells in t.rows for epoch, cell in cells.items()]
    return Table(t.title, columns, rows, t.caption, data=data)
