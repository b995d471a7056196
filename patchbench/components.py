"""The interfaces every component implements, one abstract base per kind.

A component is a class with a ``name``, a one-line docstring (shown by ``patchbench list``)
and a pydantic ``Params`` model whose defaults are the component's documented defaults. The
harness validates the spec's params against ``Params`` and builds the component with
``Component(params)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from .errors import PatchbenchError

if TYPE_CHECKING:
    from .evaluation import EvalContext


class Params(BaseModel):
    """Base of every component's params: unknown keys are errors, values are validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Component(ABC):
    """Base of all component kinds."""

    kind: ClassVar[str]
    name: ClassVar[str]
    Params: ClassVar[type[Params]] = Params

    def __init__(self, params: Params | None = None, variant: str | None = None):
        self.params = params if params is not None else self.Params()
        self.variant = variant

    @classmethod
    def description(cls) -> str:
        """The first paragraph of the class docstring, on one line."""
        doc = (cls.__doc__ or "").strip().split("\n\n")[0]
        return " ".join(doc.split())

    accepts_variant: ClassVar[bool] = False
    """True when the component is used as ``name:variant`` (``timm:resnet18``)."""

    @classmethod
    def check_variant(cls, variant: str) -> None:
        """Raise PatchbenchError when ``variant`` does not exist (for ``validate``)."""


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


class Dataset(Component):
    """Provides images and labels."""

    kind = "datasets"

    @abstractmethod
    def load(self) -> DataBundle:
        """Return the whole dataset on the CPU (uint8 NCHW images, int64 labels)."""


class PatchGenerator(Component):
    """Adds a memorizable, class-dependent pattern to images.

    All methods take *normalized* float images (N, C, H, W) on the device and a
    ``torch.Generator`` on the same device for every random draw, so that a run is
    deterministic for a seed. They must not use Python loops over samples.
    """

    kind = "patches"

    @abstractmethod
    def setup(self, data: DataBundle, device: torch.device) -> None:
        """Draw the fixed pattern and the fixed subsets; called once per trial."""

    @abstractmethod
    def apply(self, x: Tensor, y: Tensor, idx: Tensor, split: str,
              gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """Patch a batch as the training distribution does (``split`` is 'train' or 'test').

        ``idx`` are the images' dataset indices, so a fixed subset can be chosen once.
        Returns the images and the labels to train on (a generator may relabel).
        """

    def poison_mask(self, idx: Tensor, split: str) -> Tensor:
        """Which of the images with dataset indices ``idx`` ``apply`` may modify (the fixed
        poisoned subset). ``apply`` must leave every other image, and its label, unchanged."""
        return torch.ones_like(idx, dtype=torch.bool)

    @abstractmethod
    def stamp(self, x: Tensor, cls: Tensor, gen: torch.Generator) -> Tensor:
        """Put class ``cls[i]``'s patch on every image ``x[i]`` (image content kept)."""

    @abstractmethod
    def patch_only(self, cls: Tensor, image_shape: tuple[int, int, int],
                   gen: torch.Generator) -> Tensor:
        """Images that carry class ``cls[i]``'s patch and no image content."""


class Architecture(Component):
    """Builds a model that maps images to class logits."""

    kind = "architectures"

    @abstractmethod
    def build(self, num_classes: int, image_shape: tuple[int, int, int]) -> nn.Module:
        """Return a freshly initialized model (initialization uses torch's global RNG)."""

    def label(self) -> str:
        """Short name used in trial keys and tables (``wrn-16-10``, ``timm:resnet18``)."""
        return f"{self.name}:{self.variant}" if self.variant else self.name


class Schedule(Component):
    """A learning-rate schedule: a pure function of the global step."""

    kind = "schedules"

    @abstractmethod
    def lr(self, step: int, steps_per_epoch: int, total_steps: int, base_lr: float) -> float:
        """The learning rate for optimizer step ``step`` (0-based)."""

    def anneal_epochs(self, epochs: int) -> list[int]:
        """1-based epochs whose first step uses a smaller LR than the epoch before."""
        return []


class Regularizer(Component):
    """Changes training (not evaluation) of a model, for example activation noise."""

    kind = "regularizers"

    @abstractmethod
    def attach(self, model: nn.Module) -> None:
        """Install the regularizer on ``model`` (hooks, wrappers)."""

    @abstractmethod
    def set_epoch(self, epoch: int) -> None:
        """Called before each training epoch (1-based)."""

    def anneal_epochs(self, epochs: int) -> list[int]:
        """1-based epochs at which the regularizer's strength drops."""
        return []


class Metric(Component):
    """A number computed from the model after an epoch. Docstrings state the denominator."""

    kind = "metrics"
    higher_is_better: ClassVar[bool] = True
    needs_patch: ClassVar[bool] = False
    """Metrics that need a patch generator are recorded as None in trials without a patch."""

    @abstractmethod
    def compute(self, ctx: "EvalContext") -> float:
        """Evaluate on ``ctx`` (the model is already in eval mode)."""


KINDS: dict[str, type[Component]] = {
    cls.kind: cls
    for cls in (Dataset, PatchGenerator, Architecture, Schedule, Metric, Regularizer)
}

KIND_ALIASES: dict[str, str] = {"patch": "patches", "dataset": "datasets",
                                "architecture": "architectures", "schedule": "schedules",
                                "metric": "metrics", "regularizer": "regularizers"}


def image_dims(image_shape: tuple[int, ...], field: str, who: str) -> tuple[int, int, int]:
    """(channels, height, width) of image data; for feature vectors, bad input that names
    the spec field and the component that needs images."""
    if len(image_shape) != 3:
        raise PatchbenchError(f"{field}: {who} needs images (channels, height, width); the "
                              f"dataset gives feature vectors of shape {tuple(image_shape)}")
    channels, height, width = image_shape
    return channels, height, width


def singular(kind: str) -> str:
    return {"patches": "patch generator"}.get(kind, kind[:-1])


__all__: list[Any] = ["Params", "Component", "DataBundle", "Dataset", "PatchGenerator",
                      "Architecture", "Schedule", "Regularizer", "Metric", "KINDS"]
