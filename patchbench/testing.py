"""Conformance checks for plugin authors: call them from your own tests.

    from patchbench.testing import check_patch_generator, check_schedule, check_architecture

    def test_my_patch():
        check_patch_generator(MyPatch, {"size": 4})

One check per kind (``check_dataset``, ``check_patch_generator``, ``check_architecture``,
``check_schedule``, ``check_regularizer``, ``check_metric``, ``check_optimizer``,
``check_augmentation`` (label mixing included), ``check_perturbation``). Each first checks the class
as the registry will (a ``name``, every abstract method, Params defaults that satisfy their
own constraints), then what its methods return with the same boundary checks a run applies,
and raises AssertionError naming the property that failed. They run on the CPU in about a
second on a small synthetic dataset.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any

import torch

from pydantic import ValidationError
from torch import nn

from . import boundary
from .builtin.datasets import Synthetic
from .builtin.patches import LWMPatch
from .components import (KINDS, Architecture, Augmentation, Component, DataBundle, Dataset,
                         LabelMixing, Metric, Optimizer, PatchGenerator, Perturbation,
                         Regularizer, Schedule)
from .conformance import component_problems
from .errors import render_errors
from .evaluation import EvalContext, patch_only, pattern_sources, stamp


def check_class(cls: type[Component]) -> None:
    """What the registry checks when a plugin registers ``cls``."""
    kind = next(k for k, base in KINDS.items() if issubclass(cls, base))
    problems = component_problems(cls, kind)
    assert not problems, f"{getattr(cls, 'name', cls.__name__)}: {'; '.join(problems)}"


def _boundary(check, *args):
    """Run a boundary check of a run; its PluginError becomes the kit's AssertionError."""
    try:
        return check(*args)
    except boundary.PluginError as exc:
        raise AssertionError(str(exc)) from None


def _params(cls: type[Component], params: dict[str, Any] | None) -> Any:
    """``cls.Params(**params)``; a param it refuses is an AssertionError naming the field and
    the reason (as ``patchbench validate`` would say it), not a raw ValidationError."""
    try:
        return cls.Params(**(params or {}))
    except ValidationError as exc:
        name = getattr(cls, "name", cls.__name__)
        raise AssertionError(f"{name}: bad params: "
                             + "; ".join(render_errors(exc, cls.Params, "params"))) from None


def small_dataset(n_train: int = 256, n_test: int = 64, num_classes: int = 10) -> DataBundle:
    return Synthetic(Synthetic.Params(n_train=n_train, n_test=n_test,
                                      num_classes=num_classes)).load()


