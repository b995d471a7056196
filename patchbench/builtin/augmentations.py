"""Built-in augmentations: random crop with padding and horizontal flip, as airbench does them,
and cutout (DeVries & Taylor 2017).

A whole prepared chunk of batches at a time, on the device, with tensor ops: one integer
shift pair per image and two gathers for the crop, one ``torch.where`` for the flip; no
Python loop over images and no device sync. Every draw comes from the trial's generator.

An arm lists them in order (``augmentations: [crop, flip]``) and says where they go relative
to the patch (``augment_order``): ``after_patch`` is BackdoorBench's order (poison, then
augment), ``before_patch`` augments the clean image and then patches it.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from .. import hookimpl
from ..components import Augmentation, DataBundle, Params, image_dims
from ..errors import PatchbenchError


class CropParams(Params):
    padding: int = Field(4, ge=1)
    """Pixels added on each side before a crop of the original size is taken at a uniformly
    random offset (0..2*padding per axis, as torchvision's RandomCrop(32, padding=4))."""
    fill: Literal["reflect", "zeros"] = "reflect"
    """reflect: mirror the border (airbench, and the paper authors' reflect-pad 4); zeros: a
    black pixel, intensity 0 in every channel (torchvision's default fill, BackdoorBench)."""


class Crop(Augmentation):
    """Random crop of the original size from the image padded on each side (default 4 px,
    reflect padding)."""

    name = "crop"
    Params = CropParams

    fill_value: Tensor | None = None

    def setup(self, data: DataBundle, device: torch.device) -> None:
        _, height, width = image_dims(data.image_shape, "augmentations",
                                      f"augmentation {self.name!r}")
        pad = self.params.padding
        if self.params.fill == "reflect" and pad >= min(height, width):
            raise PatchbenchError(f"augmentations: crop padding {pad} must be smaller than the "
                                  f"{height}x{width} images for reflect padding")
        # A black pixel as training sees it: intensity 0 through the dataset's normalization.
        black = torch.zeros((1, *data.image_shape), dtype=data.x_train.dtype, device=device)
        self.fill_value = data.normalizer(device)(black)[:, :, :1, :1]

    def apply(self, x: Tensor, gen: torch.Generator) -> Tensor:
        n, c, h, w = x.shape
        r = self.params.padding
        if self.params.fill == "reflect":
            padded = F.pad(x, (r, r, r, r), mode="reflect")
        else:
            padded = self.fill_value.to(x.dtype).expand(n, c, h + 2 * r, w + 2 * r).clone()
            padded[:, :, r:r + h, r:r + w] = x
        shifts = torch.randint(0, 2 * r + 1, (n, 2), generator=gen, device=x.device)
        rows = (shifts[:, :1] + torch.arange(h, device=x.device))  # (n, h)
        cols = (shifts[:, 1:] + torch.arange(w, device=x.device))  # (n, w)
        picked = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * r))
        return picked.gather(3, cols[:, None, None, :].expand(n, c, h, w))


class FlipParams(Params):
    p: float = Field(0.5, ge=0, le=1)
    """Probability that an image is mirrored left-right."""


class Flip(Augmentation):
    """Random horizontal flip of each image with probability p (default 0.5)."""

    name = "flip"
    Params = FlipParams

    def setup(self, data: DataBundle, device: torch.device) -> None:
        image_dims(data.image_shape, "augmentations", f"augmentation {self.name!r}")

    def apply(self, x: Tensor, gen: torch.Generator) -> Tensor:
        mirror = torch.rand(len(x), generator=gen, device=x.device) < self.params.p
        return torch.where(mirror.view(-1, 1, 1, 1), x.flip(-1), x)


class CutoutParams(Params):
    length: int = Field(16, ge=1)
    """Side of the square cut out, in pixels (the authors' CIFAR-10 setting and APBench's:
    16)."""
    fill: Literal["mean", "zeros"] = "mean"
    """mean: the normalized image's zero, the dataset's mean colour (the authors' code masks
    after normalizing); zeros: a black pixel, intensity 0 (APBench masks unnormalized
    images)."""


class Cutout(Augmentation):
    """Cutout: a square of each image (default 16 px) centred at a uniformly random pixel,
    clipped at the border, set to the mean colour (or black)."""

    name = "cutout"
    Params = CutoutParams

    fill_value: Tensor | None = None

    def setup(self, data: DataBundle, device: torch.device) -> None:
        image_dims(data.image_shape, "augmentations", f"augmentation {self.name!r}")
        black = torch.zeros((1, *data.image_shape), dtype=data.x_train.dtype, device=device)
        self.fill_value = data.normalizer(device)(black)[:, :, :1, :1]

    def apply(self, x: Tensor, gen: torch.Generator) -> Tensor:
        n, _, h, w = x.shape
        half = self.params.length // 2
        # The authors' centre: any pixel; the box [c - length//2, c + length//2) clipped.
        cy = torch.randint(0, h, (n, 1), generator=gen, device=x.device)
        cx = torch.randint(0, w, (n, 1), generator=gen, device=x.device)
        rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
        in_rows = (rows >= cy - half) & (rows < cy + half)  # (n, h)
        in_cols = (cols >= cx - half) & (cols < cx + half)  # (n, w)
        box = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]  # (n, 1, h, w)
        fill = torch.zeros((), dtype=x.dtype, device=x.device) if self.params.fill == "mean" \
            else self.fill_value.to(x.dtype)
        return torch.where(box, fill, x)


@hookimpl
def register_augmentations(register) -> None:
    for cls in (Crop, Flip, Cutout):
        register(cls)
