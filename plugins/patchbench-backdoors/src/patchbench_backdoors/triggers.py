"""The four triggers. Each is applied a batch at a time with tensor ops on pixels in [0, 1].

- BadNets (Gu et al., 2017): a small square, solid white or a checkerboard, at a corner.
- Blend (Chen et al., 2017): a fixed uniform-noise image alpha-blended over the whole image.
- SIG (Barni et al., 2019): a horizontal sinusoid added to the image; clean-label in the paper.
- WaNet (Nguyen & Tran, 2021): a smooth, fixed warping field; in "noise mode" further images
  are warped with the field plus random noise and keep their labels, so that the network
  must learn the exact warp rather than any warp.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from patchbench.components import DataBundle
from patchbench.errors import PatchbenchError

from .base import Backdoor, BackdoorParams


class BadNetsParams(BackdoorParams):
    size: int = Field(3, ge=1)
    location: Literal["bottom_right", "bottom_left", "top_right", "top_left"] = "bottom_right"
    margin: int = Field(1, ge=0)
    pattern: Literal["checkerboard", "solid"] = "checkerboard"


class BadNets(Backdoor):
    """BadNets: a small square trigger (checkerboard or solid white) in a corner."""

    name = "badnets"
    Params = BadNetsParams

    def build(self, data: DataBundle, device: torch.device, gen: torch.Generator) -> None:
        p = self.params
        _, h, w = data.image_shape
        if p.size + p.margin > min(h, w):
            raise PatchbenchError(f"patch.params.size: {p.size} + margin does not fit {h}x{w}")
        r0 = p.margin if p.location.startswith("top") else h - p.margin - p.size
        c0 = p.margin if p.location.endswith("left") else w - p.margin - p.size
        self.rows, self.cols = slice(r0, r0 + p.size), slice(c0, c0 + p.size)
        ij = torch.arange(p.size)
        square = ((ij[:, None] + ij[None, :]) % 2 == 0).float() if p.pattern == "checkerboard" \
            else torch.ones(p.size, p.size)
        self.square = square.to(device)

    def trigger(self, pixels: Tensor, gen: torch.Generator) -> Tensor:
        pixels = pixels.clone()
        pixels[:, :, self.rows, self.cols] = self.square
        return pixels


class BlendParams(BackdoorParams):
    alpha: float = Field(0.2, gt=0, le=1)


class Blend(Backdoor):
    """Blend: a fixed random pattern alpha-blended over the whole image."""

    name = "blend"
    Params = BlendParams

    def build(self, data: DataBundle, device: torch.device, gen: torch.Generator) -> None:
        self.pattern = torch.rand(data.image_shape, generator=gen).to(device)

    def trigger(self, pixels: Tensor, gen: torch.Generator) -> Tensor:
        return torch.lerp(pixels, self.pattern, self.params.alpha)


class SIGParams(BackdoorParams):
    delta: float = Field(20 / 255, gt=0, le=1)
    """Amplitude in pixel units (the paper: 20/255)."""
    frequency: float = Field(6.0, gt=0)
    """Periods across the image width."""


class SIG(Backdoor):
    """SIG: a horizontal sinusoidal signal added to the image (clean-label capable)."""

    name = "sig"
    Params = SIGParams
    supports_clean_label = True

    def build(self, data: DataBundle, device: torch.device, gen: torch.Generator) -> None:
        w = data.image_shape[2]
        cols = torch.arange(w, dtype=torch.float32)
        self.signal = (self.params.delta * torch.sin(2 * math.pi * cols * self.params.frequency
                                                     / w)).to(device)

    def trigger(self, pixels: Tensor, gen: torch.Generator) -> Tensor:
        return pixels + self.signal


class WaNetParams(BackdoorParams):
    k: int = Field(4, ge=2)
    """Size of the random control grid upsampled into the warping field."""
    strength: float = Field(0.5, gt=0)
    """The paper's s: maximum displacement, in pixels, of the warp."""
    cross_ratio: float = Field(2.0, ge=0)
    """Noise mode: this many times poison_rate further images are warped with noise."""


class WaNet(Backdoor):
    """WaNet: a smooth fixed warping field, with the noise mode of the original method."""

    name = "wanet"
    Params = WaNetParams

    def build(self, data: DataBundle, device: torch.device, gen: torch.Generator) -> None:
        p = self.params
        _, h, w = data.image_shape
        ins = torch.rand(1, 2, p.k, p.k, generator=gen) * 2 - 1
        ins = ins / ins.abs().mean()
        self.noise_grid = F.interpolate(ins, size=(h, w), mode="bicubic",
                                        align_corners=True).permute(0, 2, 3, 1).to(device)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w),
                                indexing="ij")
        self.identity = torch.stack((xs, ys), 2)[None].to(device)
        self.size = h
        # Noise mode: a fixed set of further training images, disjoint from the poisoned.
        rng = np.random.RandomState(p.seed + 1)
        poisoned = self.subsets["train"].cpu().numpy()
        cross = rng.random_sample(len(poisoned)) < min(1.0, p.cross_ratio * p.poison_rate)
        self.cross = torch.from_numpy(cross & ~poisoned).to(device)

    def _grid(self) -> Tensor:
        grid = self.identity + self.params.strength * self.noise_grid / self.size
        return grid.clamp(-1, 1)

    def trigger(self, pixels: Tensor, gen: torch.Generator) -> Tensor:
        grid = self._grid().expand(len(pixels), -1, -1, -1)
        return F.grid_sample(pixels, grid, align_corners=True)

    def poison_mask(self, idx: Tensor, split: str) -> Tensor:
        mask = self.subsets[split][idx]
        return mask | self.cross[idx] if split == "train" else mask

    def apply(self, x: Tensor, y: Tensor, idx: Tensor, split: str,
              gen: torch.Generator) -> tuple[Tensor, Tensor]:
        x, y = super().apply(x, y, idx, split, gen)
        if split != "train":
            return x, y
        cross = self.cross[idx] & ~self.subsets["train"][idx]
        n, h, w = len(x), x.shape[2], x.shape[3]
        noise = torch.rand(n, h, w, 2, generator=gen, device=x.device) * 2 - 1
        grid = (self._grid() + noise / self.size).clamp(-1, 1)
        pixels = (x * self.std + self.mean).clamp(0, 1)
        warped = (F.grid_sample(pixels, grid, align_corners=True) - self.mean) / self.std
        return torch.where(cross.view(-1, 1, 1, 1), warped, x), y
