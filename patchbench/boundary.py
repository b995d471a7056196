"""Checks on what plugins return, where the core receives it.

A plugin is someone else's code: a patch that crops images, a schedule that returns NaN or a
metric that returns a string would otherwise become a wrong table or a crash far from its
cause. Each check raises :class:`PluginError`, one line naming the component, its plugin and
its distribution (``component.origin``). The trainer calls them off the per-step path: the
learning rates once per epoch for the whole epoch, a patch's and each augmentation's output
once per prepared chunk of batches (shape and dtype only: no device sync), that each
augmentation leaves its input unchanged once per trial (the first batch), the model's
logits and the optimizer's loss at the first step of each epoch, metrics once per evaluation.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch
from torch import Tensor

from .data import DataBundle
from .errors import PatchbenchError
from .kinds import Component


class Ranged(Protocol):
    """What the metric check reads of a metric (:class:`patchbench.components.Metric`)."""

    origin: str
    value_range: tuple[float, float]
    may_be_undefined: bool


class PluginError(PatchbenchError):
    """A plugin returned something its interface does not allow. One line, naming it."""


def who(component: Component | Ranged) -> str:
    return component.origin or f"{type(component).__name__} {getattr(component, 'name', '?')!r}"


def _fail(component: Component | Ranged, what: str) -> PluginError:
    return PluginError(f"{who(component)}: {what}")


def check_lrs(schedule: Component, lrs: list[Any], first_step: int) -> list[float]:
    """Every LR a finite float >= 0 (a tensor or a string is not one); return them as floats."""
    out = []
    for step, lr in enumerate(lrs, first_step):
        if isinstance(lr, bool) or not isinstance(lr, (float, int)):
            raise _fail(schedule, f"lr(step={step}) returned {type(lr).__name__} {lr!r}; "
                        "allowed: a finite float >= 0")
        if not (math.isfinite(lr) and lr >= 0):
            raise _fail(schedule, f"lr(step={step}) returned {lr!r}; allowed: a finite "
                        "float >= 0")
        out.append(float(lr))
    return out


def check_metric_value(metric: Ranged, value: Any) -> float | None:
    """A finite float in the metric's ``value_range``, or None where it ``may_be_undefined``."""
    low, high = metric.value_range
    allowed = f"a finite float in [{low:g}, {high:g}]" + \
        (" or None" if metric.may_be_undefined else "")
    if value is None:
        if metric.may_be_undefined:
            return None
        raise _fail(metric, f"compute returned None; allowed: {allowed} (set may_be_undefined "
                    "= True on a metric that may not apply)")
    if isinstance(value, bool) or not isinstance(value, float):
        raise _fail(metric, f"compute returned {type(value).__name__} {value!r}; "
                    f"allowed: {allowed}")
    if not (math.isfinite(value) and low <= value <= high):
        raise _fail(metric, f"compute returned {value!r}; allowed: {allowed}")
    return value


def check_images(patch: Component, method: str, x_in: Tensor, x_out: Any) -> Tensor:
    """A patch method's images keep the shape, dtype and device of the images it was given."""
    if not isinstance(x_out, Tensor):
        raise _fail(patch, f"{method} returned {type(x_out).__name__} images; allowed: a "
                    "tensor shaped like its input")
    if x_out.shape != x_in.shape or x_out.dtype != x_in.dtype or x_out.device != x_in.device:
        raise _fail(patch, f"{method} returned images {_desc(x_out)} for input {_desc(x_in)}; "
                    "allowed: the same shape, dtype and device")
    return x_out


def check_input_kept(component: Component, method: str, before: Tensor, after: Tensor
                     ) -> None:
    """The images a method was given are as they were (``before``, a copy): a method that
    writes into its input corrupts what the caller reuses (one device sync: call it once)."""
    if not torch.equal(before, after):
        raise _fail(component, f"{method} modified its input in place; allowed: new images "
                    "(clone the input, or use out-of-place ops)")


def _check_pair(component: Component, method: str, second: str, x_in: Tensor,
                t_in: Tensor, out: Any) -> tuple[Tensor, Tensor]:
    """``out`` is (images, ``second``): the images as :func:`check_images`, the second
    tensor of ``t_in``'s shape, dtype and device."""
    if not (isinstance(out, tuple) and len(out) == 2):
        raise _fail(component, f"{method} returned {type(out).__name__}; allowed: (images, "
                    f"{second})")
    x, t = out
    check_images(component, method, x_in, x)
    if not isinstance(t, Tensor) or t.shape != t_in.shape or t.dtype != t_in.dtype \
            or t.device != t_in.device:
        got = _desc(t) if isinstance(t, Tensor) else type(t).__name__
        raise _fail(component, f"{method} returned {second} {got} for {second} "
                    f"{_desc(t_in)}; allowed: the same shape, dtype and device")
    return x, t


def check_apply(patch: Component, x_in: Tensor, y_in: Tensor, out: Any, num_classes: int,
                labels_in_range: bool) -> tuple[Tensor, Tensor]:
    """``apply``'s images as :func:`check_images`, labels of the same shape, dtype and
    device; with ``labels_in_range`` also valid classes (one device sync: once per epoch)."""
    x, y = _check_pair(patch, "apply", "labels", x_in, y_in, out)
    if labels_in_range and len(y) and not bool(((y >= 0) & (y < num_classes)).all()):
        raise _fail(patch, f"apply returned labels outside 0..{num_classes - 1}")
    return x, y


