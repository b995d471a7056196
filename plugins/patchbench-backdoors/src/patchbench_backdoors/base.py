"""What every backdoor generator shares: a fixed poisoned subset, a target mapping, and the
round trip from normalized units to pixels and back (triggers are defined on [0, 1] pixels).

Modes: ``all_to_one`` relabels poisoned images to ``target``; ``all_to_all`` relabels class
c to c + 1 (mod K). ``clean_label`` (where the method defines it) poisons only images that
already belong to the target class and keeps every label.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from patchbench.components import DataBundle, FixedSubsetPatch, Params, image_dims
from patchbench.errors import PatchbenchError


class BackdoorParams(Params):
    poison_rate: float = Field(0.1, ge=0, le=1)
    """Fraction of the training images poisoned (of the target class when clean_label)."""
    mode: Literal["all_to_one", "all_to_all"] = "all_to_one"
    target: int = Field(0, ge=0)
    clean_label: bool = False
    seed: int = 0
    """Seed of the trigger pattern and of the poisoned subset (not the training seed)."""

    @model_validator(mode="after")
    def _clean_label_is_all_to_one(self) -> "BackdoorParams":
        if self.clean_label and self.mode != "all_to_one":
            raise ValueError("clean_label needs mode all_to_one")
        return self


class Backdoor(FixedSubsetPatch):
    """Base of the backdoor generators; subclasses define ``trigger`` on pixels in [0, 1]."""

    Params = BackdoorParams
    supports_clean_label = False

    def setup(self, data: DataBundle, device: torch.device) -> None:
        p = self.params
        image_dims(data.image_shape, "patch", self.name)
        if p.target >= data.num_classes:
            raise PatchbenchError(f"patch.params.target: {p.target} is not a class "
                                  f"(0..{data.num_classes - 1})")
        if p.clean_label and not self.supports_clean_label:
            raise PatchbenchError(f"patch.params.clean_label: {self.name} defines no "
                                  "clean-label variant")
        self.num_classes = data.num_classes
        self.mean = torch.tensor(data.mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(data.std, device=device).view(1, -1, 1, 1)
        self.draw_subsets(data, p.poison_rate, p.seed, device)
        if p.clean_label:
            self.subsets["train"] &= data.y_train.to(device) == p.target
        self.build(data, device, torch.Generator().manual_seed(p.seed))

    def build(self, data: DataBundle, device: torch.device, gen: torch.Generator) -> None:
        """Draw the fixed trigger pattern (subclasses that need one)."""

    @abstractmethod
    def trigger(self, pixels: Tensor, gen: torch.Generator) -> Tensor:
        """Apply the trigger to images in [0, 1]."""

    def target_for(self, y: Tensor) -> Tensor:
        """The label the attacker wants for images of class ``y``."""
        if self.params.mode == "all_to_all":
            return (y + 1) % self.num_classes
        return torch.full_like(y, self.params.target)

    def _triggered(self, x: Tensor, gen: torch.Generator) -> Tensor:
        pixels = (x * self.std + self.mean).clamp(0, 1)
        return (self.trigger(pixels, gen).clamp(0, 1) - self.mean) / self.std

    def apply(self, x: Tensor, y: Tensor, idx: Tensor, split: str,
              gen: torch.Generator) -> tuple[Tensor, Tensor]:
        mask = self.subsets[split][idx]  # not poison_mask: WaNet's adds its noise-mode images
        poisoned = self._triggered(x, gen)
        x = torch.where(mask.view(-1, 1, 1, 1), poisoned, x)
        if not self.params.clean_label:
            y = torch.where(mask, self.target_for(y), y)
        return x, y

    def stamp(self, x: Tensor, cls: Tensor, gen: torch.Generator) -> Tensor:
        # A backdoor trigger carries no class of its own: the same trigger for every image.
        return self._triggered(x, gen)

    def patch_only(self, cls: Tensor, image_shape: tuple[int, int, int],
                   gen: torch.Generator) -> Tensor:
        blank = torch.zeros((len(cls), *image_shape), device=cls.device)  # the mean image
        return self._triggered(blank, gen)