def check_patch_generator(cls: type[PatchGenerator], params: dict[str, Any] | None = None,
                          data: DataBundle | None = None) -> None:
    """Shape, dtype and device kept; deterministic for a seed; only the images it says it
    poisons are touched (images and labels); finite values; labels stay valid classes."""
    check_class(cls)
    data = data or small_dataset()
    device = torch.device("cpu")
    patch = cls(_params(cls, params))
    _setup_keeps_global_rng(patch, data, device)
    normalize = data.normalizer(device)
    for split, xs, ys in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        idx = torch.arange(len(ys))
        x, y = normalize(xs), ys.clone()
        out = [_boundary(boundary.check_apply, patch, x, y,
                         patch.apply(x.clone(), y.clone(), idx, split,
                                     torch.Generator().manual_seed(s)), data.num_classes, True)
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
    if patch.sample_wise:  # the classes that have a poisoned training image to show
        every = torch.arange(len(data.y_train))
        present = data.y_train[patch.poison_mask(every, "train")].unique()
        assert len(present), f"{cls.name}: no poisoned training image to take a pattern from"
        cls_ = present[torch.arange(32) % len(present)]
    gen = lambda: torch.Generator().manual_seed(3)
    src = pattern_sources(patch, data.y_train, cls_, gen()) if patch.sample_wise else None
    x = normalize(data.x_test[:32])
    stamped = _boundary(boundary.check_images, patch, "stamp", x,
                        stamp(patch, x.clone(), cls_, gen(), src))
    assert stamped.shape == x.shape and torch.isfinite(stamped).all(), \
        f"{cls.name}.stamp must keep the shape and give finite values"
    assert torch.equal(stamped, stamp(patch, x.clone(), cls_, gen(), src)), \
        f"{cls.name}.stamp is not deterministic for a generator seed"
    only = _boundary(boundary.check_patch_only, patch,
                     patch_only(patch, cls_, data.image_shape, gen(), src), 32,
                     data.image_shape, device)
    assert only.shape == (32, *data.image_shape) and torch.isfinite(only).all(), \
        f"{cls.name}.patch_only must return (n, C, H, W) finite images"
    assert torch.equal(only, patch_only(patch, cls_, data.image_shape, gen(), src)), \
        f"{cls.name}.patch_only is not deterministic for a generator seed"
    if patch.sample_wise:  # the pattern follows the training image, not the class alone
        same = cls_ == cls_[0]
        again = pattern_sources(patch, data.y_train, cls_, torch.Generator().manual_seed(4))
        if not torch.equal(again[same], src[same]):
            assert not torch.equal(patch_only(patch, cls_, data.image_shape, gen(), again),
                                   only), f"{cls.name} is sample_wise but its patch_only " \
                "ignores idx (the same pattern for other images of the class)"


def _setup_keeps_global_rng(component: Component, data: DataBundle,
                            device: torch.device) -> None:
    """``setup``, checking that it leaves torch's global RNG as it found it: the trial's model
    initialization and training noise draw from it (the trainer isolates it; this names the
    plugin that would have shifted them)."""
    state = torch.get_rng_state()
    component.setup(data, device)
    assert torch.equal(torch.get_rng_state(), state), \
        f"{type(component).__name__}.setup draws from torch's global RNG; draw from a " \
        "torch.Generator seeded from your params"


def check_schedule(cls: type[Schedule], params: dict[str, Any] | None = None,
                   epochs: int = 12, steps_per_epoch: int = 7, base_lr: float = 0.1) -> None:
    """Finite, non-negative, a pure function of the step (any call order gives the same
    values), and the declared anneal epochs really lower the LR at their first step."""
    check_class(cls)
    schedule = cls(_params(cls, params))
    total = epochs * steps_per_epoch
    values = [schedule.lr(s, steps_per_epoch, total, base_lr) for s in range(total)]
    _boundary(boundary.check_lrs, schedule, values, 0)
    assert all(isinstance(v, float) for v in values), f"{cls.name}.lr must return floats"
    order = list(range(total))
    random.Random(0).shuffle(order)
    again = {s: cls(_params(cls, params)).lr(s, steps_per_epoch, total, base_lr)
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
    check_class(cls)
    arch = cls(_params(cls, params), variant=variant)
    model = _boundary(boundary.check_model, arch, arch.build(num_classes, (3, 32, 32)))
    model.train()
    x = torch.randn(4, 3, 32, 32)
    logits = model(x)
    _boundary(boundary.check_logits, arch, logits, 4, num_classes)
    assert torch.isfinite(logits).all(), f"{cls.name}: non-finite logits"
    logits.sum().backward()
    assert any(p.grad is not None for p in model.parameters()), \
        f"{cls.name}: no parameter receives a gradient"
    assert isinstance(cls(_params(cls, params), variant=variant).label(), str)


def check_dataset(cls: type[Dataset], params: dict[str, Any] | None = None) -> None:
    """``load`` returns what the trainer relies on (uint8 images or float features, int64
    labels in range, a mean/std per channel), the same for the same params."""
    check_class(cls)
    dataset = cls(_params(cls, params))
    data = _boundary(boundary.load_dataset, dataset)
    again = cls(_params(cls, params)).load()
    assert torch.equal(data.x_train, again.x_train) and torch.equal(data.y_test, again.y_test), \
        f"{cls.name}.load is not deterministic for its params"


class _Tiny(nn.Module):
    """Conv-BN-ReLU-linear: what a regularizer attaches to."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))

    def forward(self, x):
        return self.body(x)


def check_regularizer(cls: type[Regularizer], params: dict[str, Any] | None = None) -> None:
    """Attaches to a conv/BN/ReLU model, takes ``set_epoch``, declares anneal epochs within
    the run, and changes nothing in eval mode (metrics are measured without it)."""
    check_class(cls)
    reg = cls(_params(cls, params))
    torch.manual_seed(0)
    plain, model = _Tiny(), _Tiny()
    model.load_state_dict(plain.state_dict())
    reg.attach(model)
    for epoch in (1, 2, 3):
        reg.set_epoch(epoch)
    anneals = reg.anneal_epochs(10)
    assert all(isinstance(e, int) and 1 <= e <= 10 for e in anneals), \
        f"{cls.name}.anneal_epochs(10) must return epochs in 1..10, got {anneals!r}"
    x = torch.randn(4, 3, 8, 8)
    plain.eval(), model.eval()
    with torch.no_grad():
        assert torch.equal(plain(x), model(x)), \
            f"{cls.name} changes the model in eval mode (metrics must see it switched off)"


class _Memorizer(nn.Module):
    """Predicts the label of the nearest test image: a model that scores unlike ``_Tiny``."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, num_classes: int):
        super().__init__()
        self.x, self.y, self.num_classes = x.flatten(1), y, num_classes

    def forward(self, x):
        nearest = torch.cdist(x.flatten(1).float(), self.x.float()).argmin(1)
        return nn.functional.one_hot(self.y[nearest], self.num_classes).float()


def _same(a: float | None, b: float | None) -> bool:
    return a == b or (a != a and b != b)  # NaN: undefined both times


def check_metric(cls: type[Metric], params: dict[str, Any] | None = None,
                 patch: PatchGenerator | None = None) -> None:
    """``compute`` on a constant model returns a finite float in the declared range (or
    None where it may be undefined), the same at a second evaluation; and the metric is
    stateless: after a simulated resume (a fresh instance, as a resumed trial builds it) it
    gives at epoch 2 what the instance that also evaluated epoch 1 gives."""
    check_class(cls)
    data = small_dataset(n_test=64)
    device = torch.device("cpu")
    if patch is None:
        patch = LWMPatch()
    patch.setup(data, device)
    metric = cls(_params(cls, params))
    model = _Tiny(data.num_classes).eval()
    values = [_boundary(boundary.check_metric_value, metric, metric.compute(
        EvalContext(model, data, patch, device, 32, 0, contextlib.nullcontext)))
        for _ in range(2)]
    assert _same(values[0], values[1]), \
        f"{cls.name}.compute differs between two evaluations of the same model"
    # Two models that score differently, evaluated at epochs 1 and 2 in both orders: a kept
    # running max (or min) shows in one of the orders as a value a fresh instance differs from.
    models = [model, _Memorizer(data.normalizer(device)(data.x_test), data.y_test,
                                data.num_classes).eval()]
    train_accs = [0.25, 0.75] if cls.needs_train_acc else [None, None]

    def compute(m: Metric, i: int, epoch: int) -> float | None:
        ctx = EvalContext(models[i], data, patch, device, 32, 0, contextlib.nullcontext,
                          train_acc=train_accs[i], epoch=epoch)
        return _boundary(boundary.check_metric_value, m, m.compute(ctx))

    for first, last in ((0, 1), (1, 0)):
        running = cls(cls.Params(**(params or {})))
        compute(running, first, 1)
        kept = compute(running, last, 2)
        fresh = compute(cls(cls.Params(**(params or {}))), last, 2)
        assert _same(kept, fresh), (
            f"{cls.name} keeps state between evaluations: at epoch 2 it gave {kept} on the "
            f"instance that also evaluated epoch 1, and {fresh} on a fresh instance, as after "
            "a resume; a metric must be a pure function of its context (ctx.epoch, "
            "ctx.train_acc)")


def check_optimizer(cls: type[Optimizer], params: dict[str, Any] | None = None,
                    lr: float = 0.05) -> None:
    """``build`` gives a torch optimizer whose param groups carry the LR (the trainer sets
    ``group["lr"]`` at every step, and LR 0 must leave the weights where they are); ``step``
    returns the finite scalar loss of the first pass and lowers it on a small problem; the
    ``state_dict`` round-trips: a copy restored from it takes the same next step."""
    import copy

    import torch.nn.functional as F

    check_class(cls)
    opt = cls(_params(cls, params))
    torch.manual_seed(0)
    model = _Tiny()
    x, y = torch.randn(16, 3, 8, 8), torch.arange(16) % 10
    calls = []

    def loss_fn(m: nn.Module = model) -> torch.Tensor:
        calls.append(1)
        return F.cross_entropy(m(x), y)

    built = _boundary(boundary.check_optimizer, opt, opt.build(model.parameters(), lr))
    assert all(g["lr"] == lr for g in built.param_groups), \
        f"{cls.name}.build: the param groups' lr is not the lr it was given"
    assert {id(p) for g in built.param_groups for p in g["params"]} == \
        {id(p) for p in model.parameters()}, f"{cls.name}.build must optimize every parameter"
    losses = []
    for _ in range(5):
        loss = _boundary(boundary.check_step_loss, opt, opt.step(built, loss_fn))
        assert torch.isfinite(loss), f"{cls.name}.step returned a non-finite loss"
        losses.append(float(loss.detach()))
    assert calls, f"{cls.name}.step never called loss_fn"
    with torch.no_grad():
        after = float(loss_fn())
    assert after < losses[0], f"{cls.name}: five steps did not lower the loss ({losses[0]:.4f} " \
        f"-> {after:.4f}) on a small problem at lr {lr}"
    twin = copy.deepcopy(model)
    restored = opt.build(twin.parameters(), lr)
    restored.load_state_dict(copy.deepcopy(built.state_dict()))
    torch.manual_seed(1)
    opt.step(built, loss_fn)
    torch.manual_seed(1)
    opt.step(restored, lambda: loss_fn(twin))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters())), \
        f"{cls.name}: an optimizer restored from state_dict() takes a different next step"
    for g in built.param_groups:
        g["lr"] = 0.0
    before = [p.detach().clone() for p in model.parameters()]
    opt.step(built, loss_fn)
    assert all(torch.allclose(a, b, rtol=0, atol=1e-6) for a, b in zip(before,
                                                                        model.parameters())), \
        f"{cls.name}: with group['lr'] = 0 the step still moves the weights (it must take " \
        "its LR from the param groups, where the schedule puts it)"


