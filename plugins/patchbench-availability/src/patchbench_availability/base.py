"""What the three availability poisons share.

- An exact poisoned fraction ``ratio`` of the training set, chosen once from ``seed``
  (``FixedSubsetPatch.poison_exactly``); the test set stays clean, so ``apply(..., "test")``
  returns its images unchanged and the model is measured on clean test images.
- The round trip between normalized units and pixels in [0, 1], where every budget is
  defined: a poisoned image is ``clip(pixels + delta, 0, 1)``, the definition of all three
  papers (the authors add their noise to ``ToTensor()`` images and clip to the image range).
- For the sample-wise poisons (LSP, AR): a pattern per training image, fixed at setup and
  indexed by the image's dataset index, and a deterministic choice of training images of a
  class when ``stamp`` / ``patch_only`` are called without ``idx``.
"""

from __future__ import annotations

from abc import abstractmethod

import torch
from pydantic import Field
from torch import Tensor

from patchbench.components import DataBundle, FixedSubsetPatch, Params, image_dims


class AvailabilityParams(Params):
    ratio: float = Field(1.0, gt=0, le=1)
    """Fraction of the training set poisoned, exactly round(ratio * n_train) images (the
    papers poison the whole training set: 1.0). The test set is never poisoned."""
    seed: int = 0
    """Seed of the poisoned subset and of the noise (not the training seed)."""


class Availability(FixedSubsetPatch):
    """Base of the availability poisons: an exact poisoned subset, a clean test set, and
    perturbations defined on pixels in [0, 1]."""

    Params = AvailabilityParams

    def setup(self, data: DataBundle, device: torch.device) -> None:
        p = self.params
        self.channels, self.height, self.width = image_dims(data.image_shape, "patch",
                                                            self.name)
        self.num_classes = data.num_classes
        self.device = device
        self.mean = torch.tensor(data.mean, device=device, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(data.std, device=device, dtype=torch.float32).view(1, -1, 1, 1)
        self.poison_exactly(data, p.ratio, p.seed, device)
        self.build(data, device)

    @abstractmethod
    def build(self, data: DataBundle, device: torch.device) -> None:
        """Draw or search the poison's fixed patterns (after the subset is drawn)."""

    def to_pixels(self, x: Tensor) -> Tensor:
        return (x * self.std + self.mean).clamp(0, 1)

    def from_pixels(self, pixels: Tensor) -> Tensor:
        return (pixels - self.mean) / self.std

    def blank(self, n: int, image_shape: tuple[int, ...]) -> Tensor:
        """The mean image (zeros in normalized units): patch_only puts the pattern on it."""
        return torch.zeros((n, *image_shape), device=self.device)


class SampleWise(Availability):
    """An availability poison with one pattern per training image (``sample_wise``).

    Subclasses fill ``self.labels`` (the class of each pattern row) in :meth:`build` and
    implement :meth:`deltas`. Rows ``0 .. n_train - 1`` are the training images' patterns;
    rows ``n_train + c`` are one spare pattern of class ``c``, used by ``stamp`` and
    ``patch_only`` only for a class without any training image.
    """

    sample_wise = True
    labels: Tensor

    @abstractmethod
    def deltas(self, rows: Tensor) -> Tensor:
        """The perturbations (pixel units, before clipping) of pattern rows ``rows``:
        (len(rows), C, H, W) on the device."""

    def setup(self, data: DataBundle, device: torch.device) -> None:
        self.n_train = len(data.y_train)
        k = data.num_classes
        self.labels = torch.cat([data.y_train.long(), torch.arange(k)]).to(device)
        super().setup(data, device)
        self._class_table(device)

    def _class_table(self, device: torch.device) -> None:
        """For each class, the pattern rows ``stamp`` may choose from when given no ``idx``:
        its poisoned training images; all its training images when none is poisoned; its
        spare row when it has no training image. Sorted by class, with offsets and counts."""
        k, n = self.num_classes, self.n_train
        y = self.labels[:n]
        poisoned = self.subsets["train"]
        has_poisoned = torch.bincount(y[poisoned], minlength=k) > 0
        has_any = torch.bincount(y, minlength=k) > 0
        keep = poisoned | ~has_poisoned[y]
        rows = torch.cat([torch.nonzero(keep).flatten(),
                          n + torch.nonzero(~has_any).flatten()])
        order = torch.sort(self.labels[rows], stable=True).indices
        self._rows = rows[order]
        self._counts = torch.bincount(self.labels[self._rows], minlength=k)
        self._offsets = torch.cumsum(self._counts, 0) - self._counts

    def choose(self, cls: Tensor, gen: torch.Generator) -> Tensor:
        """Training images (pattern rows) of classes ``cls``, drawn uniformly from ``gen``
        among :meth:`_class_table`'s rows: what ``stamp`` uses when the caller names none."""
        u = torch.rand(len(cls), generator=gen, device=gen.device).to(cls.device)
        counts = self._counts[cls]
        pick = torch.minimum((u * counts).long(), counts - 1)
        return self._rows[self._offsets[cls] + pick]

    def perturb(self, x: Tensor, rows: Tensor) -> Tensor:
        """Images ``x`` (normalized) plus the perturbations of ``rows``, clipped to [0, 1]."""
        return self.from_pixels((self.to_pixels(x) + self.deltas(rows)).clamp(0, 1))

    def apply(self, x: Tensor, y: Tensor, idx: Tensor, split: str,
              gen: torch.Generator) -> tuple[Tensor, Tensor]:
        if split != "train":  # the test set is never poisoned (poison_exactly)
            return x, y
        mask = self.poison_mask(idx, split)
        return torch.where(mask.view(-1, 1, 1, 1), self.perturb(x, idx), x), y

    def stamp(self, x: Tensor, cls: Tensor, gen: torch.Generator,
              idx: Tensor | None = None) -> Tensor:
        rows = self.choose(cls, gen) if idx is None else idx
        return self.perturb(x, rows)

    def patch_only(self, cls: Tensor, image_shape: tuple[int, int, int],
                   gen: torch.Generator, idx: Tensor | None = None) -> Tensor:
        return self.stamp(self.blank(len(cls), image_shape), cls, gen, idx)
