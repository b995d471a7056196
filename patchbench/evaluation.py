"""Metrics and what they see: the model, the data and the patch, with shared cached predictions.

A :class:`Metric` computes one number from an :class:`EvalContext` after an epoch. One
context is built per evaluation; the evaluation sets' random draws come from
a generator seeded with ``evaluation.seed``, so every epoch is measured on the same inputs.
"""

from __future__ import annotations

import zlib
from abc import abstractmethod
from contextlib import AbstractContextManager
from typing import Any, Callable, ClassVar

import torch
from torch import Tensor, nn

from .boundary import check_apply, check_images, check_patch_only
from .data import DataBundle
from .kinds import Component, PatchGenerator

Batch = Callable[[slice, torch.Generator], Tensor]


class EvalContext:
    def __init__(self, model: nn.Module, data: DataBundle, patch: PatchGenerator | None,
                 device: torch.device, batch_size: int, seed: int,
                 autocast: Callable[[], AbstractContextManager], channels_last: bool = False,
                 train_acc: float | None = None, epoch: int | None = None):
        self.model, self.data, self.patch, self.device = model, data, patch, device
        self.batch_size, self.seed, self.autocast = batch_size, seed, autocast
        self.channels_last = channels_last
        self.train_acc = train_acc
        """The fraction of the last epoch's training inputs, as the model saw them (train
        mode, augmented and patched), whose first-pass logits' argmax was the label they
        were trained on; counted during the epoch. None outside a trial."""
        self.epoch = epoch
        """The epoch just trained, 1-based (the model is the one after it). None outside a
        trial (and before its first epoch). A metric reads the epoch from here rather than counting its own calls: a
        resumed trial builds its metrics afresh."""
        self.normalize = data.normalizer(device)
        self._cache: dict[str, object] = {}

    def generator(self, purpose: str) -> torch.Generator:
        """A generator for one evaluation set, the same at every epoch."""
        return torch.Generator(self.device).manual_seed(
            self.seed * 1_000_003 + zlib.crc32(purpose.encode()))

    @torch.no_grad()
    def predict(self, n: int, batch: Batch, purpose: str) -> Tensor:
        """Predicted classes for ``n`` inputs built by ``batch(slice, generator)``."""
        gen = self.generator(purpose)
        preds = []
        for start in range(0, n, self.batch_size):
            x = batch(slice(start, min(start + self.batch_size, n)), gen)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with self.autocast():
                preds.append(self.model(x).argmax(1))
        return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)

    def cached(self, key: str, compute: Callable[[], object]) -> object:
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    # ---- the evaluation sets shared by the built-in metrics

    def clean(self) -> tuple[Tensor, Tensor]:
        """(predictions, labels) on the unmodified test set."""
        d = self.data
        return self.cached("clean", lambda: (self.predict(
            len(d.y_test), lambda s, g: self.normalize(d.x_test[s]), "clean"), d.y_test))

    def poisons_test(self) -> bool:
        """Whether the patch modifies any test image (a clean-test poison does not)."""
        d = self.data
        return bool(self.cached("poisons_test", lambda: bool(self.patch.poison_mask(
            torch.arange(len(d.y_test), device=self.device), "test").any())))

    def mixed(self) -> tuple[Tensor, Tensor] | None:
        """(predictions, labels) on the test set patched like the training data; None when
        the patch leaves every test image clean (the test set is then the clean one)."""
        d, labels = self.data, []
        if not self.poisons_test():
            return None

        def batch(s: slice, g: torch.Generator) -> Tensor:
            idx = torch.arange(s.start, s.stop, device=self.device)
            x, y = self.normalize(d.x_test[s]), d.y_test[s]
            x, y = check_apply(self.patch, x, y, self.patch.apply(x, y, idx, "test", g),
                               d.num_classes, labels_in_range=s.start == 0)
            labels.append(y)
            return x

        def run() -> tuple[Tensor, Tensor]:
            preds = self.predict(len(d.y_test), batch, "mixed")
            return preds, torch.cat(labels)
        return self.cached("mixed", run)

    def sources(self, cls: Tensor, purpose: str) -> Tensor | None:
        """For a sample-wise patch, the training images whose patterns carry classes
        ``cls`` (:func:`pattern_sources`, drawn the same at every epoch); for a class-wise
        one an empty tensor. None when a requested class has no poisoned training image."""
        if not self.patch.sample_wise:
            return cls.new_empty(0)
        return pattern_sources(self.patch, self.data.y_train.to(self.device), cls,
                               self.generator(purpose))

    def patch_only(self, n: int) -> tuple[Tensor, Tensor] | None:
        """(predictions, labels) on ``n`` patch-only images with uniformly random labels;
        None for a sample-wise patch that has no poisoned training image of some class."""
        def run() -> tuple[Tensor, Tensor] | None:
            g = self.generator("patch_only_labels")
            labels = torch.randint(self.data.num_classes, (n,), generator=g, device=self.device)
            src = self.sources(labels, "patch_only_sources")
            if src is None:
                return None
            preds = self.predict(n, lambda s, gen: check_patch_only(
                self.patch, patch_only(self.patch, labels[s], self.data.image_shape, gen,
                                       src[s] if len(src) else None),
                len(labels[s]), self.data.image_shape, self.device), "patch_only")
            return preds, labels
        return self.cached(f"patch_only:{n}", run)

    def conflict(self) -> tuple[Tensor, Tensor, Tensor] | None:
        """(predictions, true labels, patch labels): every test image carries the patch of a
        uniformly random *other* class (for a sample-wise patch, the pattern of a poisoned
        training image of that class; None when some class has none)."""
        d, k = self.data, self.data.num_classes

        def run() -> tuple[Tensor, Tensor, Tensor] | None:
            g = self.generator("conflict_labels")
            shift = torch.randint(1, k, d.y_test.shape, generator=g, device=self.device)
            patch_cls = (d.y_test + shift) % k
            src = self.sources(patch_cls, "conflict_sources")
            if src is None:
                return None

            def batch(s: slice, gen: torch.Generator) -> Tensor:
                x = self.normalize(d.x_test[s])
                return check_images(self.patch, "stamp", x, stamp(
                    self.patch, x, patch_cls[s], gen, src[s] if len(src) else None))

            preds = self.predict(len(d.y_test), batch, "conflict")
            return preds, d.y_test, patch_cls
        return self.cached("conflict", run)


