"""What each Slurm job runs: one trial (or one poison to craft), on the node Slurm picked.

A job reads the dataset itself from the data directory (``$PATCHBENCH_DATA_DIR`` or the
dataset's ``data_dir``, exported from the driver's environment by sbatch), so that
directory must be on a file system every node shares, like ``--out``, where the job writes
its epoch checkpoints and its events. It loads its own plugins: the packages installed
where it runs, with the ones blocked in the driver's environment blocked here too.

Progress reaches the driver through a file: every event of the trial (start, steps at most
every :data:`STEP_EVENT_INTERVAL_S`, each epoch's row) is appended as a JSON line to
``events.jsonl`` in the job's submitit folder, which the driver reads as it polls.
"""

from __future__ import annotations

import json
import os
import socket
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit
import torch

from ..boundary import load_dataset
from ..components import DataBundle
from ..errors import NoSpace, PatchbenchError
from ..plugins import get_registry
from ..spec import ComponentRef
from ..train.runtime import configure, pick_device
from ..train.trainer import TrialResult
from .jobs import CraftJob, TrialJob, execute_craft, execute_job

EVENTS = "events.jsonl"
STEP_EVENT_INTERVAL_S = 2.0
"""Step events are for the progress bar: on a shared file system, one line every few
seconds is enough."""


@dataclass
class TaskOutcome:
    """What a trial's job returns: its result, or that the disk is full (which ends the
    run, as it does locally, instead of failing trial after trial)."""

    result: TrialResult | None = None
    no_space: str | None = None


@dataclass
class CraftOutcome:
    """What a crafting job returns: the artifact's metadata, or a bad-input message."""

    meta: dict[str, Any] | None = None
    bad_input: str | None = None


def slurm_where() -> dict[str, str]:
    """This job's id (``123_4`` for an array task) and node, for the record."""
    env = submitit.JobEnvironment()
    return {"slurm_job_id": env.job_id,
            "slurm_node": os.environ.get("SLURMD_NODENAME", socket.gethostname())}


class EventFile:
    """Appends the trial's progress events, one JSON line each, flushed at once."""

    def __init__(self, path: Path, job_id: str):
        self.path, self.job_id, self.last_steps = path, job_id, 0.0

    def __call__(self, event: dict[str, Any]) -> None:
        if event["type"] == "steps":
            now = time.monotonic()
            if now - self.last_steps < STEP_EVENT_INTERVAL_S:
                return
            self.last_steps = now
        if event["type"] == "start":
            event = {**event, "slurm_job_id": self.job_id}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(event) + "\n")


def load_data(dataset: ComponentRef) -> DataBundle:
    return load_dataset(get_registry().build("datasets", dataset.name, dataset.params))


def failed_before_training(job: TrialJob, exc: Exception) -> TrialResult:
    """The trial's failure when its job could not even start it: bad input as one line, a
    bug with its traceback, as :func:`~patchbench.run.jobs.execute_job` records them."""
    result = TrialResult(job.trial, "failed", error=f"{type(exc).__name__}: {exc}")
    if not isinstance(exc, PatchbenchError):
        result.traceback = traceback.format_exc()
    result.where = {"executor": job.executor, "host": socket.gethostname(),
                    "device": job.device, "threads": torch.get_num_threads()}
    return result


class SlurmTrial(submitit.helpers.Checkpointable):
    """One trial as a Slurm job.

    Checkpointable: on Slurm's signal before the time limit (or a preemption's), submitit
    calls its ``checkpoint``, which hands back this same trial (the progress is on disk, not
    in this object), and requeues the job; without it, submitit would not requeue a job that
    timed out. The requeued job resumes from the trial's last epoch checkpoint, which the
    trainer writes after every epoch: the epoch in progress is trained again from the same
    random state, so the numbers are those of an uninterrupted run."""

    def __call__(self, job: TrialJob) -> TaskOutcome:
        where = slurm_where()
        report = EventFile(submitit.JobEnvironment().paths.folder / EVENTS,
                           where["slurm_job_id"])
        configure(job.threads, job.spec.training.deterministic)
        try:
            device = pick_device(job.device)
            data = load_data(job.spec.dataset).to(device)
        except NoSpace as exc:
            return TaskOutcome(no_space=str(exc))
        except Exception as exc:  # no GPU on this node, no data directory here, ...
            result = failed_before_training(job, exc)
        else:
            try:
                result = execute_job(job, data, device, report)
            except NoSpace as exc:
                return TaskOutcome(no_space=str(exc))
        result.where.update(where)
        return TaskOutcome(result)


def craft_task(job: CraftJob) -> CraftOutcome:
    """One poison crafted as a Slurm job; bad input comes back as its message, a bug as the
    job's traceback."""
    if job.dataset is None:
        raise ValueError("a crafting job for Slurm needs its dataset")
    configure(job.threads, True)
    device = pick_device(job.device)
    try:
        return CraftOutcome(meta=execute_craft(job, load_data(job.dataset).to(device), device,
                                               lambda event: None))
    except PatchbenchError as exc:
        return CraftOutcome(bad_input=str(exc))