def check_augmentation(cls: type[Augmentation], params: dict[str, Any] | None = None,
                       data: DataBundle | None = None) -> None:
    """``apply`` keeps shape, dtype and device, gives finite values, leaves its input
    unchanged, draws only from the generator it is given (the same images for the same seed;
    torch's global RNG untouched), and changes something for some seed."""
    check_class(cls)
    data = data or small_dataset(n_train=64, n_test=10)
    device = torch.device("cpu")
    aug = cls(_params(cls, params))
    _setup_keeps_global_rng(aug, data, device)
    x = data.normalizer(device)(data.x_train)
    original = x.clone()
    state = torch.get_rng_state()
    outs = [_boundary(boundary.check_images, aug, "apply", x,
                      aug.apply(x, torch.Generator(device).manual_seed(s))) for s in (0, 0, 1)]
    assert torch.equal(torch.get_rng_state(), state), \
        f"{cls.name}.apply draws from torch's global RNG; draw from the generator it is given"
    assert torch.equal(x, original), f"{cls.name}.apply modified its input in place"
    assert all(torch.isfinite(o).all() for o in outs), f"{cls.name}.apply gave non-finite values"
    assert torch.equal(outs[0], outs[1]), \
        f"{cls.name}.apply is not deterministic for a generator seed"
    assert any(not torch.equal(o, x) for o in outs), f"{cls.name}.apply changed no image"
    if isinstance(aug, LabelMixing):
        _check_mixing(aug, x, data.y_train, data.num_classes)


