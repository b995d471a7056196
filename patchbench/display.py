"""Rich output: live training progress and the result table."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.table import Table

from .results import Cell

console = Console(stderr=True)
SHORT = {"clean_acc": "clean", "mixed_acc": "mixed", "patch_only_acc": "patch-only",
         "patch_follow_rate": "follow", "conflict_clean_acc": "conflict-clean"}


def make_progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                    console=console, transient=False)


def epoch_info(row: dict[str, Any]) -> str:
    parts = [f"loss {row['train_loss']:.3f}"]
    parts += [f"{SHORT.get(k, k)} {v:.3f}" for k, v in row.items()
              if k not in ("epoch", "lr", "train_loss", "train_acc", "time_s")
              and isinstance(v, float)]
    return f"epoch {row['epoch']}: " + ", ".join(parts)


def result_table(title: str, rows: list[dict[str, Any]], metrics: list[str],
                 higher_is_better: dict[str, bool]) -> Table:
    table = Table(title=title)
    for col in ("architecture", "arm", "patch", "n"):
        table.add_column(col)
    for m in metrics:
        arrow = "↑" if higher_is_better.get(m, True) else "↓"
        table.add_column(f"{SHORT.get(m, m)} {arrow}", justify="right")
    table.add_column("patch learned (epoch)", justify="right")
    table.add_column("patch cost ↓", justify="right")
    for row in rows:
        learned: Cell | None = row.get("patch_learned_epoch")
        learned_text = "never" if learned is None else learned.text(1)
        if row["patch"] == "none":
            learned_text = "-"
        cost: Cell | None = row.get("patch_cost")
        n = str(row["n"]) + (f" ({row['failed']} failed)" if row["failed"] else "")
        table.add_row(row["architecture"], row["arm"], row["patch"], n,
                      *[row[m].text() for m in metrics], learned_text,
                      cost.text() if cost else "-")
    return table
