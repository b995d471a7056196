"""Built-in label-mixing augmentations: mixup (Zhang et al. 2018) and cutmix (Yun et al. 2019),
as their authors' CIFAR code does them (facebookresearch/mixup-cifar10, clovaai/CutMix-PyTorch).

Once per training batch: one mixing weight lambda ~ Beta(alpha, alpha) for the batch, a random
partner for each image (a permutation of the batch), the images mixed and the targets mixed
with the same weight. Everything is drawn on the device from the trial's generator, with no
device sync: the Beta draw is Marsaglia and Tsang's gamma method with its rejection done on a
block of candidates at once.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from .. import hookimpl
from ..components import DataBundle, LabelMixing, Params, image_dims

CANDIDATES = 16
"""Gamma candidates drawn per sample: each is accepted with probability > 0.95, so all 16
fail with probability < 1e-20 (then the mean is used)."""


def gamma(shape: float, n: int, gen: torch.Generator, device: torch.device) -> Tensor:
    """n draws of Gamma(shape, 1) (Marsaglia & Tsang 2000; shape < 1 by the boost
    Gamma(a) = Gamma(a + 1) * U^(1/a)), from ``gen`` only, with no device sync."""
    a = shape + 1.0 if shape < 1 else shape
    d = a - 1.0 / 3.0
    c = 1.0 / (9.0 * d) ** 0.5
    z = torch.randn(n, CANDIDATES, generator=gen, device=device)
    u = torch.rand(n, CANDIDATES, generator=gen, device=device)
    v = (1 + c * z) ** 3
    ok = (v > 0) & (u.log() < 0.5 * z ** 2 + d - d * v + d * v.clamp_min(1e-30).log())
    first = ok.float().argmax(1, keepdim=True)  # the first accepted candidate
    g = torch.where(ok.any(1), (d * v).gather(1, first).squeeze(1), torch.full_like(z[:, 0], d))
    if shape < 1:
        g = g * torch.rand(n, generator=gen, device=device) ** (1.0 / shape)
    return g


def beta(alpha: float, n: int, gen: torch.Generator, device: torch.device) -> Tensor:
    """n draws of Beta(alpha, alpha), as float32 on ``device``."""
    x, y = gamma(alpha, n, gen, device), gamma(alpha, n, gen, device)
    return x / (x + y)


class MixParams(Params):
    alpha: float = Field(1.0, gt=0)
    """lambda ~ Beta(alpha, alpha) (the authors' CIFAR-10 setting: 1, a uniform lambda)."""


class Mixup(LabelMixing):
    """mixup: each image blended with a random partner of its batch, lambda * x + (1 - lambda) *
    x_partner, and its target the same blend of the two labels (lambda ~ Beta(alpha, alpha),
    one per batch)."""

    name = "mixup"
    Params = MixParams

    def mix(self, x: Tensor, targets: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        lam = beta(self.params.alpha, 1, gen, x.device)
        partner = torch.randperm(len(x), generator=gen, device=x.device)
        lam_x = lam.to(x.dtype).view(1, *([1] * (x.dim() - 1)))
        mixed = lam_x * x + (1 - lam_x) * x[partner]
        return mixed, lam * targets + (1 - lam) * targets[partner]


class CutMixParams(MixParams):
    p: float = Field(0.5, ge=0, le=1)
    """Probability that a batch is mixed at all (the authors' CIFAR command: cutmix_prob
    0.5); an unmixed batch trains as it came."""


class CutMix(LabelMixing):
    """cutmix: a box of each image replaced by the same box of a random partner of its batch
    (area 1 - lambda, lambda ~ Beta(alpha, alpha), centre uniform, clipped at the border), the
    target mixed by the area actually kept; a batch is mixed with probability p."""

    name = "cutmix"
    Params = CutMixParams

    def setup(self, data: DataBundle, device: torch.device) -> None:
        image_dims(data.image_shape, "augmentations", f"augmentation {self.name!r}")

    def mix(self, x: Tensor, targets: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        n, _, h, w = x.shape
        dev = x.device
        lam = beta(self.params.alpha, 1, gen, dev)
        partner = torch.randperm(n, generator=gen, device=dev)
        apply = torch.rand(1, generator=gen, device=dev) < self.params.p
        # rand_bbox of the authors' code: a cut of sqrt(1 - lambda) of each side, truncated
        # to whole pixels, centred at a uniform pixel and clipped to the image.
        cut_h = (h * (1 - lam).sqrt()).floor().long()
        cut_w = (w * (1 - lam).sqrt()).floor().long()
        cy = torch.randint(0, h, (1,), generator=gen, device=dev)
        cx = torch.randint(0, w, (1,), generator=gen, device=dev)
        y1, y2 = (cy - cut_h // 2).clamp(0, h), (cy + cut_h // 2).clamp(0, h)
        x1, x2 = (cx - cut_w // 2).clamp(0, w), (cx + cut_w // 2).clamp(0, w)
        rows, cols = torch.arange(h, device=dev), torch.arange(w, device=dev)
        box = ((rows >= y1) & (rows < y2))[:, None] & ((cols >= x1) & (cols < x2))[None, :]
        box = box & apply
        mixed = torch.where(box, x[partner], x)
        kept = 1 - box.sum().float() / (h * w)  # the authors' lambda adjusted to the box
        return mixed, kept * targets + (1 - kept) * targets[partner]


@hookimpl
def register_augmentations(register) -> None:
    register(Mixup)
    register(CutMix)
