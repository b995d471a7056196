"""What a crafted poison sees while it is crafted: the training data, a seeded generator, a
surrogate model built from the registry, and checkpoints so that a killed crafting run
resumes.

A poison that is optimized before training (error-minimizing noise, for example) sets
``crafts = True`` on its :class:`~patchbench.components.PatchGenerator` and implements
``craft(ctx)``. patchbench calls it once per crafting configuration (the poison's params,
the dataset and the code that crafts), stores what it returns as an artifact under the
output directory, and hands that artifact to every trial, rerun and preview through
``use_crafted``. The surrogate is named in the poison's params as a :class:`SurrogateSpec`,
validated like any component of the spec (``patch.params.surrogate.architecture.name``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from pydantic import Field
from torch import Tensor, nn

from .data import DataBundle
from .errors import PatchbenchError
from .kinds import Params


class ComponentChoice(Params):
    """A component by name with its params, inside a poison's params."""

    name: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)


class SurrogateSpec(Params):
    """The model a poison is crafted against, and how it is trained while crafting."""

    architecture: ComponentChoice
    optimizer: ComponentChoice = ComponentChoice(name="sgd")
    lr: float = Field(0.1, gt=0)
    """The base LR the schedule scales."""
    schedule: ComponentChoice = ComponentChoice(name="constant")
    batch_size: int = Field(128, ge=1)
    """Images per surrogate training step (the schedule's epoch is n_train / batch_size
    steps)."""


class Surrogate:
    """A freshly initialized surrogate: ``model``, its torch ``optimizer``, and
    :meth:`train_step`, one optimizer step at the LR its schedule gives the step count."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 step_fn: Callable[[Callable[[], Tensor]], Tensor], lr: Callable[[int], float]):
        self.model, self.optimizer = model, optimizer
        self._step_fn, self._lr = step_fn, lr
        self.steps = 0

    def train_step(self, x: Tensor, y: Tensor) -> Tensor:
        """One step on the batch (normalized images, labels) in train mode; the loss."""
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr(self.steps)
        loss = self._step_fn(lambda: nn.functional.cross_entropy(self.model(x), y))
        self.steps += 1
        return loss

    def state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "steps": self.steps}

    def restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps = int(state["steps"])


class CraftContext:
    """Handed to ``craft``: ``data`` (on ``device``, uint8 as stored; ``normalize`` maps it to
    the model's inputs), ``generator`` (seeded: every random draw of the crafting run comes
    from it), :meth:`surrogate`, :meth:`save` / :meth:`resume` and :meth:`progress`."""

    def __init__(self, data: DataBundle, device: torch.device, seed: int,
                 build_surrogate: Callable[[SurrogateSpec], Surrogate],
                 checkpoint: Path | None = None,
                 report: Callable[[int, int], None] | None = None):
        self.data, self.device = data, device
        self.normalize = data.normalizer(device)
        self.generator = torch.Generator(device).manual_seed(seed)
        self._build, self._checkpoint, self._report = build_surrogate, checkpoint, report
        self.stats: dict[str, int | float | str] = {}
        """What the poison reports of its crafting (``images_per_s``, ``rounds``, the
        surrogate's final error): stored with the artifact and in every trial's record."""

    def surrogate(self, spec: SurrogateSpec) -> Surrogate:
        """A new surrogate, initialized from the crafting generator's seed."""
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(int(torch.randint(2**31, (1,), generator=self.generator,
                                                device=self.device)))
            return self._build(spec)

    def save(self, state: dict[str, Any]) -> None:
        """Keep ``state`` (tensors, numbers, strings; the generator's state is added) so that
        a killed crafting run resumes from it; written atomically."""
        if self._checkpoint is None:
            return
        self._checkpoint.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._checkpoint.with_suffix(".tmp")
        torch.save({"state": state, "generator": self.generator.get_state()}, tmp)
        tmp.replace(self._checkpoint)

    def resume(self) -> dict[str, Any] | None:
        """The last :meth:`save` d state of a crafting run that was killed (on the CPU), or
        None; the generator continues from where it was."""
        if self._checkpoint is None or not self._checkpoint.exists():
            return None
        saved = torch.load(self._checkpoint, map_location="cpu", weights_only=True)
        self.generator.set_state(saved["generator"])
        return saved["state"]

    def progress(self, done: int, total: int) -> None:
        """Say how far crafting is (any unit: rounds, epochs)."""
        if self._report is not None:
            self._report(done, total)


def load_crafted(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """An artifact's tensors and metadata."""
    if not path.exists():
        raise PatchbenchError(f"{path}: no crafted poison here; `patchbench run` crafts it")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    return saved["tensors"], saved["meta"]


def use_crafted(patch: Any, artifacts: dict[str, str], device: torch.device) -> None:
    """Hand a crafting patch generator its artifact (``artifacts``: patch name → path);
    nothing for one that does not craft."""
    if not patch.crafts:
        return
    where = artifacts.get(patch.name)
    if where is None:
        raise PatchbenchError(f"{patch.origin or patch.name}: its poison is crafted and no artifact was given; "
                              "`patchbench run` crafts it")
    tensors, _ = load_crafted(Path(where))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        patch.use_crafted(tensors)
