"""Epoch-by-epoch tables: one metric per leaderboard row and epoch, the mean over seeds.

``patchbench leaderboard RESULTS --epochs METRIC`` prints them: when a patch or a backdoor is
learned under each arm, as numbers rather than curves. Rows and their order are the
leaderboard's (``build_boards``); each cell averages the completed seeds that evaluated the
metric at that epoch.
"""

from __future__ import annotations

import csv
import html
import io
import json
import statistics
from dataclasses import dataclass, field

from ..errors import PatchbenchError
from .leaderboard import Board, Row, arm_label, build_boards, metric_meta
from .record_check import completed
from .table import markdown, page


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


def _grid(t: EpochTable) -> tuple[list[str], list[list[str]]]:
    head = ["architecture", "arm", "patch", "n"] + [str(e) for e in t.epochs]
    body = [[row.architecture, row.arm, row.patch,
             str(max(len(c.values) for c in cells.values()))]
            + [cells[e].text() if e in cells else "-" for e in t.epochs]
            for row, cells in t.rows]
    return head, body


def to_markdown(tables: list[EpochTable]) -> str:
    out = []
    for t in tables:
        out += markdown(t.title, *_grid(t), CAPTION)
    return "\n".join(out)


def long_rows(tables: list[EpochTable]) -> list[dict]:
    """One dict per row and epoch, for CSV and JSON."""
    return [{"benchmark": t.board.benchmark, "version": t.board.version,
             "spec_hash": t.board.spec_hash, "architecture": row.architecture, "arm": row.arm,
             "patch": row.patch, "metric": t.metric, "epoch": epoch, "mean": cell.mean,
             "std": cell.std, "n": len(cell.values)}
            for t in tables for row, cells in t.rows for epoch, cell in cells.items()]


def to_csv(tables: list[EpochTable]) -> str:
    rows = long_rows(tables)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)
    return buf.getvalue()


def to_json(tables: list[EpochTable]) -> str:
    return json.dumps(long_rows(tables), indent=1)


def to_html(tables: list[EpochTable]) -> str:
    e = html.escape
    parts = []
    for t in tables:
        head, body = _grid(t)
        parts.append(f"<h2>{e(t.title)}</h2><table><caption>{e(CAPTION)}</caption><thead><tr>"
                     + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr></thead><tbody>")
        parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>"
                  for cells in body]
        parts.append("</tbody></table>")
    return page("patchbench: per epoch", parts)


def to_rich(t: EpochTable):
    from rich.markup import escape
    from rich.table import Table

    head, body = _grid(t)
    table = Table(title=escape(t.title), caption=CAPTION)
    for i, h in enumerate(head):
        table.add_column(escape(h), justify="right" if i >= 3 else "left")
    for cells in body:
        table.add_row(*map(escape, cells))
    return table


RENDERERS = {"md": to_markdown, "csv": to_csv, "json": to_json, "html": to_html}
