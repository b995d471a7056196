"""Rich output: live training progress and leaderboard tables."""

from __future__ import annotations

from typing import Any, TextIO

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

from .leaderboard import SHORT, Board, to_rich

console = Console(stderr=True)


def make_progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                    console=console, transient=False)


def epoch_info(row: dict[str, Any]) -> str:
    parts = [f"loss {row['train_loss']:.3f}"]
    parts += [f"{SHORT.get(k, k)} {v:.3f}" for k, v in row.items()
              if k not in ("epoch", "lr", "train_loss", "time_s")
              and isinstance(v, float)]
    return f"epoch {row['epoch']}: " + ", ".join(parts)


def print_boards(boards: list[Board], ci: bool = False, file: TextIO | None = None) -> None:
    """Leaderboards on stdout (or ``file``), wide enough not to wrap the columns."""
    out = Console(file=file, width=max(Console().width, 150))
    for board in boards:
        if board.note:
            out.print(f"[yellow]note: {board.note}[/]")
        out.print(to_rich(board, ci))
