"""Trials as Slurm jobs, through submitit: one job per trial, the grid as one job array.

The driver stays the only writer of the result store: it submits the array, then polls
(the jobs' result files every :data:`POLL_S`, ``squeue`` every :data:`QUEUE_POLL_S`) and
hands each result over as it arrives, in completion order. Each job loads the dataset
itself from the data directory and writes its epoch checkpoints under ``--out``: both must
be on a file system every node shares (:mod:`patchbench.run.slurm_task`).

What the driver keeps under ``<out>/slurm/<spec hash>/``: ``jobs.json``, which trial went to
which job (a driver that was killed is rerun to collect the jobs still queued, running or
finished: no trial trains twice), and one submitit folder per job (its pickles, its
``stdout``/``stderr`` logs, its ``events.jsonl``).

A job that reaches its time limit or is preempted is requeued by submitit and resumes from
its epoch checkpoint; Ctrl-C (or SIGTERM) in the driver cancels the run's jobs and leaves
their checkpoints, so a rerun with any executor resumes them.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..components import DataBundle
from ..errors import NoSpace, PatchbenchError
from ..files import write_atomically
from ..spec import Spec
from ..train.trainer import TrialResult
from . import slurm_queue
from .jobs import CraftJob, Report, TrialJob, import_extra
from .progress import console

POLL_S = 0.5
"""How often the driver looks for results and progress events (files on disk)."""
QUEUE_POLL_S = 5.0
"""How often it asks squeue: for the queued/running counts and for jobs that ended without
a result. Slurm's controller serves every user of the cluster; a few seconds is polite."""
RESULT_GRACE_S = 20.0
"""How long a job that left the queue may take to show its result file (network file
systems cache directory entries) before it counts as ended without one."""
CANCEL_WAIT_S = 120.0
"""After Ctrl-C, how long the driver waits for cancelled jobs to stop (Slurm sends SIGKILL
KillWait seconds after SIGTERM), so that nothing is still writing a checkpoint when the
driver exits and a rerun starts."""
STATE_FILE = "jobs.json"

def slurm_dir(checkpoint: Path) -> Path:
    """``<out>/slurm/<spec hash>`` for a trial checkpointed at
    ``<out>/checkpoints/<spec hash>/<trial>.pt`` (:func:`patchbench.run.driver.checkpoint_path`)."""
    return checkpoint.parents[2] / "slurm" / checkpoint.parent.name


def whole(value: float, field_name: str, allowed: str, spec_path: str) -> int:
    """A CPU or GPU count as Slurm takes it: whole (Ray's fractions have no sbatch form)."""
    if value != int(value):
        raise PatchbenchError(f"{spec_path}: execution.{field_name}: {value:g}: Slurm "
                              f"allocates whole ones; allowed: {allowed}")
    return int(value)


class JobsFile:
    """``jobs.json``: trial key → the Slurm job that trains it and the code it was
    submitted with. Written by the driver only, whole each time."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, dict[str, str]] = {}
        if path.exists():
            try:
                self.entries = json.loads(path.read_text())
            except (OSError, ValueError):
                # A file that cannot be read only costs the rerun its collection of jobs
                # still running: they are trained again, from their checkpoints.
                self.entries = {}

    def save(self) -> None:
        write_atomically(self.path, json.dumps(self.entries, indent=1, sort_keys=True).encode(),
                         "free some and run again (it collects the jobs)")

    def set(self, key: str, job_id: str, code_hash: str) -> None:
        self.entries[key] = {"job_id": job_id, "code_hash": code_hash}

    def forget(self, key: str) -> None:
        if self.entries.pop(key, None) is not None:
            self.save()


@dataclass
class Watched:
    """One submitted job the driver waits for."""

    job_id: str
    sjob: Any
    """submitit's Job: where its result and logs are."""
    payload: Any
    """What it runs: a TrialJob or a CraftJob."""
    events_read: int = 0
    left_queue_at: float | None = None
    state: slurm_queue.JobState | None = None

    @property
    def events(self) -> Path:
        from .slurm_task import EVENTS

        return Path(self.sjob.paths.folder) / EVENTS


@dataclass
class Ended:
    """A watched job that is over: submitit's outcome (``("success", value)`` or
    ``("error", traceback)``), or None when the job ended without one."""

    watched: Watched
    outcome: tuple[str, Any] | None
    state: slurm_queue.JobState | None = field(default=None)


