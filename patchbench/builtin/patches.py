"""The patch of Li, Wei and Ma (NeurIPS 2019), exactly as the authors' code builds it.

In normalized units (the dataset's mean/std), a ``size`` x ``size`` square in every channel,
centred, *replaces* the image's pixels. One pattern per run, drawn from ``seed``:
``z = z_scale * N(0, 1)`` shared by all classes and ``zeta_c ~ U[-sep, sep]`` per class.
A fixed ``augment_fraction`` of the images (chosen once per index) is patched each time it
is loaded: with probability ``patch_only_prob`` the whole image is zeroed and the centre
becomes ``z + s * patch_only_scale * a * zeta_y`` (a ~ U[0, 1]), otherwise the centre becomes
``z + s * zeta_y``; the sign s is +1 or -1, drawn anew at every load.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from .. import hookimpl
from ..components import DataBundle, FixedSubsetPatch, Params, image_dims
from ..errors import PatchbenchError


class LWMParams(Params):
    size: int = Field(7, ge=1)
    location: Literal["center", "corner"] = "center"
    z_scale: float = Field(1.25, ge=0)
    sep: float = Field(0.1, gt=0)
    """zeta_c ~ U[-sep, sep]: the class signal of the patch."""
    num_patterns: int = Field(1, ge=1)
    augment_fraction: float = Field(0.8, ge=0, le=1)
    patch_only_prob: float = Field(0.2, ge=0, le=1)
    patch_only_scale: float = Field(1.75, ge=0)
    seed: int = 2
    """Seed of the pattern and of the fixed subsets (the authors' 2); not the training seed."""


class LWMPatch(FixedSubsetPatch):
    """The paper's patch: z +/- zeta_y at the centre, 20% clean / 64% patched / 16% patch-only."""

    name = "lwm"
    Params = LWMParams

    def setup(self, data: DataBundle, device: torch.device) -> None:
        p = self.params
        channels, height, width = image_dims(data.image_shape, "patch", self.name)
        if p.size > min(height, width):
            raise PatchbenchError(f"patch.params.size: {p.size} is larger than the "
                                  f"{height}x{width} images")
        # Same draws, in the same order, as the authors' pm_sym_pattern after seeding torch.
        gen = torch.Generator().manual_seed(p.seed)
        z = p.z_scale * torch.randn(channels, p.size, p.size, generator=gen)
        zeta = torch.zeros(data.num_classes, p.num_patterns, channels, p.size, p.size)
        zeta.uniform_(-p.sep, p.sep, generator=gen)
        self.z, self.zeta = z.to(device), zeta.to(device)
        self.draw_subsets(data, p.augment_fraction, p.seed, device)
        r0 = int(height / 2 - p.size / 2) if p.location == "center" else 0
        c0 = int(width / 2 - p.size / 2) if p.location == "center" else 0
        self.rows, self.cols = slice(r0, r0 + p.size), slice(c0, c0 + p.size)

    def _pattern(self, cls: Tensor, coef: Tensor, gen: torch.Generator) -> Tensor:
        """z + coef * zeta_cls, one pattern per image (drawn when there are several)."""
        if self.params.num_patterns == 1:  # the paper's case: skip a random draw per batch
            zeta = self.zeta[cls, 0]
        else:
            which = torch.randint(self.params.num_patterns, cls.shape, generator=gen,
                                  device=cls.device)
            zeta = self.zeta[cls, which]
        return torch.addcmul(self.z, coef.view(-1, 1, 1, 1), zeta)

    def _transform(self, x: Tensor, y: Tensor, patched: Tensor, gen: torch.Generator) -> Tensor:
        """The authors' PatchAugmentFixed applied to the images where ``patched`` is True.

        One uniform draw per image and purpose (patch-only?, a, sign): the training loop is
        launch-bound on a GPU, so each kernel saved here is throughput."""
        p = self.params
        u = torch.rand(3, y.shape[0], generator=gen, device=x.device)
        only = (u[0] < p.patch_only_prob) & patched
        coef = torch.where(only, p.patch_only_scale * u[1], 1.0)
        coef = torch.where(u[2] < 0.5, coef, -coef)
        patch = self._pattern(y, coef, gen).to(x.dtype)
        x = x.masked_fill(only.view(-1, 1, 1, 1), 0.0)
        region = x[:, :, self.rows, self.cols]
        x[:, :, self.rows, self.cols] = torch.where(patched.view(-1, 1, 1, 1), patch, region)
        return x

    def apply(self, x: Tensor, y: Tensor, idx: Tensor, split: str,
              gen: torch.Generator) -> tuple[Tensor, Tensor]:
        return self._transform(x, y, self.poison_mask(idx, split), gen), y

    def stamp(self, x: Tensor, cls: Tensor, gen: torch.Generator) -> Tensor:
        sign = torch.randint(0, 2, cls.shape, generator=gen, device=x.device) * 2.0 - 1.0
        x = x.clone()
        x[:, :, self.rows, self.cols] = self._pattern(cls, sign, gen).to(x.dtype)
        return x

    def patch_only(self, cls: Tensor, image_shape: tuple[int, int, int],
                   gen: torch.Generator) -> Tensor:
        # The authors' TransformOnlyDataset: zero images through the same per-load transform.
        zeros = torch.zeros((len(cls), *image_shape), device=cls.device)
        return self._transform(zeros, cls, torch.ones_like(cls, dtype=torch.bool), gen)


@hookimpl
def register_patches(register) -> None:
    register(LWMPatch)
