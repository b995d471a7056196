"""Slurm's own commands, for what submitit leaves to its user: whether they are here, the
queue's view of a run's jobs (``squeue``) and cancelling them (``scancel``).

submitit learns a job's state from ``sacct``, which needs Slurm's accounting database; many
small clusters (and the one-node Slurm of the tests) run without one. ``squeue`` answers
from the controller itself, and ``--states=all`` keeps a finished job in view for
``MinJobAge`` (300 s by default), long enough to tell how a job that left no result ended.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Iterable

COMMANDS = ("sbatch", "srun", "squeue", "scancel")
"""What the executor runs: submitit submits with sbatch and starts each job's Python with
srun; the driver follows the jobs with squeue and cancels them with scancel."""
ACTIVE = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED",
                    "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SIGNALING",
                    "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD", "SPECIAL_EXIT"})
"""States of a job that may still run or write: a COMPLETING job's processes may be alive
(they get SIGKILL only KillWait seconds after SIGTERM), so it counts as active."""
TIMEOUT_S = 60


@dataclass(frozen=True)
class JobState:
    state: str
    """Slurm's state name: PENDING, RUNNING, COMPLETED, CANCELLED, TIMEOUT, ..."""
    node: str
    """Where it runs or ran; empty while it waits."""
    reason: str
    """Why it waits (Priority, Resources, BeginTime, ...); ``None`` when it does not."""

    @property
    def active(self) -> bool:
        return self.state in ACTIVE


def missing_commands() -> list[str]:
    """The Slurm commands the executor needs that are not on PATH."""
    return [c for c in COMMANDS if shutil.which(c) is None]


def queue(job_ids: Iterable[str]) -> dict[str, JobState] | None:
    """Slurm's view of these jobs (array tasks as ``123_4``), finished ones included while
    the controller remembers them. None when squeue fails (a controller that does not
    answer for a moment must not make every job look lost); a job missing from the answer
    is one the controller has forgotten."""
    wanted = set(job_ids)
    if not wanted:
        return {}
    # By user, not by -j: squeue -j fails outright when one of the ids has been purged.
    try:
        done = subprocess.run(["squeue", "--noheader", "--array", "--states=all",
                               f"--user={os.getuid()}", "--format=%i|%T|%N|%r"],
                              capture_output=True, text=True, timeout=TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    states: dict[str, JobState] = {}
    for line in done.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 4 and parts[0] in wanted:
            states[parts[0]] = JobState(parts[1], parts[2], parts[3])
    return states


def refusal(flags: list[str]) -> str | None:
    """Why sbatch would refuse a job with these options (an unknown partition, account or
    QOS, a time over the partition's limit, more CPUs than a node has), else None:
    ``sbatch --test-only`` asks the controller without submitting anything."""
    try:
        done = subprocess.run(["sbatch", "--test-only", *flags], input="#!/bin/sh\ntrue\n",
                              capture_output=True, text=True, timeout=TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"sbatch --test-only: {exc}"
    if done.returncode == 0:
        return None
    errors = [line.split("error:", 1)[1].strip() for line in done.stderr.splitlines()
              if "error:" in line]
    return (errors or [done.stderr.strip() or f"exit status {done.returncode}"])[0]


def cancel(job_ids: Iterable[str]) -> str | None:
    """Kill and cancel these jobs; what scancel said when it failed, else None. A job that
    has ended already is not a failure."""
    ids = sorted(set(job_ids))
    if not ids:
        return None
    try:
        # SIGKILL to every process of the jobs first: a plain scancel sends SIGTERM, which
        # submitit's jobs ignore, and the processes live on for KillWait (30 s on most
        # clusters) while Slurm already calls the jobs CANCELLED. Checkpoints are written
        # atomically, so a kill mid-write leaves the previous one whole.
        subprocess.run(["scancel", "--signal=KILL", "--full", *ids], capture_output=True,
                       timeout=TIMEOUT_S)
        done = subprocess.run(["scancel", *ids], capture_output=True, text=True,
                              timeout=TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"scancel: {exc}"
    lines = [line for line in done.stderr.splitlines()
             if "already completing or completed" not in line
             and "Invalid job id" not in line and line.strip()]
    return "; ".join(lines) or None if done.returncode != 0 else None