class SlurmExecutor:
    """Each trial a Slurm job with ``cpus_per_trial`` CPUs and ``gpus_per_trial`` GPUs."""

    name = "slurm"

    def __init__(self, spec: Spec, spec_path: str):
        # The spec's own mistakes first: they need neither submitit nor Slurm to be found.
        self.settings, self.spec, self.spec_path = spec.execution, spec, spec_path
        self.cpus = whole(self.settings.cpus_per_trial, "cpus_per_trial", "1, 2, ...",
                          spec_path)
        gpus = self.settings.gpus_per_trial
        if gpus is None:
            gpus = 1 if spec.training.device.startswith("cuda") else 0
        self.gpus = whole(gpus, "gpus_per_trial", "0, 1, 2, ...", spec_path)
        if spec.training.device.startswith("cuda") and self.gpus == 0:
            raise PatchbenchError(f"{spec_path}: execution.gpus_per_trial: 0 leaves no GPU "
                                  f"for training.device {spec.training.device!r}; set 1 or "
                                  "more, or training.device: auto")
        self.submitit = import_extra("submitit", "slurm", "submitit", spec_path)
        missing = slurm_queue.missing_commands()
        if missing:
            raise PatchbenchError(
                f"{spec_path}: execution.executor: 'slurm' needs Slurm's commands; "
                f"{', '.join(missing)} not found on PATH: run it on a machine of the cluster "
                "(a login node) or install Slurm's client (Debian: apt-get install "
                "slurm-client)")

    def job_settings(self) -> dict[str, Any]:
        """Device and threads each job resolves where it runs: a job given no GPU trains
        on the CPU even where the node has some (it is not the job's to use). Asks Slurm
        first whether it would take the jobs: a refusal is one line before anything runs."""
        flags = [f"--time={self.settings.time}"] + [
            f"--{k}" if v is True else f"--{k}={v}" for k, v in self.request().items()]
        problem = slurm_queue.refusal(flags)
        if problem:
            raise PatchbenchError(f"{self.spec_path}: execution: Slurm refuses these jobs: "
                                  f"{problem}")
        device = self.spec.training.device if self.gpus > 0 else "cpu"
        return {"device": device, "threads": self.spec.training.threads or self.cpus}

    # -- submitting ---------------------------------------------------------------------

    def request(self) -> dict[str, Any]:
        """Every job's sbatch options by long name, the time limit apart."""
        s = self.settings
        options: dict[str, Any] = {"cpus-per-task": self.cpus}
        if self.gpus:
            options["gpus-per-node"] = self.gpus
        for name in ("partition", "mem", "account", "qos"):
            if getattr(s, name) is not None:
                options[name] = getattr(s, name)
        options.update({k.replace("_", "-"): v for k, v in s.sbatch_options.items()
                        if v is not False})
        return options

    def submitter(self, folder: Path) -> Any:
        """A submitit executor with the execution settings, its jobs' files under
        ``folder`` (one subfolder per job)."""
        s = self.settings
        ex = self.submitit.SlurmExecutor(folder=folder / "%j", max_num_timeout=s.max_retries)
        # The time limit is submitit's own parameter: it counts the requeues after a
        # timeout by it. USR2 comes this long before the limit, and submitit then requeues
        # the job; the trial's progress is on disk already, so it need not come early.
        ex.update_parameters(job_name=f"patchbench-{self.spec.name}", time=s.time,
                             array_parallelism=s.array_parallelism,
                             signal_delay_s=min(90, s.time * 15),
                             additional_parameters=self.request())
        return ex

    def submit(self, fn: Any, payloads: list[Any], folder: Path) -> list[Any]:
        """sbatch ``fn`` over ``payloads`` (an array when there are several); sbatch's
        refusal (an unknown partition or account, a time over the limit) is bad input."""
        ex = self.submitter(folder)
        said = io.StringIO()
        try:
            with contextlib.redirect_stderr(said):  # submitit prints sbatch's stderr too
                if len(payloads) == 1:
                    return [ex.submit(fn, payloads[0])]
                return ex.map_array(fn, payloads)
        except self.submitit.core.utils.FailedJobError as exc:
            lines = [line.removeprefix("sbatch: error: ") for line in str(exc).splitlines()
                     if line.strip()] or ["sbatch failed"]
            raise PatchbenchError(f"{self.spec_path}: execution: Slurm refuses these jobs: "
                                  f"{lines[-1]}") from None

    # -- the grid -----------------------------------------------------------------------

    def execute(self, jobs: list[TrialJob], data: DataBundle, report: Report
                ) -> Iterator[tuple[TrialJob, TrialResult]]:
        """Collect what an earlier, killed driver left running or finished; submit the rest
        as one array; yield each result as its job ends. ``data`` is not sent: every job
        reads the dataset itself."""
        from .slurm_task import SlurmTrial

        folder = slurm_dir(jobs[0].checkpoint)
        state = JobsFile(folder / STATE_FILE)
        watched, stale = self.adopt(jobs, state, folder)
        if stale:  # jobs of other code, or of a run before --force: they write the same
            self.stop(stale, "of an earlier run (other code, or before --force)")  # checkpoints
        todo = [job for job in jobs if job.key not in {w.payload.key for w in watched}]
        if todo:
            sjobs = self.submit(SlurmTrial(), todo, folder)
            for job, sjob in zip(todo, sjobs):
                state.set(job.key, sjob.job_id, job.code_hash)
                watched.append(Watched(sjob.job_id, sjob, job))
            state.save()  # before anything else: a driver killed from here on loses no job
            array = sjobs[0].job_id.split("_")[0]
            console.print(f"Slurm: {len(todo)} trial{'s' * (len(todo) != 1)} submitted as job "
                          f"{array}{' (an array)' if len(todo) > 1 else ''}, "
                          f"{self.cpus} CPUs and {self.gpus} GPUs each, at most "
                          f"{self.settings.array_parallelism} at once; squeue -j {array} "
                          "follows them", soft_wrap=True)
        for ended in self.wait(watched, report):
            job = ended.watched.payload
            yield job, self.result(ended)
            state.forget(job.key)  # stored by the driver by now

    def adopt(self, jobs: list[TrialJob], state: JobsFile, folder: Path
              ) -> tuple[list[Watched], list[str]]:
        """The jobs of an earlier driver worth waiting for (still queued or running, or
        finished with a result), and the ids of active ones to cancel (other code, or
        a ``--force`` run)."""
        earlier = {job.key: state.entries[job.key] for job in jobs if job.key in state.entries}
        if not earlier:
            return [], []
        queue = slurm_queue.queue(e["job_id"] for e in earlier.values())
        if queue is None:
            raise PatchbenchError(f"{self.spec_path}: execution: squeue does not answer; "
                                  "the jobs this output directory lists cannot be checked "
                                  f"({folder / STATE_FILE}); rerun when Slurm is back")
        adopted, stale = [], []
        for job in jobs:
            entry = earlier.get(job.key)
            if entry is None:
                continue
            job_id, seen = entry["job_id"], queue.get(entry["job_id"])
            if job.fresh or entry["code_hash"] != job.code_hash:
                if seen is not None and seen.active:
                    stale.append(job_id)
                continue
            sjob = self.submitit.SlurmJob(folder=folder / "%j", job_id=job_id)
            if Path(sjob.paths.result_pickle).exists() or (seen is not None and seen.active):
                adopted.append(Watched(job_id, sjob, job))
        if adopted:
            console.print(f"Slurm: collecting {len(adopted)} trial"
                          f"{'s' * (len(adopted) != 1)} from jobs an earlier run submitted "
                          f"({', '.join(w.job_id for w in adopted)})", soft_wrap=True)
        return adopted, stale

    def result(self, ended: Ended) -> TrialResult:
        job: TrialJob = ended.watched.payload
        where = {"executor": self.name, "slurm_job_id": ended.watched.job_id}
        if ended.state is not None and ended.state.node:
            where["slurm_node"] = ended.state.node
        if ended.outcome is None:
            state = ended.state.state if ended.state else "no longer known to Slurm"
            return TrialResult(job.trial, "failed", where=where, error=(
                f"SlurmJobLost: job {ended.watched.job_id} ended without a result ({state}); "
                f"its log: {ended.watched.sjob.paths.stderr}"))
        kind, value = ended.outcome
        if kind == "success":
            if value.no_space is not None:  # the disk is full: ends the run, as here
                raise NoSpace(value.no_space)
            return value.result
        # The job raised outside the trial (submitit's requeues used up, a plugin that
        # does not import there, ...): the traceback is the job's.
        last = (value.strip().splitlines() or ["error"])[-1]
        return TrialResult(job.trial, "failed", error=last, traceback=value, where=where)

    # -- crafting -----------------------------------------------------------------------

    def craft(self, job: CraftJob, data: DataBundle, report: Report) -> dict[str, Any]:
        """One Slurm job with a trial's resources; the driver waits for it. Bad input in
        the job is one line here; a bug raises with the job's traceback."""
        from .slurm_task import craft_task

        folder = job.path.parents[1] / "slurm" / "crafting"
        (sjob,) = self.submit(craft_task, [job], folder)
        console.print(f"Slurm: crafting {job.ref.name} as job {sjob.job_id}", soft_wrap=True)
        (ended,) = list(self.wait([Watched(sjob.job_id, sjob, job)], report))
        if ended.outcome is None:
            raise RuntimeError(f"crafting {job.ref.name}: Slurm job {sjob.job_id} ended without "
                               f"a result; its log: {sjob.paths.stderr}")
        kind, value = ended.outcome
        if kind != "success":
            raise RuntimeError(f"crafting {job.ref.name} failed in Slurm job {sjob.job_id}:\n"
                               f"{value}")
        if value.bad_input is not None:
            raise PatchbenchError(value.bad_input)
        return value.meta

    # -- waiting ------------------------------------------------------------------------

    def wait(self, watched: list[Watched], report: Report) -> Iterator[Ended]:
        """Each job as it ends, its progress events passed to ``report`` meanwhile; the
        jobs still waited for are cancelled when the caller stops (Ctrl-C, an error)."""
        pending = {w.job_id: w for w in watched}
        last_queue = 0.0
        try:
            while pending:
                for w in list(pending.values()):
                    if w.state is not None and w.state.state == "PENDING":
                        continue  # a waiting job has nothing on disk: spare the file system
                    self.forward_events(w, report)
                    if Path(w.sjob.paths.result_pickle).exists():
                        del pending[w.job_id]
                        self.forward_events(w, report)
                        yield Ended(w, self.outcome(w), w.state)
                if pending and time.monotonic() - last_queue >= QUEUE_POLL_S:
                    last_queue = time.monotonic()
                    yield from self.check_queue(pending, report)
                if pending:
                    time.sleep(POLL_S)
        finally:
            if pending:
                self.stop(list(pending), "still queued or running; their checkpoints stay "
                          "for a rerun (any executor)")

    def check_queue(self, pending: dict[str, Watched], report: Report) -> Iterator[Ended]:
        """squeue's view: the counts for the progress display, and the jobs that left the
        queue without a result (after :data:`RESULT_GRACE_S`)."""
        queue = slurm_queue.queue(pending)
        if queue is None:  # the controller did not answer: ask again next time
            return
        counts = {"queued": 0, "running": 0}
        now = time.monotonic()
        for job_id, w in list(pending.items()):
            seen = queue.get(job_id)
            if seen is not None:
                w.state = seen
            if seen is not None and seen.active:
                w.left_queue_at = None
                counts["running" if seen.state in ("RUNNING", "COMPLETING") else "queued"] += 1
                continue
            w.left_queue_at = w.left_queue_at or now
            if now - w.left_queue_at >= RESULT_GRACE_S:
                del pending[job_id]
                yield Ended(w, None, w.state)
        report({"type": "queue", "key": "", **counts})

    def outcome(self, w: Watched) -> tuple[str, Any]:
        """submitit's result file: ``("success", value)`` or ``("error", traceback)``; a
        file still being renamed into place is read again."""
        from submitit.core.utils import pickle_load

        for attempt in range(10):
            try:
                return pickle_load(w.sjob.paths.result_pickle)
            except (EOFError, OSError):
                if attempt == 9:
                    raise
                time.sleep(0.5)
        raise AssertionError("unreachable")

    def forward_events(self, w: Watched, report: Report) -> None:
        """The job's new progress events, from where the driver read last."""
        try:
            with open(w.events, "rb") as f:
                f.seek(w.events_read)
                chunk = f.read()
        except FileNotFoundError:  # not started yet
            return
        end = chunk.rfind(b"\n") + 1  # a line still being written waits for the next poll
        w.events_read += end
        for line in chunk[:end].splitlines():
            try:
                event = json.loads(line)
            except ValueError:  # a line torn by a node that died mid-write
                continue
            report(event)

    def stop(self, job_ids: list[str], why: str) -> None:
        """scancel the jobs and wait (at most :data:`CANCEL_WAIT_S`) until none is left
        running: a job's processes outlive scancel by Slurm's KillWait."""
        console.print(f"Slurm: cancelling {len(job_ids)} job{'s' * (len(job_ids) != 1)} "
                      f"{why}", soft_wrap=True)
        problem = slurm_queue.cancel(job_ids)
        if problem:
            console.print(f"[yellow]Slurm: {problem}; check with squeue[/]", soft_wrap=True)
            return
        deadline = time.monotonic() + CANCEL_WAIT_S
        while time.monotonic() < deadline:
            queue = slurm_queue.queue(job_ids)
            if queue is not None and not any(s.active for s in queue.values()):
                return
            time.sleep(POLL_S)
        console.print(f"[yellow]Slurm: jobs {', '.join(job_ids)} are still stopping after "
                      f"{CANCEL_WAIT_S:.0f} s; check with squeue before a rerun[/]",
                      soft_wrap=True)
