"""The data every component sees: a dataset held as tensors, and the shape helpers.

Kept apart from the interfaces (``components.py``) because the trainer, the evaluation and
every kind of component use it, not only datasets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from .errors import PatchbenchError


@dataclass
class DataBundle:
    """A dataset held as uint8 NCHW tensors, plus the normalization patches are written in."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """The shape of one input: (C, H, W) for images, (D,) for feature vectors."""
        return tuple(int(v) for v in self.x_train.shape[1:])

    def fixed_subsets(self, fraction: float, seed: int, device: torch.device
                      ) -> dict[str, Tensor]:
        """A fixed random subset of each split (bool mask by index, train drawn first), as the
        authors' FixedAugmentDataset draws it: one numpy uniform per index, kept if < fraction."""
        rng = np.random.RandomState(seed)
        return {split: torch.from_numpy(rng.random_sample(len(y)) < fraction).to(device)
                for split, y in (("train", self.y_train), ("test", self.y_test))}

    def poison_subset(self, ratio: float, seed: int, device: torch.device
                      ) -> dict[str, Tensor]:
        """Exactly ``round(ratio * n_train)`` training images, chosen by a permutation seeded
        with ``seed``, and no test image (bool masks by index, as :meth:`fixed_subsets`)."""
        if not 0 < ratio <= 1:
            raise PatchbenchError(f"ratio: {ratio!r}; allowed: a fraction in (0, 1]")
        n = len(self.y_train)
        chosen = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        train = torch.zeros(n, dtype=torch.bool)
        train[chosen[:round(ratio * n)]] = True
        return {"train": train.to(device),
                "test": torch.zeros(len(self.y_test), dtype=torch.bool, device=device)}

    def to(self, device: torch.device) -> "DataBundle":
        return DataBundle(
            self.x_train.to(device), self.y_train.to(device),
            self.x_test.to(device), self.y_test.to(device),
            self.mean, self.std, self.classes,
        )

    def normalizer(self, device: torch.device) -> Callable[[Tensor], Tensor]:
        """Stored inputs -> float (x/255 - mean)/std per channel, one fused multiply-add.

        uint8 inputs are images in 0..255; float inputs (feature vectors, shape (N, D)) are
        used as they are, so their mean/std are 0 and 1 per feature or a single channel."""
        spatial = [1] * (self.x_train.dim() - 2)
        std = torch.tensor(self.std, device=device).view(1, -1, *spatial)
        mean = torch.tensor(self.mean, device=device).view(1, -1, *spatial)
        unit = 255.0 if self.x_train.dtype == torch.uint8 else 1.0
        scale, shift = 1.0 / (unit * std), -mean / std
        return lambda x: torch.addcmul(shift, x.float(), scale)


def image_dims(image_shape: tuple[int, ...], field: str, who: str) -> tuple[int, int, int]:
    """(channels, height, width) of image data; for feature vectors, bad input that names
    the spec field and the component that needs images."""
    if len(image_shape) != 3:
        raise PatchbenchError(f"{field}: {who} needs images (channels, height, width); the "
                              f"dataset gives feature vectors of shape {tuple(image_shape)}")
    channels, height, width = image_shape
    return channels, height, width
