"""Built-in regularizers: the paper's annealed activation noise."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from .. import hookimpl
from ..components import Params, Regularizer
from ..errors import PatchbenchError


class ActNoiseParams(Params):
    std: float = Field(0.4, ge=0)
    anneal_epoch: int | None = Field(30, ge=1)
    """From this 1-based epoch on, the std is multiplied by ``factor`` (None: never)."""
    factor: float = Field(1e-5, ge=0)
    shared: bool = True
    """One noise map per forward, shared across the batch and channels (the authors' choice:
    shape (1, 1, H, W) for images, (1, F) for flat features); False draws i.i.d. noise."""


class ActNoise(Regularizer):
    """Gaussian noise added to the input of every nn.ReLU while training, annealed at an epoch."""

    name = "act_noise"
    Params = ActNoiseParams

    def __init__(self, params: Params | None = None, variant: str | None = None):
        super().__init__(params, variant)
        self.level = self.params.std

    def attach(self, model: nn.Module) -> None:
        relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
        if not relus:
            raise PatchbenchError("regularizer act_noise: the model has no nn.ReLU modules "
                                  "(it adds noise at the input of nn.ReLU)")
        for relu in relus:
            relu.register_forward_pre_hook(self._hook)

    def _hook(self, module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...] | None:
        if not module.training or self.level == 0:
            return None
        x = args[0]
        if self.params.shared:
            shape = (1, 1, *x.shape[2:]) if x.dim() > 2 else (1, *x.shape[1:])
        else:
            shape = x.shape
        return (x + self.level * torch.randn(shape, device=x.device, dtype=x.dtype),)

    def set_epoch(self, epoch: int) -> None:
        annealed = self.params.anneal_epoch is not None and epoch >= self.params.anneal_epoch
        self.level = self.params.std * (self.params.factor if annealed else 1.0)

    def anneal_epochs(self, epochs: int) -> list[int]:
        a = self.params.anneal_epoch
        return [a] if a is not None and a <= epochs else []


@hookimpl
def register_regularizers(register) -> None:
    register(ActNoise)
