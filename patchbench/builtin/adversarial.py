"""Built-in adversarial training (Madry et al. 2018): each training batch replaced by its PGD
adversary before the optimizer step.

L-inf PGD in pixel units on the normalized images: a uniform random start in the eps-ball,
``steps`` signed-gradient steps of ``step_size``, each projected back onto the eps-ball
around the batch and onto valid pixels [0, 1]. Defaults are Madry et al.'s CIFAR-10 setting
(eps 8/255, step 2/255, 7 steps). The attack runs with the model in eval mode (batch norm
from its running statistics, which the attack therefore never moves), as APBench's and
TRADES' PyTorch code do, and takes gradients with respect to the input only.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from .. import hookimpl
from ..components import DataBundle, Params, Perturbation


class PGDParams(Params):
    eps: float = Field(8 / 255, ge=0, le=1)
    """L-inf radius in pixel intensity (0..1): Madry et al.'s 8/255."""
    step_size: float = Field(2 / 255, gt=0, le=1)
    """Step in pixel intensity: Madry et al.'s 2/255."""
    steps: int = Field(7, ge=1, le=1000)
    """Projected gradient steps: Madry et al.'s 7 on CIFAR-10 (APBench: 10)."""
    start: Literal["uniform", "none"] = "uniform"
    """uniform: a random start drawn uniformly in the eps-ball (Madry et al.); none: from the
    batch itself."""


class PGD(Perturbation):
    """Adversarial training: each training batch replaced by its L-inf PGD adversary (default
    eps 8/255, step 2/255, 7 steps, random start; Madry et al.)."""

    name = "pgd"
    Params = PGDParams

    def setup(self, data: DataBundle, device: torch.device) -> None:
        spatial = [1] * (len(data.image_shape) - 1)
        std = torch.tensor(data.std, device=device).view(1, -1, *spatial)
        mean = torch.tensor(data.mean, device=device).view(1, -1, *spatial)
        unit = 255.0 if data.x_train.dtype == torch.uint8 else 1.0
        # Pixel units -> the normalized units the model sees, per channel.
        self.per_unit = 1.0 / std if unit == 255.0 else torch.ones_like(std)
        self.low, self.high = (0 - mean) / std, (1 - mean) / std
        if unit != 255.0:  # feature vectors: no pixel range to stay in
            self.low, self.high = torch.full_like(std, -torch.inf), torch.full_like(std, torch.inf)

    def perturb(self, model: nn.Module, x: Tensor, targets: Tensor,
                gen: torch.Generator) -> Tensor:
        p = self.params
        eps, step = p.eps * self.per_unit, p.step_size * self.per_unit
        lo, hi = torch.maximum(x - eps, self.low), torch.minimum(x + eps, self.high)
        adv = x.detach()
        if p.start == "uniform":
            noise = torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype)
            adv = torch.minimum(torch.maximum(adv + (2 * noise - 1) * eps, lo), hi)
        was_training = model.training
        model.eval()
        try:
            for _ in range(p.steps):
                adv = adv.detach().requires_grad_(True)
                loss = F.cross_entropy(model(adv).float(), targets)
                grad, = torch.autograd.grad(loss, [adv])
                adv = torch.minimum(torch.maximum(adv.detach() + step * grad.sign(), lo), hi)
        finally:
            model.train(was_training)
        return adv.detach().to(x.dtype)


@hookimpl
def register_perturbations(register) -> None:
    register(PGD)
