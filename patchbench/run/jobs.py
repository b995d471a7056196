"""The seam between the driver and where trials run: a job, and running one here.

The driver (:mod:`patchbench.run.driver`) plans the grid, decides what to skip or resume, writes the store and
draws progress. An executor takes :class:`TrialJob` s, each a self-contained description of
one trial (the resolved spec, the trial, its checkpoint path and the code hash), runs them
wherever it runs them and yields ``(job, result)`` in completion order. Trials report
progress as plain-dict events through a callback, so the same events reach the driver from
this process or from a Ray worker on another machine.

Events: ``{"type": "start", "key", "host", "pid", "resumed_after_epoch",
"resumed_from_code"}``, ``{"type": "steps", "key", "done", "total"}`` (throttled) and
``{"type": "epoch", "key", "row"}`` after each epoch's checkpoint is written. An executor
with a queue of its own (Slurm) also sends ``{"type": "queue", "key": "", "queued",
"running"}``, the counts of the trials it waits for.
"""

from __future__ import annotations

import importlib
import os
import socket
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import torch

from ..components import DataBundle
from ..errors import NoSpace, PatchbenchError
from ..plugins import Registry, get_registry
from ..spec import ComponentRef, Spec, Trial
from ..train.crafting import craft_poison
from ..train.trainer import TrialResult, train_trial

Report = Callable[[dict[str, Any]], None]
STEP_EVENT_INTERVAL_S = 0.5


@dataclass(frozen=True)
class TrialJob:
    """Everything needed to run one trial anywhere: plain, picklable data."""

    spec: Spec
    trial: Trial
    checkpoint: Path
    code_hash: str
    executor: str
    device: str
    """The device setting the trial resolves where it runs (``auto``, ``cpu``, ``cuda``)."""
    threads: int | None
    """Torch threads; None: every core the process may use."""
    artifacts: dict[str, str] = field(default_factory=dict)
    """Crafted poisons the trial uses: patch name → artifact path."""
    fresh: bool = False
    """Trained from its start (``--force``): an executor must not hand back a result that an
    earlier run's job produced for it (Slurm's jobs outlive a killed driver)."""

    @property
    def key(self) -> str:
        return self.trial.key


@dataclass(frozen=True)
class CraftJob:
    """One poison to craft, anywhere: its spec reference and where its artifact goes."""

    ref: ComponentRef
    path: Path
    device: str
    threads: int | None
    dataset: ComponentRef | None = None
    """The dataset to craft on, for executors whose workers load it themselves (Slurm)."""


def execute_craft(job: CraftJob, data: DataBundle, device: torch.device, report: Report,
                  registry: Registry | None = None) -> dict[str, Any]:
    """Craft one poison where this process is (``data`` on ``device``); its metadata.
    Progress reaches ``report`` as ``{"type": "craft", "patch", "done", "total"}``."""
    def progress(done: int, total: int) -> None:
        report({"type": "craft", "patch": job.ref.name, "done": done, "total": total})
    return craft_poison(job.ref, data, device, registry or get_registry(), job.path, progress)


def execute_job(job: TrialJob, data: DataBundle, device: torch.device, report: Report,
            registry: Registry | None = None) -> TrialResult:
    """Run one trial where this process is; ``data`` must be on ``device``; ``registry``
    defaults to this process's plugins.

    An exception is the trial's failure, recorded with its traceback: the grid goes on. A
    Ctrl-C or a killed process leaves the last epoch checkpoint for a resume."""
    spec, trial = job.spec, job.trial
    where = {"executor": job.executor, "host": socket.gethostname(), "device": str(device),
             "threads": torch.get_num_threads()}
    steps_per_epoch = spec.training.steps_per_epoch(len(data.y_train))
    steps_total = spec.training.epochs * steps_per_epoch
    last = [0.0]

    def on_step(epoch: int, step: int, loss: float | None) -> None:
        now = time.monotonic()
        if now - last[0] >= STEP_EVENT_INTERVAL_S:
            last[0] = now
            done = (epoch - 1) * steps_per_epoch + step
            report({"type": "steps", "key": trial.key, "done": done, "total": steps_total})

    def on_epoch(row: dict[str, Any]) -> None:
        report({"type": "epoch", "key": trial.key, "row": row})

    def on_start(resumed_after: int | None, resumed_from: str | None) -> None:
        report({"type": "start", "key": trial.key, "host": where["host"], "pid": os.getpid(),
                "resumed_after_epoch": resumed_after, "resumed_from_code": resumed_from})

    try:
        result = train_trial(spec, trial, data, device, registry or get_registry(), on_step,
                             on_epoch, job.checkpoint, job.code_hash, on_start, job.artifacts)
    except NoSpace:  # the disk is full: every further trial would fail the same way
        raise
    except Exception as exc:  # one broken trial must not cost the rest of the grid
        result = TrialResult(trial, "failed", error=f"{type(exc).__name__}: {exc}")
        if not isinstance(exc, PatchbenchError):  # a bug keeps its traceback
            result.traceback = traceback.format_exc()
    result.where = where
    return result


class Executor(Protocol):
    name: str

    def job_settings(self) -> dict[str, Any]:
        """``device`` and ``threads`` for the jobs, as trials will resolve them."""

    def execute(self, jobs: list[TrialJob], data: DataBundle, report: Report
                ) -> Iterator[tuple[TrialJob, TrialResult]]:
        """Run ``jobs`` (``data`` on the CPU); yield each result as it completes."""

    def craft(self, job: CraftJob, data: DataBundle, report: Report) -> dict[str, Any]:
        """Craft one poison on the executor's resources (``data`` on the CPU); its metadata."""


def import_extra(module: str, executor: str, package: str, spec_path: str) -> Any:
    """The module an executor runs on, or one line naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise PatchbenchError(f"{spec_path}: execution.executor: {executor!r} needs {package}, "
                              f"which is not installed; install the extra: pip install "
                              f"'patchbench[{executor}]'") from None
