"""A template patchbench plugin: one patch generator and one LR schedule.

Copy this folder, rename the distribution and the module, and edit. Each component is a class
with a ``name``, a one-line docstring (what ``patchbench list`` shows) and a pydantic
``Params`` model whose defaults are your documented defaults; a hook function registers it.
Test it with the conformance kit, ``patchbench.testing`` (see tests/test_example.py).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from patchbench import hookimpl
from patchbench.components import DataBundle, FixedSubsetPatch, Params, Schedule


class CornerParams(Params):
    size: int = Field(4, ge=1)
    """Side of the square, in pixels."""
    fraction: float = Field(0.5, ge=0, le=1)
    """Fraction of the images that carry the square (a fixed subset, chosen once)."""
    seed: int = 0


class Corner(FixedSubsetPatch):
    """A square in the top-left corner whose intensity encodes the class."""

    name = "corner"
    Params = CornerParams

    def setup(self, data: DataBundle, device: torch.device) -> None:
        # Everything random is drawn here, once, from the generator's own seed.
        self.levels = torch.linspace(-2, 2, data.num_classes, device=device)
        self.draw_subsets(data, self.params.fraction, self.params.seed, device)

    def apply(self, x: Tensor, y: Tensor, idx: Tensor, split: str,
              gen: torch.Generator) -> tuple[Tensor, Tensor]:
        mask = self.poison_mask(idx, split).view(-1, 1, 1, 1)
        return torch.where(mask, self.stamp(x, y, gen), x), y

    def stamp(self, x: Tensor, cls: Tensor, gen: torch.Generator) -> Tensor:
        s = self.params.size
        x = x.clone()
        x[:, :, :s, :s] = self.levels[cls].view(-1, 1, 1, 1)
        return x

    def patch_only(self, cls: Tensor, image_shape: tuple[int, int, int],
                   gen: torch.Generator) -> Tensor:
        blank = torch.zeros((len(cls), *image_shape), device=cls.device)
        return self.stamp(blank, cls, gen)


class ExponentialParams(Params):
    gamma: float = Field(0.9, gt=0, le=1)
    """The LR is multiplied by gamma after every epoch."""


class Exponential(Schedule):
    """Multiply the LR by `gamma` after every epoch."""

    name = "exponential"
    Params = ExponentialParams

    def lr(self, step: int, steps_per_epoch: int, total_steps: int, base_lr: float) -> float:
        return base_lr * self.params.gamma ** (step // steps_per_epoch)


@hookimpl
def register_patches(register) -> None:
    register(Corner)


@hookimpl
def register_schedules(register) -> None:
    register(Exponential)
