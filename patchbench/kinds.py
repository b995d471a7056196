"""The interfaces every component implements, one abstract base per kind (but metrics, which
live with what they see in :mod:`patchbench.evaluation`). Plugins import them all from
:mod:`patchbench.components`.

A component is a class with a ``name``, a one-line docstring (shown by ``patchbench list``)
and a pydantic ``Params`` model whose defaults are the component's documented defaults. The
harness validates the spec's params against ``Params`` and builds the component with
``Component(params)``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, Iterable

import torch
from pydantic import BaseModel, ConfigDict, field_validator, model_serializer
from torch import Tensor, nn

from .data import DataBundle

FLOAT32_MAX = 3.4028234663852886e38


def finite_float32(value: Any) -> Any:
    """Refuse floats (also inside lists and mappings) that are not finite or overflow float32:
    every float ends up in a float32 tensor, where 1e300 is inf and breaks far from the spec."""
    if isinstance(value, float) and not (math.isfinite(value) and abs(value) <= FLOAT32_MAX):
        raise ValueError(f"must be a finite number of magnitude at most {FLOAT32_MAX:.4g} "
                         "(float32)")
    if isinstance(value, (list, tuple)):
        for item in value:
            finite_float32(item)
    elif isinstance(value, dict):
        for item in value.values():
            finite_float32(item)
    return value


class Params(BaseModel):
    """Base of every component's params: unknown keys are errors, values are validated,
    floats are finite and fit float32."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    added_later: ClassVar[tuple[str, ...]] = ()
    """Params added after specs were published: left out of the resolved params, and so of
    the spec hash, while they hold their default, so existing specs keep their hash."""

    @field_validator("*", mode="after")
    @classmethod
    def _finite_float32(cls, value: Any) -> Any:
        return finite_float32(value)

    def not_applicable(self) -> set[str]:
        """Params that do not apply given the others' values (left out of the resolved
        params, so that values which cannot matter do not change the spec hash)."""
        return set()

    @model_serializer(mode="wrap")
    def _resolved(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        fields = type(self).model_fields
        drop = self.not_applicable() | {
            name for name in self.added_later
            if getattr(self, name) == fields[name].get_default(call_default_factory=True)}
        return {k: v for k, v in data.items() if k not in drop}


class Component(ABC):
    """Base of all component kinds."""

    kind: ClassVar[str]
    name: ClassVar[str]
    Params: ClassVar[type[Params]] = Params

    origin: str = ""
    """Who provides it, for error messages: kind, name, plugin, distribution (set by the
    registry when it builds the component)."""

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


class Dataset(Component):
    """Provides images and labels."""

    kind = "datasets"

    @abstractmethod
    def load(self) -> DataBundle:
        """Return the whole dataset on the CPU (uint8 NCHW images, int64 labels)."""

    def declared_inputs(self) -> tuple[tuple[int, ...], int] | None:
        """(image shape, number of classes) when known without loading, so that ``validate``
        can try the architectures on such inputs; None when only ``load`` can tell."""
        return None


class PatchGenerator(Component):
    """Adds a memorizable, class-dependent pattern to images.

    All methods take *normalized* float images (N, C, H, W) on the device and a
    ``torch.Generator`` on the same device for every random draw, so that a run is
    deterministic for a seed. They must not use Python loops over samples.

    A *class-wise* pattern depends on the class only. A *sample-wise* one (``sample_wise =
    True``: each training image has its own pattern) is told, in :meth:`stamp` and
    :meth:`patch_only`, which training images' patterns to use (``idx``), so that evaluation
    and the preview show the patterns it trains with. A poison that must be *crafted* before
    training (``crafts = True``: an optimized perturbation, one made against a surrogate model)
    implements :meth:`craft`, run once per crafting configuration for a whole grid, and gets
    its result in every trial through :meth:`use_crafted`, before :meth:`setup`.
    """

    kind = "patches"
    sample_wise: ClassVar[bool] = False
    """True when each training image has its own pattern: then ``stamp`` and ``patch_only``
    receive ``idx``, the training images (of the requested classes, from the poisoned
    subset) whose patterns to use."""
    crafts: ClassVar[bool] = False
    """True when the poison is crafted once before training (:meth:`craft`)."""

    @abstractmethod
    def setup(self, data: DataBundle, device: torch.device) -> None:
        """Draw the fixed pattern and the fixed subsets; called once per trial. Draw from a
        generator of your own, seeded from the params, not from torch's global RNG (which
        the trial's model initialization uses: the core isolates it, the kit flags it)."""

    @abstractmethod
    def apply(self, x: Tensor, y: Tensor, idx: Tensor, split: str,
              gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """Patch a batch as the training distribution does (``split`` is 'train' or 'test').

        ``idx`` are the images' dataset indices, so a fixed subset can be chosen once and a
        sample-wise pattern follows its image whatever the batch order.
        Returns the images and the labels to train on (a generator may relabel).
        """

    def poison_mask(self, idx: Tensor, split: str) -> Tensor:
        """Which of the images with dataset indices ``idx`` ``apply`` may modify (the fixed
        poisoned subset). ``apply`` must leave every other image, and its label, unchanged."""
        return torch.ones_like(idx, dtype=torch.bool)

    @abstractmethod
    def stamp(self, x: Tensor, cls: Tensor, gen: torch.Generator,
              idx: Tensor | None = None) -> Tensor:
        """Put class ``cls[i]``'s patch on every image ``x[i]`` (image content kept); for a
        sample-wise generator, the pattern of training image ``idx[i]`` (of class ``cls[i]``).
        Class-wise generators may leave ``idx`` out of their signature: it is only passed to
        sample-wise ones."""

    @abstractmethod
    def patch_only(self, cls: Tensor, image_shape: tuple[int, int, int],
                   gen: torch.Generator, idx: Tensor | None = None) -> Tensor:
        """Images that carry class ``cls[i]``'s patch and no image content (sample-wise: the
        pattern of training image ``idx[i]``)."""


    def craft(self, ctx: Any) -> dict[str, Tensor]:
        """Craft the poison (``crafts = True``) on ``ctx``, a
        :class:`patchbench.crafting.CraftContext`: the training data on the device, a seeded
        generator, surrogates built from the registry, checkpoints for a resume. Return
        tensors only: they are stored as the artifact :meth:`use_crafted` receives."""
        raise TypeError(f"{type(self).__name__} does not craft (crafts = False)")

    def use_crafted(self, artifact: dict[str, Tensor]) -> None:
        """Receive what :meth:`craft` returned (on the CPU), before :meth:`setup`, in every
        trial, preview and estimate that uses this poison."""


class FixedSubsetPatch(PatchGenerator):
    """A patch generator that may modify only a fixed subset of each split, drawn once.

    ``setup`` calls :meth:`draw_subsets` (the authors' draw, a probability per image) or
    :meth:`poison_exactly` (exactly a ratio of the training set, the test set clean: the
    availability-poisoning setting); :meth:`poison_mask` then answers from it, and ``apply``
    uses ``self.poison_mask(idx, split)`` to choose the images it modifies."""

    subsets: dict[str, Tensor]
    """The bool mask by dataset index of each split ('train', 'test')."""

    def draw_subsets(self, data: DataBundle, fraction: float, seed: int,
                     device: torch.device) -> None:
        """The authors' fixed subset (:meth:`DataBundle.fixed_subsets`) of each split."""
        self.subsets = data.fixed_subsets(fraction, seed, device)

    def poison_exactly(self, data: DataBundle, ratio: float, seed: int,
                       device: torch.device) -> None:
        """Exactly ``round(ratio * n_train)`` training images (:meth:`DataBundle.poison_subset`),
        no test image: evaluation then measures the model on a clean test set."""
        self.subsets = data.poison_subset(ratio, seed, device)

    def poison_mask(self, idx: Tensor, split: str) -> Tensor:
        return self.subsets[split][idx]


class Architecture(Component):
    """Builds a model that maps images to class logits."""

    kind = "architectures"

    @abstractmethod
    def build(self, num_classes: int, image_shape: tuple[int, int, int]) -> nn.Module:
        """Return a freshly initialized model (initialization uses torch's global RNG)."""

    def label(self) -> str:
        """Short name used in trial keys and tables (``wrn-16-10``, ``timm:resnet18``)."""
        return f"{self.name}:{self.variant}" if self.variant else self.name

    def fit_inputs(self, num_classes: int, image_shape: tuple[int, ...]) -> dict[str, Any]:
        """Params that would let the model take inputs of ``image_shape`` when it cannot, for
        the error the preflight gives (``{"img_size": 32}``); empty when none are known."""
        return {}


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


class Optimizer(Component):
    """Builds a torch optimizer and takes one training step with it.

    The trainer sets ``group["lr"]`` of every param group before each step, from the arm's
    schedule; the optimizer must read its LR from there. Its ``state_dict`` must round-trip
    (checkpoints and resume). ``Params`` must not define ``name`` or ``lr``: the spec's
    ``optimizer`` mapping holds those itself."""

    kind = "optimizers"

    @abstractmethod
    def build(self, parameters: Iterable[nn.Parameter], lr: float) -> torch.optim.Optimizer:
        """A fresh torch optimizer over ``parameters`` with initial LR ``lr``."""

    def step(self, optimizer: torch.optim.Optimizer, loss_fn: Callable[[], Tensor]) -> Tensor:
        """One training step; return the loss of the first forward pass (not detached).

        ``loss_fn()`` runs a forward pass on the step's batch and returns the scalar loss; call
        it as often as the method needs (SAM: twice), calling ``backward`` on each result. The
        default: zero the gradients, one forward/backward, ``optimizer.step()``."""
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        optimizer.step()
        return loss


class Augmentation(Component):
    """Transforms a batch of training images (random crop, flip); never used in evaluation.

    ``apply`` takes *normalized* float images (N, C, H, W) on the device and a
    ``torch.Generator`` on the same device for every random draw, so that a run is
    deterministic for a seed. Batched tensor ops only: no Python loops over samples."""

    kind = "augmentations"

    def setup(self, data: DataBundle, device: torch.device) -> None:
        """Called once per trial before training (the normalization is ``data.mean/std``).
        Raise ``PatchbenchError`` when the data do not fit (feature vectors)."""

    mixes_labels: ClassVar[bool] = False
    """True for a :class:`LabelMixing` augmentation (mixup, cutmix), which also mixes the
    targets."""

    @abstractmethod
    def apply(self, x: Tensor, gen: torch.Generator) -> Tensor:
        """The augmented batch: a new tensor of the input's shape, dtype and device."""


class LabelMixing(Augmentation):
    """An augmentation that mixes images *and* their targets within a training batch (mixup,
    cutmix).

    The trainer calls :meth:`mix` once per training batch, after the arm's other
    augmentations, as the references mix within a minibatch. ``targets`` are class
    probabilities, float (N, classes), rows summing to 1 (one-hot for an unmixed batch); the
    loss is the cross-entropy against them and ``train_acc`` credits each prediction with
    the target weight of its class."""

    mixes_labels = True

    @abstractmethod
    def mix(self, x: Tensor, targets: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """The mixed batch and its mixed targets (new tensors of the inputs' shapes, dtypes
        and device; each target row non-negative, summing to 1)."""

    def apply(self, x: Tensor, gen: torch.Generator) -> Tensor:
        """The images as :meth:`mix` makes them (for the preview and the kit)."""
        return self.mix(x, torch.ones(len(x), 1, device=x.device), gen)[0]


class Perturbation(Component):
    """Changes each training batch against the current model just before the optimizer step:
    the inner maximization of adversarial training (PGD).

    It composes with any optimizer and schedule: the optimizer then trains on the batch
    :meth:`perturb` returns. It runs under the arm's precision (autocast) and must leave the
    model as it found it (training mode, no gradients accumulated in its parameters)."""

    kind = "perturbations"

    def setup(self, data: DataBundle, device: torch.device) -> None:
        """Called once per trial before training (the normalization is ``data.mean/std``)."""

    @abstractmethod
    def perturb(self, model: nn.Module, x: Tensor, targets: Tensor,
                gen: torch.Generator) -> Tensor:
        """The batch to train on: ``x`` (normalized images) changed against ``model``.
        ``targets`` are labels (N,), or class probabilities (N, classes) after label
        mixing; both are valid targets of ``F.cross_entropy``."""
