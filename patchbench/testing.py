"""Conformance checks for plugin authors: call them from your own tests.

    from patchbench.testing import check_patch_generator, check_schedule, check_architecture

    def test_my_patch():
        check_patch_generator(MyPatch, {"size": 4})

Each check raises AssertionError with a message that says which part of the contract
failed. They run on the CPU in about a second on a small synthetic dataset.
"""

from __future__ import annotations

import math
import random
from typing import Any

import torch

from .components import Architecture, DataBundle, PatchGenerator, Schedule


def small_dataset(n_train: int = 256, n_test: int = 64, num_classes: int = 10) -> DataBundle:
    from .builtin.datasets import Synthetic

    return Synthetic(Synthetic.Params(n_train=n_train, n_test=n_test,
                                      num_classes=num_classes)).load()


def check_patch_generator(cls: type[PatchGenerator], params: dict[str, Any] | None = None,
                          data: DataBundle | None = None) -> None:
    """Shape, dtype and device kept; deterministic for a seed; only the images it says it
    poisons are touched (images and labels); finite values; labels stay valid classes."""
    data = data or small_dataset()
    device = torch.device("cpu")
    patch = cls(cls.Params(**(params or {})))
    patch.setup(data, device)
    normalize = data.normalizer(device)
    for split, xs, ys in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        idx = torch.arange(len(ys))
        x, y = normalize(xs), ys.clone()
        out = [patch.apply(x.clone(), y.clone(), idx, split, torch.Generator().manual_seed(s))
               for s in (0, 0, 1)]
        (a, ya), (b, yb), _ = out
        assert a.shape == x.shape and a.dtype == x.dtype and a.device == x.device, \
            f"{cls.name}.apply({split}) changed shape/dtype/device: {tuple(a.shape)} {a.dtype}"
        assert ya.shape == y.shape and ya.dtype == y.dtype, f"{cls.name}.apply changed labels' shape"
        assert torch.equal(a, b) and torch.equal(ya, yb), \
            f"{cls.name}.apply({split}) is not deterministic for a generator seed"
        assert torch.isfinite(a).all(), f"{cls.name}.apply({split}) produced non-finite values"
        assert ((ya >= 0) & (ya < data.num_classes)).all(), f"{cls.name}: labels out of range"
        mask = patch.poison_mask(idx, split)
        assert mask.dtype == torch.bool and mask.shape == idx.shape, \
            f"{cls.name}.poison_mask must return a bool tensor shaped like idx"
        untouched = ~mask
        assert torch.equal(a[untouched], x[untouched]), \
            f"{cls.name}.apply({split}) modified images outside its poison_mask"
        assert torch.equal(ya[untouched], y[untouched]), \
            f"{cls.name}.apply({split}) relabelled images outside its poison_mask"
        assert not torch.equal(a, x) or not mask.any(), \
            f"{cls.name}.apply({split}) changed nothing although poison_mask selects images"
    cls_ = torch.arange(32) % data.num_classes
    gen = lambda: torch.Generator().manual_seed(3)
    x = normalize(data.x_test[:32])
    stamped = patch.stamp(x.clone(), cls_, gen())
    assert stamped.shape == x.shape and torch.isfinite(stamped).all(), \
        f"{cls.name}.stamp must keep the shape and give finite values"
    assert torch.equal(stamped, patch.stamp(x.clone(), cls_, gen())), \
        f"{cls.name}.stamp is not deterministic for a generator seed"
    only = patch.patch_only(cls_, data.image_shape, gen())
    assert only.shape == (32, *data.image_shape) and torch.isfinite(only).all(), \
        f"{cls.name}.patch_only must return (n, C, H, W) finite images"
    assert torch.equal(only, patch.patch_only(cls_, data.image_shape, gen())), \
        f"{cls.name}.patch_only is not deterministic for a generator seed"


def check_schedule(cls: type[Schedule], params: dict[str, Any] | None = None,
                   epochs: int = 12, steps_per_epoch: int = 7, base_lr: float = 0.1) -> None:
    """Finite, non-negative, a pure function of the step (any call order gives the same
    values), and the declared anneal epochs really lower the LR at their first step."""
    schedule = cls(cls.Params(**(params or {})))
    total = epochs * steps_per_epoch
    values = [schedule.lr(s, steps_per_epoch, total, base_lr) for s in range(total)]
    assert all(isinstance(v, float) and math.isfinite(v) and v >= 0 for v in values), \
        f"{cls.name}.lr must return finite floats >= 0"
    order = list(range(total))
    random.Random(0).shuffle(order)
    again = {s: cls(cls.Params(**(params or {}))).lr(s, steps_per_epoch, total, base_lr)
             for s in order}
    assert [again[s] for s in range(total)] == values, \
        f"{cls.name}.lr is not a pure function of the step"
    for epoch in schedule.anneal_epochs(epochs):
        assert 2 <= epoch <= epochs, f"{cls.name}.anneal_epochs: {epoch} outside 2..{epochs}"
        first = (epoch - 1) * steps_per_epoch
        assert values[first] < values[first - 1], \
            f"{cls.name}: the LR does not drop at the start of anneal epoch {epoch}"


def check_architecture(cls: type[Architecture], params: dict[str, Any] | None = None,
                       variant: str | None = None, num_classes: int = 10) -> None:
    """Logits of shape (N, num_classes) for 32x32 RGB inputs, finite, and trainable."""
    model = cls(cls.Params(**(params or {})), variant=variant).build(num_classes, (3, 32, 32))
    model.train()
    x = torch.randn(4, 3, 32, 32)
    logits = model(x)
    assert logits.shape == (4, num_classes), \
        f"{cls.name}: logits have shape {tuple(logits.shape)}, expected (4, {num_classes})"
    assert torch.isfinite(logits).all(), f"{cls.name}: non-finite logits"
    logits.sum().backward()
    assert any(p.grad is not None for p in model.parameters()), \
        f"{cls.name}: no parameter receives a gradient"
    assert isinstance(cls(cls.Params(**(params or {})), variant=variant).label(), str)
