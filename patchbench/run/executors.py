"""The executors: where a grid's trials run. ``local`` trains them one after another in this
process; ``ray`` (:mod:`patchbench.run.ray_executor`) as Ray tasks on a machine or a cluster;
``slurm`` (:mod:`patchbench.run.slurm_executor`) as the jobs of a Slurm job array. All take
:class:`~patchbench.run.jobs.TrialJob` s and yield results in completion order."""

from __future__ import annotations

from typing import Any, Iterator

from ..components import DataBundle
from ..errors import PatchbenchError
from ..plugins import Registry
from ..spec import Spec
from ..train.runtime import pick_device
from ..train.trainer import TrialResult
from .jobs import CraftJob, Executor, Report, TrialJob, execute_craft, execute_job
from .ray_executor import RayExecutor
from .slurm_executor import SlurmExecutor


class LocalExecutor:
    """One trial after another, in this process."""

    name = "local"

    def __init__(self, spec: Spec, spec_path: str, registry: Registry):
        self.registry = registry
        self.threads = spec.training.threads
        try:
            self.device = pick_device(spec.training.device)
        except PatchbenchError as exc:
            raise PatchbenchError(f"{spec_path}: {exc}") from None

    def job_settings(self) -> dict[str, Any]:
        return {"device": str(self.device), "threads": self.threads}

    def execute(self, jobs: list[TrialJob], data: DataBundle, report: Report
                ) -> Iterator[tuple[TrialJob, TrialResult]]:
        # Threads and determinism: the driver has configured this process already.
        on_device = data.to(self.device)
        for job in jobs:
            yield job, execute_job(job, on_device, self.device, report, self.registry)

    def craft(self, job: CraftJob, data: DataBundle, report: Report) -> dict[str, Any]:
        return execute_craft(job, data.to(self.device), self.device, report, self.registry)


def make_executor(spec: Spec, spec_path: str, registry: Registry) -> Executor:
    """The executor the spec's ``execution`` section names; bad settings are bad input.
    Ray workers and Slurm jobs load their own plugins, which must be installed where they
    run."""
    if spec.execution.executor == "ray":
        return RayExecutor(spec, spec_path)
    if spec.execution.executor == "slurm":
        return SlurmExecutor(spec, spec_path)
    return LocalExecutor(spec, spec_path, registry)
