"""Trackers: send a grid's results where a lab already watches its runs (TensorBoard, MLflow,
Weights & Biases, or a plugin's Comet, Neptune, Aim).

A tracker is fed by the driver, in the driver's process, from the events trials report and
the records it stores, never from inside the training loop: so it works the same whichever
executor trains (local, Ray), and a slow or failing tracker costs no training time and no
record. All calls to one tracker come from one thread, in order: :meth:`Tracker.open`, then
for each trial :meth:`~Tracker.start_trial`, :meth:`~Tracker.log_epoch` per epoch (in epoch
order, but a resumed trial's earlier epochs may come after its later ones, when its record
arrives), :meth:`~Tracker.finish_trial`; trials interleave under an executor that trains
several at once; :meth:`~Tracker.close` last. ``patchbench track`` replays stored records
through the same calls, after asking :meth:`~Tracker.has_trial`.
"""

from __future__ import annotations

import hashlib
import importlib
from abc import abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .errors import PatchbenchError
from .kinds import Component

ParamValue = str | int | float | bool


@dataclass(frozen=True)
class TrackingContext:
    """What a tracker is told once, before any trial."""

    out_dir: Path
    """The grid's output directory (or the replayed results' directory): where a tracker
    that keeps local files writes them by default."""
    spec_hash: str | None = None
    """The grid's spec hash; None on a replay, which may hold several."""
    previews: dict[str, Path] = field(default_factory=dict)
    """Patch generator name → a PNG of what the model sees (clean, patched, patch only);
    empty on a replay or for a dataset of vectors."""


@dataclass(frozen=True)
class TrackedTrial:
    """One trial as a tracker sees it: its identity, its provenance and its params."""

    key: str
    benchmark: str
    version: str
    spec_hash: str
    source_hash: str
    started_at: str
    """When the driver saw it start (the record's ``started_at``): a new training of the
    same trial (``--force``, a resume after a failure) is a new tracked run."""
    params: dict[str, ParamValue] = field(default_factory=dict)
    """The trial's resolved spec flattened (``training.batch_size``, ``arm.optimizer.lr``,
    ``seed``, ...); lists and null as JSON text."""

    @property
    def run_id(self) -> str:
        """A stable id of this training of this trial (hex, 32 characters): a tracker tags
        its run with it, so that a replay finds the run and adds no second one."""
        text = f"{self.spec_hash}/{self.key}/{self.started_at}"
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    @property
    def tags(self) -> dict[str, str]:
        """What every tracker tags a run with (W&B: as config and tags)."""
        return {"patchbench.trial_key": self.key, "patchbench.spec_hash": self.spec_hash,
                "patchbench.source_hash": self.source_hash,
                "patchbench.benchmark": f"{self.benchmark} v{self.version}",
                "patchbench.started_at": self.started_at, "patchbench.run": self.run_id}


class Tracker(Component):
    """Sends trials' params, per-epoch metrics and final results to an experiment tracker.

    Every method runs in the driver's process, on the tracking thread (never in the training
    loop). An exception from any of them is the tracker's failure: the run warns once,
    naming it, stops feeding it and goes on; the store does not depend on it. Build nothing
    and connect to nothing in ``__init__`` (the registry builds every component with its
    default params to check it): do that in :meth:`open`."""

    kind = "trackers"
    extra: ClassVar[str | None] = None
    """The optional extra that installs :attr:`requires` (``mlflow``:
    ``pip install 'patchbench[mlflow]'``); None for a plugin's own dependencies."""
    requires: ClassVar[tuple[str, ...]] = ()
    """Modules the tracker imports; :meth:`check` says which one is missing."""

    def check(self) -> None:
        """Raise :class:`PatchbenchError` when the tracker cannot run here (a package is
        missing); called before the grid trains, so that the mistake costs no training."""
        for module in self.requires:
            try:
                importlib.import_module(module)
            except ImportError:
                how = f"pip install 'patchbench[{self.extra}]'" if self.extra \
                    else f"install {module}"
                raise PatchbenchError(f"tracker {self.name!r} needs the {module} package, "
                                      f"which is not installed: {how}") from None

    def open(self, ctx: TrackingContext) -> None:
        """Called once before any trial: connect, create directories, log the previews."""

    @abstractmethod
    def start_trial(self, trial: TrackedTrial) -> None:
        """A trial started: create its run (named by ``trial.key``, tagged with
        ``trial.tags``) with ``trial.params``."""

    @abstractmethod
    def log_epoch(self, trial: TrackedTrial, row: dict[str, Any]) -> None:
        """One epoch's row: ``epoch`` (the step), ``lr``, ``train_loss``, each evaluated
        metric by its key (a metric may be None: undefined or not evaluated that epoch),
        ``time_s`` (since the trial started) and ``epoch_time_s``."""

    @abstractmethod
    def finish_trial(self, trial: TrackedTrial, record: dict[str, Any],
                     files: dict[str, Path]) -> None:
        """The trial's record is stored: its ``status`` (completed, diverged, failed),
        ``summary`` (``final`` metrics, ``peak``, ``patch_learned_epoch``, ...),
        ``train_images_per_s``, ``wall_time_s``. ``files``: ``curves``, a PNG of its learning
        curves, where it has any. Close the run."""

    @abstractmethod
    def has_trial(self, trial: TrackedTrial) -> bool:
        """Whether the tracker already holds the finished run of this training of the
        trial (its ``trial.run_id``): a replay then skips it."""

    def close(self) -> None:
        """Called once after the last trial (also after an interrupt): flush, disconnect."""



ROW_NAMES = {"train_loss": "train/loss", "lr": "train/lr", "time_s": "time/elapsed_s",
             "epoch_time_s": "time/epoch_s"}
"""How a history row's own fields are named in trackers; each metric is ``eval/<key>``."""


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def epoch_scalars(row: dict[str, Any]) -> dict[str, float]:
    """An epoch's numbers by the names every built-in tracker logs them under (the step is
    ``row["epoch"]``); a metric without a value that epoch is left out."""
    out = {}
    for key, value in row.items():
        number = _number(value)
        if key != "epoch" and number is not None:
            out[ROW_NAMES.get(key, f"eval/{key}")] = number
    return out


def final_scalars(record: dict[str, Any]) -> dict[str, float]:
    """A record's results as final numbers: ``final/<metric>``, ``peak/<metric>``,
    ``learned_epoch`` (where the pattern was learned), ``train/images_per_s`` (training
    throughput, evaluation excluded) and ``time/wall_s``."""
    summary = record.get("summary") or {}
    out = {}
    for group in ("final", "peak"):
        for key, value in (summary.get(group) or {}).items():
            number = _number(value)
            if number is not None:
                out[f"{group}/{key}"] = number
    for name, value in (("learned_epoch", summary.get("patch_learned_epoch")),
                        ("train/images_per_s", record.get("train_images_per_s")),
                        ("time/wall_s", record.get("wall_time_s"))):
        number = _number(value)
        if number is not None:
            out[name] = number
    return out
