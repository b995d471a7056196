"""Built-in optimizers: SGD (the paper's, and the default), Adam, AdamW and SAM.

The spec's ``optimizer`` mapping names one (``name``, default ``sgd``) and gives its base LR
(``lr``, which the schedule scales); its other keys are the optimizer's params::

    optimizer: {lr: 0.1, momentum: 0.9, nesterov: true, weight_decay: 5.0e-4}
    optimizer: {name: adamw, lr: 1.0e-3, weight_decay: 0.05}
    optimizer: {name: sam, lr: 0.1, rho: 0.05}
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from pydantic import Field, field_validator, model_validator
from torch import Tensor, nn

from .. import hookimpl
from ..components import Optimizer, Params


class SGDParams(Params):
    momentum: float = Field(0.9, ge=0, lt=1)
    """Heavy-ball momentum (the authors': 0.9)."""
    nesterov: bool = True
    """Nesterov's variant of momentum (needs momentum > 0)."""
    weight_decay: float = Field(5e-4, ge=0)
    """L2 penalty added to the gradient (torch.optim.SGD's weight_decay)."""

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> "SGDParams":
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs momentum > 0")
        return self


class SGD(Optimizer):
    """Stochastic gradient descent with (Nesterov) momentum and weight decay: the paper's."""

    name = "sgd"
    Params = SGDParams

    def build(self, parameters: Iterable[nn.Parameter], lr: float) -> torch.optim.Optimizer:
        p = self.params
        return torch.optim.SGD(parameters, lr=lr, momentum=p.momentum, nesterov=p.nesterov,
                               weight_decay=p.weight_decay)


class AdamParams(Params):
    betas: tuple[float, float] = Field((0.9, 0.999))
    """Decay rates of the first and second moment estimates, each in [0, 1)."""
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    """L2 penalty added to the gradient (coupled, as torch.optim.Adam does it)."""

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, betas: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in betas):
            raise ValueError("each must be in [0, 1)")
        return betas


class Adam(Optimizer):
    """Adam (Kingma & Ba) with torch's defaults: betas (0.9, 0.999), eps 1e-8, no weight decay."""

    name = "adam"
    Params = AdamParams
    torch_class: type[torch.optim.Optimizer] = torch.optim.Adam

    def build(self, parameters: Iterable[nn.Parameter], lr: float) -> torch.optim.Optimizer:
        p = self.params
        return self.torch_class(parameters, lr=lr, betas=p.betas, eps=p.eps,
                                weight_decay=p.weight_decay)


class AdamWParams(AdamParams):
    weight_decay: float = Field(0.01, ge=0)
    """Decoupled weight decay (Loshchilov & Hutter): each step multiplies the weights by
    1 - lr * weight_decay, so it follows the schedule's LR (torch.optim.AdamW)."""


class AdamW(Adam):
    """AdamW: Adam with decoupled weight decay, torch's defaults (weight_decay 0.01)."""

    name = "adamw"
    Params = AdamWParams
    torch_class = torch.optim.AdamW


class SAMParams(SGDParams):
    rho: float = Field(0.05, gt=0)
    """Radius of the neighbourhood the sharpness is measured in (Foret et al.: 0.05)."""
    adaptive: bool = False
    """ASAM (Kwon et al. 2021): scale the ascent by |w| per weight; it wants a larger rho
    (they use 0.5 to 2 for SGD on CIFAR)."""


class SAM(Optimizer):
    """Sharpness-aware minimization (Foret et al. 2021) over SGD: two forward/backward passes
    per step, the base SGD step taken with the gradient at the ascended weights."""

    name = "sam"
    Params = SAMParams

    def build(self, parameters: Iterable[nn.Parameter], lr: float) -> torch.optim.Optimizer:
        # The base optimizer is all the state there is: the ascent is undone within a step.
        return SGD(self.params).build(parameters, lr)

    def step(self, optimizer: torch.optim.Optimizer, loss_fn: Callable[[], Tensor]) -> Tensor:
        rho, adaptive = self.params.rho, self.params.adaptive
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        with torch.no_grad():
            # e(w) = rho * g / ||g|| (ASAM: rho * w^2 g / ||w g||): the first-order worst case
            # within the rho-ball. Computed on the device: no sync.
            scaled = [p.abs() * p.grad if adaptive else p.grad for p in params]
            norm = torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(s) for s in scaled]))
            scale = rho / (norm + 1e-12)
            saved = [p.detach().clone() for p in params]
            for p, s in zip(params, scaled):
                p.add_(s * p.abs() * scale if adaptive else s * scale)
        optimizer.zero_grad(set_to_none=True)
        loss_fn().backward()
        with torch.no_grad():
            for p, w in zip(params, saved):
                p.copy_(w)  # back to w exactly (w + e - e would round)
        optimizer.step()  # at w, with the gradient taken at w + e
        return loss


@hookimpl
def register_optimizers(register) -> None:
    for cls in (SGD, Adam, AdamW, SAM):
        register(cls)
