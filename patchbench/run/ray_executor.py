"""Trials as Ray core tasks: many CPUs or GPUs, one machine or a cluster.

The driver stays the only writer of the result store; workers train and return results.
The uint8 dataset is put into Ray's object store once and every task reads it from there.
A task whose worker or node dies is retried (``execution.max_retries``) and resumes from the
trial's last epoch checkpoint, which is why the checkpoint directory (``--out``) must be on a
file system every node shares. Progress events come back through a small actor that the
driver drains while it waits for results.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from typing import Any, Iterator

import numpy as np
import torch

from ..components import DataBundle
from ..errors import NoSpace, PatchbenchError
from ..plugins import DISABLE_ENV
from ..spec import Spec
from ..train.runtime import configure, pick_device
from ..train.trainer import TrialResult
from .jobs import CraftJob, Report, TrialJob, execute_craft, execute_job, import_extra
from .progress import console

POLL_S = 0.25
CONNECT_TIMEOUT_S = 10.0
"""How long a cluster's address may take to answer before the run stops: ray.init itself
retries a head that is down for minutes."""

def to_arrays(data: DataBundle) -> dict[str, Any]:
    """The dataset as numpy arrays and plain values: what Ray stores without copies."""
    return {"x_train": data.x_train.numpy(), "y_train": data.y_train.numpy(),
            "x_test": data.x_test.numpy(), "y_test": data.y_test.numpy(),
            "mean": data.mean, "std": data.std, "classes": data.classes}


def from_arrays(arrays: dict[str, Any]) -> DataBundle:
    # Arrays from the object store are read-only shared memory; a trial gets its own copy
    # so that nothing it does can write into another trial's data.
    t = {k: torch.from_numpy(np.array(arrays[k])) for k in ("x_train", "y_train", "x_test",
                                                          "y_test")}
    return DataBundle(t["x_train"], t["y_train"], t["x_test"], t["y_test"],
                      tuple(arrays["mean"]), tuple(arrays["std"]), list(arrays["classes"]))


def unreachable(address: str | None, timeout: float = CONNECT_TIMEOUT_S) -> str | None:
    """Why nothing answers at a ``host:port`` (or ``ray://host:port``) address, or None
    (reachable, or no such address: ``auto``, ``local``, none)."""
    if not address or address in ("auto", "local"):
        return None
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return None
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except socket.timeout:
        return f"no answer within {timeout:g} s"
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


def ray_task(job: TrialJob, arrays: dict[str, Any], sink: Any) -> TrialResult:
    """The body of one Ray task: on whichever worker Ray picked."""
    configure(job.threads, job.spec.training.deterministic)
    device = pick_device(job.device)
    data = from_arrays(arrays).to(device)
    return execute_job(job, data, device, lambda event: sink.push.remote(event))


def ray_craft(job: CraftJob, arrays: dict[str, Any]) -> dict[str, Any]:
    """The body of one crafting task."""
    configure(job.threads, True)
    device = pick_device(job.device)
    return execute_craft(job, from_arrays(arrays).to(device), device, lambda event: None)


class _Sink:
    """Events from workers, held until the driver drains them."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def push(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def drain(self) -> list[dict[str, Any]]:
        events, self.events = self.events, []
        return events


class RayExecutor:
    """Each trial a Ray task with ``cpus_per_trial`` CPUs and ``gpus_per_trial`` GPUs."""

    name = "ray"

    def __init__(self, spec: Spec, spec_path: str):
        self.ray = import_extra("ray", "ray", "Ray", spec_path)
        self.settings, self.spec, self.spec_path = spec.execution, spec, spec_path
        self.started_here = False
        if spec.training.device.startswith("cuda") and self.settings.gpus_per_trial == 0:
            raise PatchbenchError(f"{spec_path}: execution.gpus_per_trial: 0 leaves no GPU "
                                  f"for training.device {spec.training.device!r}; set a "
                                  "share > 0 or training.device: auto")

    def connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():
            return
        address = self.settings.address or os.environ.get("RAY_ADDRESS")
        problem = unreachable(address)
        if problem:
            raise PatchbenchError(f"{self.spec_path}: execution.address: cannot join the Ray "
                                  f"cluster at {address}: {problem}")
        try:
            # No address and no RAY_ADDRESS: ray.init joins a cluster started on this machine
            # with `ray start`, else starts a local one that ends with this process.
            # Workers load their own plugins: the ones blocked here are blocked there too.
            blocked = os.environ.get(DISABLE_ENV)
            ours = signal.getsignal(signal.SIGTERM)
            ray.init(address=self.settings.address, include_dashboard=False,
                     configure_logging=False, log_to_driver=True,
                     runtime_env={"env_vars": {DISABLE_ENV: blocked}} if blocked else None)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            where = self.settings.address or "RAY_ADDRESS / a local cluster"
            raise PatchbenchError(f"{self.spec_path}: execution.address: cannot join the Ray "
                                  f"cluster at {where}: {str(exc).splitlines()[0]}") from None
        self.started_here = True
        if callable(ours) and threading.current_thread() is threading.main_thread():
            # ray.init sets a SIGTERM handler that exits at once: keep the command line's,
            # which stops like Ctrl-C (tasks cancelled, checkpoints kept, the store whole).
            signal.signal(signal.SIGTERM, ours)
        res, nodes = ray.cluster_resources(), len([n for n in ray.nodes() if n["Alive"]])
        console.print(f"Ray: {nodes} node{'s' * (nodes != 1)}, {res.get('CPU', 0):g} CPUs, "
                      f"{res.get('GPU', 0):g} GPUs; {self.settings.cpus_per_trial:g} CPUs and "
                      f"{self.gpus_per_trial():g} GPUs per trial", soft_wrap=True)

    def gpus_per_trial(self) -> float:
        if self.settings.gpus_per_trial is not None:
            return self.settings.gpus_per_trial
        has_gpus = self.ray.cluster_resources().get("GPU", 0) > 0
        return 1.0 if has_gpus and self.spec.training.device != "cpu" else 0.0

    def job_settings(self) -> dict[str, Any]:
        """Device and threads each task resolves where it runs."""
        self.connect()
        device = self.spec.training.device if self.gpus_per_trial() > 0 else "cpu"
        threads = self.spec.training.threads or max(1, int(self.settings.cpus_per_trial))
        return {"device": device, "threads": threads}

    def execute(self, jobs: list[TrialJob], data: DataBundle, report: Report
                ) -> Iterator[tuple[TrialJob, TrialResult]]:
        ray = self.ray
        self.connect()
        arrays = ray.put(to_arrays(data.to(torch.device("cpu"))))
        sink = ray.remote(num_cpus=0)(_Sink).remote()
        task = ray.remote(ray_task).options(
            num_cpus=self.settings.cpus_per_trial, num_gpus=self.gpus_per_trial(),
            max_retries=self.settings.max_retries, retry_exceptions=False)
        pending = {task.remote(job, arrays, sink): job for job in jobs}
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
                for event in ray.get(sink.drain.remote()):
                    report(event)
                for ref in ready:
                    job = pending.pop(ref)
                    yield job, self._result(ref, job)
        finally:
            for ref in pending:  # Ctrl-C or an error in the driver: stop, keep checkpoints
                ray.cancel(ref, force=True)
            if pending:
                time.sleep(POLL_S)  # let force-killed workers go before the cluster does
            if self.started_here:
                ray.shutdown()
                self.started_here = False

    def craft(self, job: CraftJob, data: DataBundle, report: Report) -> dict[str, Any]:
        """One Ray task with a trial's resources; its errors come back as they were raised
        (bad input stays one line)."""
        ray = self.ray
        self.connect()
        task = ray.remote(ray_craft).options(
            num_cpus=self.settings.cpus_per_trial, num_gpus=self.gpus_per_trial(),
            max_retries=self.settings.max_retries, retry_exceptions=False)
        ref = task.remote(job, ray.put(to_arrays(data.to(torch.device("cpu")))))
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, PatchbenchError):
                raise PatchbenchError(str(cause)) from None
            raise
        except BaseException:
            ray.cancel(ref, force=True)
            raise

    def _result(self, ref: Any, job: TrialJob) -> TrialResult:
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:  # retries used up, node lost, ...
            if isinstance(getattr(exc, "cause", None), NoSpace):  # ends the run, as here
                raise NoSpace(str(exc.cause)) from None
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            return TrialResult(job.trial, "failed", error=f"{type(exc).__name__}: {message}",
                               where={"executor": self.name})