def check_mixed(mixer: Component, x_in: Tensor, t_in: Tensor, out: Any, values: bool
                ) -> tuple[Tensor, Tensor]:
    """``mix``'s images as :func:`check_images` and targets of the input targets' shape,
    dtype and device; with ``values`` also non-negative rows summing to 1 (one device sync:
    once per epoch)."""
    x, t = _check_pair(mixer, "mix", "targets", x_in, t_in, out)
    if values and len(t):
        ok = torch.stack([(t >= 0).all(), ((t.sum(1) - 1).abs() < 1e-4).all()]).tolist()
        if not all(ok):
            raise _fail(mixer, "mix returned targets that are not class probabilities; "
                        "allowed: non-negative rows summing to 1")
    return x, t


def check_perturbed(perturbation: Component, model: torch.nn.Module, x_in: Tensor,
                    out: Any) -> Tensor:
    """``perturb``'s images as :func:`check_images`, the model left in training mode."""
    x = check_images(perturbation, "perturb", x_in, out)
    if not model.training:
        raise _fail(perturbation, "perturb left the model in eval mode; allowed: the mode it "
                    "was given (training)")
    return x


def check_patch_only(patch: Component, out: Any, n: int, image_shape: tuple[int, ...],
                     device: torch.device) -> Tensor:
    """``patch_only``'s images: n float32 inputs of the data's shape on the device."""
    like = torch.empty((n, *image_shape), device=device)
    return check_images(patch, "patch_only", like, out)


def check_logits(arch: Component, logits: Any, batch: int, num_classes: int) -> None:
    if not isinstance(logits, Tensor) or tuple(logits.shape) != (batch, num_classes):
        got = _desc(logits) if isinstance(logits, Tensor) else type(logits).__name__
        raise _fail(arch, f"the model returned {got} for a batch of {batch}; allowed: "
                    f"logits of shape ({batch}, {num_classes})")


def check_optimizer(optimizer: Component, built: Any) -> torch.optim.Optimizer:
    if not isinstance(built, torch.optim.Optimizer):
        raise _fail(optimizer, f"build returned {type(built).__name__}; allowed: a "
                    "torch.optim.Optimizer")
    return built


def check_step_loss(optimizer: Component, loss: Any) -> Tensor:
    """``step``'s result: the loss as a scalar tensor (host-side checks only: no sync)."""
    if not isinstance(loss, Tensor) or loss.dim() != 0:
        got = _desc(loss) if isinstance(loss, Tensor) else type(loss).__name__
        raise _fail(optimizer, f"step returned {got}; allowed: the loss, a scalar tensor")
    return loss


def check_model(arch: Component, model: Any) -> torch.nn.Module:
    if not isinstance(model, torch.nn.Module):
        raise _fail(arch, f"build returned {type(model).__name__}; allowed: a torch.nn.Module")
    return model


def _desc(t: Tensor) -> str:
    return f"{tuple(t.shape)} {str(t.dtype).removeprefix('torch.')} on {t.device}"


def check_bundle(dataset: Component, data: Any) -> Any:
    """``load``'s result: a DataBundle of uint8 images or float features, int64 labels of the
    same length in 0..classes-1, and a mean/std per channel."""
    if not isinstance(data, DataBundle):
        raise _fail(dataset, f"load returned {type(data).__name__}; allowed: a DataBundle")
    for split, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        if not (isinstance(x, Tensor) and x.dtype in (torch.uint8, torch.float32) and x.dim() >= 2):
            got = _desc(x) if isinstance(x, Tensor) else type(x).__name__
            raise _fail(dataset, f"x_{split} is {got}; allowed: uint8 images (N, C, H, W) or "
                        "float32 features (N, D)")
        if not (isinstance(y, Tensor) and y.dtype == torch.int64 and y.shape == x.shape[:1]):
            got = _desc(y) if isinstance(y, Tensor) else type(y).__name__
            raise _fail(dataset, f"y_{split} is {got}; allowed: int64 labels, one per input "
                        f"({len(x)})")
        if len(y) and not bool(((y >= 0) & (y < len(data.classes))).all()):
            raise _fail(dataset, f"y_{split} has labels outside 0..{len(data.classes) - 1}")
    if data.x_test.shape[1:] != data.x_train.shape[1:]:
        raise _fail(dataset, f"x_test {_desc(data.x_test)} and x_train {_desc(data.x_train)} "
                    "differ in input shape")
    channels = data.x_train.shape[1]  # image channels, or features of a vector
    if len(data.mean) not in (1, channels) or len(data.std) != len(data.mean) \
            or not all(math.isfinite(s) and s > 0 for s in data.std):
        raise _fail(dataset, f"mean {data.mean!r} / std {data.std!r}; allowed: one finite "
                    f"value per channel ({channels}), std > 0")
    return data


def load_dataset(dataset: Component) -> Any:
    """The dataset's ``load()``, checked: what the trainer and every metric rely on."""
    return check_bundle(dataset, dataset.load())
