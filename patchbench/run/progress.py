"""Live training progress on stderr: the grid's bar and one line per running trial."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

from ..results.leaderboard import SHORT
from .records import now

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


class GridProgress:
    """The grid's bar with its ETA, and one line per running trial (epoch, last metrics).

    Fed by the trials' events (:mod:`patchbench.run.jobs`), whichever executor runs them, so a local
    grid and one on a Ray cluster look the same; logs get one line per epoch instead."""

    def __init__(self, trials: int, code_hash: str):
        self.progress = make_progress()
        self.grid = self.progress.add_task("grid", total=trials, info="")
        self.code_hash = code_hash
        self.running: dict[str, int] = {}
        self.started: dict[str, str] = {}
        self.queue_info = ""

    def __enter__(self) -> "GridProgress":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def started_at(self, key: str) -> str | None:
        return self.started.get(key)

    def event(self, event: dict[str, Any]) -> None:
        key, kind = event["key"], event["type"]  # keys of swept arms hold [..]: escape them
        if kind == "queue":
            self._queue(event)
            return
        if kind == "start":
            self._start(key, event)
            return
        task = self.running.get(key)
        if task is None:
            return
        if kind == "steps":
            self.progress.update(task, completed=event["done"], total=event["total"])
        elif kind == "epoch":
            info = epoch_info(event["row"])
            self.progress.update(task, info=info)
            if not console.is_terminal:  # logs get one line per epoch instead of a bar
                console.print(f"{escape(key)}: {info}", soft_wrap=True)

    def _queue(self, event: dict[str, Any]) -> None:
        """A scheduler's counts (Slurm): how many of the unfinished trials wait in its queue
        and how many run; logs get a line when they change."""
        info = f"{event['queued']} queued, {event['running']} running"
        if info == self.queue_info:
            return
        self.queue_info = info
        self.progress.update(self.grid, info=info)
        if not console.is_terminal:
            console.print(f"queue: {info}", soft_wrap=True)

    def _start(self, key: str, event: dict[str, Any]) -> None:
        if key in self.running:  # a retry after its worker died
            self.progress.remove_task(self.running.pop(key))
            console.print(f"[yellow]{escape(key)}: started again on {event['host']}[/]",
                          soft_wrap=True)
        self.started.setdefault(key, now())
        self.running[key] = self.progress.add_task(f"  {escape(key)}", total=None, info="")
        resumed = event.get("resumed_after_epoch")
        if resumed is not None:
            console.print(f"{escape(key)}: resuming after epoch {resumed}", soft_wrap=True)
        other = event.get("resumed_from_code")
        if other is not None:
            console.print(f"[yellow]{escape(key)}: its checkpoint was written by other code "
                          f"(source {other}, now {self.code_hash}); the record says so. Use --force "
                          "to train it from scratch.[/]", soft_wrap=True)

    def finish(self, key: str) -> None:
        task = self.running.pop(key, None)
        if task is not None:
            self.progress.remove_task(task)
        self.progress.advance(self.grid)
