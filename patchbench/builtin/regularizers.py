"""Built-in regularizers: the paper's annealed activation noise, with the decay modes of the
authors' plain-CIFAR script, and the authors' WideResNet dropout as a per-arm choice."""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, ValidationInfo, field_validator
from torch import Tensor, nn

from .. import hookimpl
from ..components import Params, Regularizer
from ..errors import PatchbenchError
from .architectures import BasicBlock


DecayMode = Literal["anneal", "none", "step", "step_early", "cont"]
STEP_EPOCHS: dict[str, tuple[int, ...]] = {"step": (60, 120, 150), "step_early": (30,)}
"""The authors' step decays (train_util.py): the std is multiplied by ``rate`` from each of
these 1-based epochs on."""


class ActNoiseParams(Params):
    added_later = ("decay",)  # rate applies only to the new modes: not_applicable drops it

    std: float = Field(0.4, ge=0)
    """The noise std at epoch 1 (the patch experiment: 0.4; the authors' plain-CIFAR script:
    0.01)."""
    decay: DecayMode = "anneal"
    """How the std changes with the 1-based epoch. anneal: one step, x ``factor`` from
    ``anneal_epoch`` on (the patch experiment). The authors' plain-CIFAR modes, which use
    ``rate``: none (constant); step: x rate from epochs 60, 120 and 150; step_early: x rate
    from epoch 30; cont: std * rate^(epoch - 1)."""
    rate: float = Field(0.995, gt=0, le=1)
    """decay step, step_early, cont: the authors' decay rate r."""
    anneal_epoch: int | None = Field(30, ge=1)
    """decay anneal: from this 1-based epoch on, the std is multiplied by ``factor``
    (None: never)."""
    factor: float = Field(1e-5, ge=0)
    """decay anneal: the factor applied from ``anneal_epoch`` on."""
    shared: bool = True
    """One noise map per forward, shared across the batch and channels (the authors' choice:
    shape (1, 1, H, W) for images, (1, F) for flat features); False draws i.i.d. noise."""

    @field_validator("anneal_epoch", "factor", "rate")
    @classmethod
    def _of_the_mode(cls, value: Any, info: ValidationInfo) -> Any:
        # Runs for given values only. A param of the other modes is an error when given a
        # value of its own; its default is let through, as the conformance kit gives them all.
        decay = info.data.get("decay")
        if decay is None or value == cls.model_fields[info.field_name].default:
            return value  # (an invalid decay is reported on its own)
        if info.field_name == "rate" and decay == "anneal":
            raise ValueError("applies to decay step, step_early and cont; decay anneal (the "
                             "default) uses anneal_epoch and factor")
        if info.field_name != "rate" and decay != "anneal":
            raise ValueError(f"only for decay anneal; decay {decay} is set by rate")
        return value

    def not_applicable(self) -> set[str]:
        if self.decay == "anneal":
            return {"rate"}
        return {"anneal_epoch", "factor"} | ({"rate"} if self.decay == "none" else set())

    def level(self, epoch: int) -> float:
        """The noise std during 1-based ``epoch``."""
        if self.decay == "anneal":
            annealed = self.anneal_epoch is not None and epoch >= self.anneal_epoch
            return self.std * (self.factor if annealed else 1.0)
        if self.decay == "cont":
            return self.std * self.rate ** (epoch - 1)
        passed = sum(epoch >= m for m in STEP_EPOCHS.get(self.decay, ()))
        return self.std * self.rate ** passed

    def drop_epochs(self, epochs: int) -> list[int]:
        """The 1-based epochs (up to ``epochs``) from which the std steps down; none for
        cont, which decays a little every epoch."""
        if self.decay == "anneal":
            a = self.anneal_epoch
            return [a] if a is not None and a <= epochs else []
        return [m for m in STEP_EPOCHS.get(self.decay, ()) if m <= epochs]


class ActNoise(Regularizer):
    """Gaussian noise added to the input of every nn.ReLU while training, decayed by epoch."""

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
        self.level = self.params.level(epoch)

    def anneal_epochs(self, epochs: int) -> list[int]:
        return self.params.drop_epochs(epochs)


class DropoutParams(Params):
    rate: float = Field(0.4, gt=0, lt=1)
    """The dropout rate (the authors' plain-CIFAR script: 0.4)."""


class Dropout(Regularizer):
    """The authors' WideResNet dropout for one arm: the rate between the two convolutions of
    every wrn block, while training."""

    name = "dropout"
    Params = DropoutParams

    def attach(self, model: nn.Module) -> None:
        blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
        if not blocks:
            raise PatchbenchError("regularizer dropout: the model has no wrn blocks (it sets "
                                  "the dropout of the built-in wrn; timm models take "
                                  "params.drop_rate)")
        if any(b.built_dropout for b in blocks):
            raise PatchbenchError("regularizer dropout: the wrn already has dropout from its "
                                  "params.dropout; give the rate in one place")
        for block in blocks:
            block.dropout = self.params.rate

    def set_epoch(self, epoch: int) -> None:
        """Dropout does not change over epochs."""


@hookimpl
def register_regularizers(register) -> None:
    register(ActNoise)
    register(Dropout)
