"""Built-in learning-rate schedules. Epochs are counted from 1, as in the authors' code:
a milestone of 30 means epochs 30, 31, ... run at the reduced rate."""

from __future__ import annotations

import math
from typing import Any

from pydantic import Field, field_validator

from .. import hookimpl
from ..components import Params, Schedule


AUTHORS_SCHEDULES: dict[str, tuple[str, dict[str, Any]]] = {
    "default": ("multistep", {"milestones": [60, 120, 150], "factor": 0.2}),
    "fixed": ("constant", {}),
    "decay_once": ("multistep", {"milestones": [150], "factor": 0.2}),
    "decay_early": ("multistep", {"milestones": [30], "factor": 0.04}),
}
"""The named LR schedules of the authors' plain-CIFAR script (train_util.py), as the schedule
and params a spec writes for each (benchmarks/cifar_lr.yaml uses "default")."""


def _epoch(step: int, steps_per_epoch: int) -> int:
    return step // steps_per_epoch + 1


class Constant(Schedule):
    """The base learning rate at every step."""

    name = "constant"

    def lr(self, step: int, steps_per_epoch: int, total_steps: int, base_lr: float) -> float:
        return base_lr


class MultiStepParams(Params):
    milestones: list[int] = Field(min_length=1)
    """1-based epochs from which the LR is multiplied by ``factor`` (once per milestone)."""
    factor: float = Field(0.1, gt=0, le=1)

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, value: list[int]) -> list[int]:
        if any(m < 2 for m in value):
            raise ValueError("milestones are 1-based epochs and must be >= 2")
        if sorted(set(value)) != value:
            raise ValueError("milestones must be strictly increasing")
        return value


class MultiStep(Schedule):
    """Multiply the LR by `factor` at each milestone epoch (the paper: x0.04 at epoch 30).

    The authors' named plain-CIFAR schedules are multistep with these params: "default"
    milestones [60, 120, 150] factor 0.2; "decay_once" [150] x0.2; "decay_early" [30] x0.04;
    their "fixed" is the ``constant`` schedule (AUTHORS_SCHEDULES)."""

    name = "multistep"
    Params = MultiStepParams

    def lr(self, step: int, steps_per_epoch: int, total_steps: int, base_lr: float) -> float:
        epoch = _epoch(step, steps_per_epoch)
        passed = sum(epoch >= m for m in self.params.milestones)
        return base_lr * self.params.factor ** passed

    def anneal_epochs(self, epochs: int) -> list[int]:
        return [m for m in self.params.milestones if m <= epochs]


class StepParams(Params):
    step_size: int = Field(ge=1)
    """Every ``step_size`` epochs the LR is multiplied by ``factor``."""
    factor: float = Field(0.1, gt=0, le=1)


class Step(Schedule):
    """Multiply the LR by `factor` every `step_size` epochs."""

    name = "step"
    Params = StepParams

    def lr(self, step: int, steps_per_epoch: int, total_steps: int, base_lr: float) -> float:
        epoch = _epoch(step, steps_per_epoch)
        return base_lr * self.params.factor ** ((epoch - 1) // self.params.step_size)

    def anneal_epochs(self, epochs: int) -> list[int]:
        return list(range(1 + self.params.step_size, epochs + 1, self.params.step_size))


class CosineParams(Params):
    warmup_epochs: float = Field(0.0, ge=0)
    """Linear warmup from 0 over this many epochs (fractions allowed)."""
    final_factor: float = Field(0.0, ge=0, le=1)
    """The LR at the last step, as a fraction of the base LR."""


class Cosine(Schedule):
    """Linear warmup, then cosine decay to `final_factor` x the base LR at the last step."""

    name = "cosine"
    Params = CosineParams

    def lr(self, step: int, steps_per_epoch: int, total_steps: int, base_lr: float) -> float:
        warmup = round(self.params.warmup_epochs * steps_per_epoch)
        if step < warmup:
            return base_lr * (step + 1) / warmup
        span = max(total_steps - 1 - warmup, 1)
        t = min((step - warmup) / span, 1.0)
        floor = self.params.final_factor
        return base_lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))


@hookimpl
def register_schedules(register) -> None:
    for cls in (Constant, MultiStep, Step, Cosine):
        register(cls)