def _check_mixing(aug: LabelMixing, x: torch.Tensor, y: torch.Tensor, num_classes: int) -> None:
    """``mix`` gives class probabilities of the targets' shape, leaves both inputs as they
    were, is deterministic for a seed and mixes the targets for some seed."""
    name = aug.name
    targets = nn.functional.one_hot(y, num_classes).float()
    kept_x, kept_t = x.clone(), targets.clone()
    outs = [_boundary(boundary.check_mixed, aug, x, targets,
                      aug.mix(x, targets, torch.Generator().manual_seed(s)), True)
            for s in (0, 0, 1, 2, 3)]
    assert torch.equal(x, kept_x) and torch.equal(targets, kept_t), \
        f"{name}.mix modified its input in place"
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1]), \
        f"{name}.mix is not deterministic for a generator seed"
    assert any(not torch.equal(t, targets) for _, t in outs), \
        f"{name}.mix never mixed the targets (a label-mixing augmentation must)"


def check_perturbation(cls: type[Perturbation], params: dict[str, Any] | None = None,
                       data: DataBundle | None = None) -> None:
    """``perturb`` keeps shape, dtype and device, gives finite values, leaves its input,
    the model's mode and parameters' gradients as they were, draws only from the generator
    it is given, and changes the batch."""
    check_class(cls)
    data = data or small_dataset(n_train=32, n_test=10)
    device = torch.device("cpu")
    pert = cls(_params(cls, params))
    _setup_keeps_global_rng(pert, data, device)
    torch.manual_seed(0)
    model = _Tiny(data.num_classes).train()
    x = data.normalizer(device)(data.x_train)
    original = x.clone()
    grads = [p.grad for p in model.parameters()]
    state = torch.get_rng_state()
    outs = [_boundary(boundary.check_perturbed, pert, model, x,
                      pert.perturb(model, x, data.y_train, torch.Generator().manual_seed(s)))
            for s in (0, 0, 1)]
    name = cls.name
    assert torch.equal(torch.get_rng_state(), state), \
        f"{name}.perturb draws from torch's global RNG; draw from the generator it is given"
    assert torch.equal(x, original), f"{name}.perturb modified its input in place"
    assert all(p.grad is g for p, g in zip(model.parameters(), grads)), \
        f"{name}.perturb left gradients in the model's parameters (take them with " \
        "torch.autograd.grad with respect to the input only)"
    assert all(torch.isfinite(o).all() for o in outs), f"{name}.perturb gave non-finite values"
    assert torch.equal(outs[0], outs[1]), f"{name}.perturb is not deterministic for a seed"
    assert any(not torch.equal(o, x) for o in outs), f"{name}.perturb changed no image"
