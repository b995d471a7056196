"""Epoch-by-epoch tables: one metric per leaderboard row and epoch, the mean over seeds.

``patchbench leaderboard RESULTS --epochs METRIC`` prints them: when a patch or a backdoor is
learned under each arm, as numbers rather than curves. Rows and their order are the
leaderboard's (``build_boards``); each cell averages the completed seeds that evaluated the
metric at that epoch.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from ..errors import PatchbenchError
from .leaderboard import LABELS, Board, Row, arm_label, build_boards, metric_meta
from .record_check import completed
from .table import Column as TableColumn
from .table import Table


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
    rows: list[tuple[Row, dict[int, EpochCell]]] = field(default_factory=list)

    @property
    def title(self) -> str:
        return f"{self.board.title}: {self.short} per epoch"


CAPTION = "mean ± std over completed seeds at each epoch (n: seeds)"


def epoch_tables(records: list[dict], metric: str) -> list[EpochTable]:
    """One table per benchmark spec; a one-line error when no record has the metric."""
    done = completed(records)
    present = sorted({k for r in done for h in r["history"] for k, v in h.items()
                      if k != "epoch" and isinstance(v, (int, float))})
    if metric not in present:
        raise PatchbenchError(f"--epochs: {metric!r} is not a metric in these results; "
                              f"allowed: {', '.join(present) or '(no completed trials)'}")
    short = metric_meta(done).get(metric, {}).get("short", metric)
    tables = []
    for board in build_boards(records):
        table = EpochTable(board, metric, short, [])
        for row in board.rows:
            recs = [r for r in done if r["spec_hash"] == board.spec_hash and r["benchmark"]
                    == board.benchmark and (r["architecture"], arm_label(r), r["patch"])
                    == (row.architecture, row.arm, row.patch)]
            cells: dict[int, EpochCell] = {}
            for r in recs:
                for h in r["history"]:
                    if isinstance(h.get(metric), (int, float)):
                        cells.setdefault(int(h["epoch"]), EpochCell([])).values.append(
                            float(h[metric]))
            if cells:
                table.rows.append((row, dict(sorted(cells.items()))))
        table.epochs = sorted({e for _, cells in table.rows for e in cells})
        if table.rows:
            tables.append(table)
    return tables


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
    return Table(t.title, columns, rows, CAPTION, data=data)