def pattern_sources(patch: PatchGenerator, y_train: Tensor, cls: Tensor,
                    gen: torch.Generator) -> Tensor | None:
    """For each class ``cls[i]``, a training image of that class from the patch's poisoned
    subset, drawn uniformly with ``gen``: whose pattern a sample-wise patch shows for that
    class. None when a requested class has no poisoned training image."""
    every = torch.arange(len(y_train), device=y_train.device)
    poisoned = every[patch.poison_mask(every, "train")]
    labels = y_train[poisoned]
    order = torch.argsort(labels, stable=True)
    poisoned, labels = poisoned[order], labels[order]
    counts = torch.bincount(labels, minlength=int(cls.max()) + 1 if len(cls) else 1)
    starts = torch.cumsum(counts, 0) - counts
    if len(cls) == 0 or bool((counts[cls] == 0).any()):
        return None if len(cls) else cls.new_empty(0)
    u = torch.rand(len(cls), generator=gen, device=cls.device)
    offset = (u * counts[cls]).long().clamp(max=counts[cls] - 1)
    return poisoned[starts[cls] + offset]


def stamp(patch: PatchGenerator, x: Tensor, cls: Tensor, gen: torch.Generator,
          idx: Tensor | None = None) -> Tensor:
    """``patch.stamp``, given ``idx`` where the patch is sample-wise (only then: class-wise
    generators may have the three-argument signature)."""
    return patch.stamp(x, cls, gen, idx=idx) if patch.sample_wise else patch.stamp(x, cls, gen)


def patch_only(patch: PatchGenerator, cls: Tensor, image_shape: tuple[int, ...],
               gen: torch.Generator, idx: Tensor | None = None) -> Tensor:
    """``patch.patch_only``, given ``idx`` where the patch is sample-wise."""
    return patch.patch_only(cls, image_shape, gen, idx=idx) if patch.sample_wise \
        else patch.patch_only(cls, image_shape, gen)


def peak(history: list[dict[str, Any]], metric: str,
         higher_is_better: bool) -> tuple[float | None, int | None]:
    """The best value of ``metric`` over a trial's evaluated epochs (the max, or the min where
    lower is better) and the first epoch that reached it; (None, None) when none has it."""
    best: tuple[float | None, int | None] = (None, None)
    for h in history:
        v = h.get(metric)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v != v:
            continue
        if best[0] is None or (v > best[0] if higher_is_better else v < best[0]):
            best = (float(v), h.get("epoch"))
    return best


def accuracy(preds: Tensor, labels: Tensor) -> float:
    return float((preds == labels).float().mean().item()) if len(labels) else float("nan")


class Metric(Component):
    """A number computed from the model after an epoch. Docstrings state the denominator.

    A metric is stateless: ``compute`` is a pure function of its context. It keeps nothing
    between evaluations (no running peak, no previous epoch's value), because a trial that
    resumes from a checkpoint builds its metrics afresh, so state kept on the instance gives
    a resumed run other numbers than an uninterrupted one. What a metric needs about the
    trial comes from the context: ``ctx.epoch`` and ``ctx.train_acc``. Statistics over epochs
    (the peak, its epoch, the values around an anneal) are the summary's, for every metric.
    ``patchbench.testing.check_metric`` checks the value after a simulated resume."""

    kind = "metrics"
    higher_is_better: ClassVar[bool] = True
    """Which direction is better, for leaderboards (the arrow) and ``--sort``."""
    value_range: ClassVar[tuple[float, float]] = (0.0, 1.0)
    """Every value ``compute`` returns lies in [low, high]; others are the plugin's bug."""
    may_be_undefined: ClassVar[bool] = False
    """True when ``compute`` may return None (the metric does not apply to this trial)."""
    short: ClassVar[str | None] = None
    """A short column header for leaderboards (default: the name)."""
    needs_patch: ClassVar[bool] = False
    """Metrics that need a patch generator are recorded as None in trials without a patch."""
    needs_train_acc: ClassVar[bool] = False
    """True when ``compute`` reads ``ctx.train_acc``: only then does the training loop count
    correct predictions (a few kernels per step, which a launch-bound GPU loop feels)."""

    @abstractmethod
    def compute(self, ctx: EvalContext) -> float | None:
        """Evaluate on ``ctx`` (the model is already in eval mode): a finite float in
        ``value_range``, or None where ``may_be_undefined``."""

    @classmethod
    def metadata(cls) -> dict[str, Any]:
        """What a record stores about the metric, so tables read it without the plugin."""
        return {"name": cls.name, "higher_is_better": bool(cls.higher_is_better),
                "range": [float(v) for v in cls.value_range], "short": cls.short or cls.name}
