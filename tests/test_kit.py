"""The conformance kit covers all eight kinds, passes every built-in component, and names the
property a broken component fails."""

from __future__ import annotations

import pytest
import torch

from patchbench import testing
from patchbench.builtin.architectures import WRN
from patchbench.builtin.datasets import Synthetic
from patchbench.builtin.metrics import CleanAcc, PatchFollowRate, PatchOnlyAcc
from patchbench.builtin.patches import LWMPatch
from patchbench.builtin.regularizers import ActNoise
from patchbench.builtin.schedules import Constant, Cosine, MultiStep
from patchbench.builtin.augmentations import Crop, Flip
from patchbench.builtin.metrics import TrainAcc
from patchbench.builtin.optimizers import SAM, SGD, Adam, AdamW
from patchbench.builtin.optimizers import SGDParams
from patchbench.components import Augmentation, FixedSubsetPatch, Metric, Optimizer, Schedule


def test_every_builtin_kind_passes():
    testing.check_dataset(Synthetic, {"n_train": 64, "n_test": 20})
    testing.check_patch_generator(LWMPatch)
    testing.check_architecture(WRN, {"depth": 10, "width": 1})
    for cls, params in ((Constant, {}), (Cosine, {}), (MultiStep, {"milestones": [3]})):
        testing.check_schedule(cls, params)
    testing.check_regularizer(ActNoise, {"std": 0.4, "anneal_epoch": 2})
    for cls in (CleanAcc, PatchOnlyAcc, PatchFollowRate, TrainAcc):
        testing.check_metric(cls)
    for cls, params in ((SGD, {}), (Adam, {}), (AdamW, {}), (SAM, {}),
                        (SAM, {"adaptive": True, "rho": 0.5})):
        testing.check_optimizer(cls, params)
    for cls, params in ((Crop, {}), (Crop, {"fill": "zeros", "padding": 2}), (Flip, {})):
        testing.check_augmentation(cls, params)


class Negative(Schedule):
    """Negative."""
    name = "negative"

    def lr(self, step, steps_per_epoch, total_steps, base_lr):
        return -base_lr


class TooHigh(Metric):
    """Out of range."""
    name = "too_high"

    def compute(self, ctx):
        return 1.5


class KeptPeak(CleanAcc):
    """Peak clean accuracy kept on the instance: a resumed trial starts it afresh."""
    name = "kept_peak"

    def __init__(self, params):
        super().__init__(params)
        self.best = 0.0

    def compute(self, ctx):
        self.best = max(self.best, super().compute(ctx))
        return self.best


class KeptLowest(KeptPeak):
    """The lowest clean accuracy so far, on the instance (a running min)."""
    name = "kept_lowest"
    higher_is_better = False

    def __init__(self, params):
        super().__init__(params)
        self.best = 1.0

    def compute(self, ctx):
        self.best = min(self.best, CleanAcc.compute(self, ctx))
        return self.best


class EpochScaled(CleanAcc):
    """Clean accuracy times epoch/10: reads the epoch from its context, keeps nothing."""
    name = "epoch_scaled"

    def compute(self, ctx):
        return super().compute(ctx) * (ctx.epoch or 10) / 10


class Crops(LWMPatch):
    """Crops."""
    name = "crops"

    def stamp(self, x, cls, gen):
        return super().stamp(x, cls, gen)[..., 1:]


class NoisyInEval(ActNoise):
    """Forgets eval mode."""
    name = "noisy_in_eval"

    def _hook(self, module, args):
        return (args[0] + 1.0,)


class NoStamp(FixedSubsetPatch):
    """Half a patch generator."""
    name = "no_stamp"

    def setup(self, data, device):
        pass

    def apply(self, x, y, idx, split, gen):
        return x, y


class FixedLR(Optimizer):
    """Takes its LR once, at build: the schedule never reaches it."""
    name = "fixed_lr"

    def build(self, parameters, lr):
        self.lr = lr
        return torch.optim.SGD(parameters, lr=lr)

    def step(self, optimizer, loss_fn):
        optimizer.zero_grad()
        loss = loss_fn()
        loss.backward()
        with torch.no_grad():
            for p in (p for g in optimizer.param_groups for p in g["params"]):
                p -= self.lr * p.grad
        return loss


class LRParam(Optimizer):
    """Has an lr param of its own."""
    name = "lr_param"

    class Params(SGDParams):
        lr: float = 0.1

    def build(self, parameters, lr):
        return torch.optim.SGD(parameters, lr=lr)


class GlobalFlip(Augmentation):
    """Draws from torch's global RNG."""
    name = "global_flip"

    def apply(self, x, gen):
        return torch.where(torch.rand(len(x), 1, 1, 1) < 0.5, x.flip(-1), x)


class InPlace(Augmentation):
    """Negates its input in place."""
    name = "in_place"

    def apply(self, x, gen):
        return x.neg_()


class Unfinished(Schedule):
    """No lr."""
    name = "unfinished"


@pytest.mark.parametrize("check, cls, says", [
    (testing.check_schedule, Negative, "lr(step=0) returned -0.1; allowed: a finite float >= 0"),
    (testing.check_metric, TooHigh, "compute returned 1.5; allowed: a finite float in [0, 1]"),
    (testing.check_metric, KeptPeak, "kept_peak keeps state between evaluations: at epoch 2"),
    (testing.check_metric, KeptLowest, "kept_lowest keeps state between evaluations"),
    (testing.check_patch_generator, Crops, "stamp returned images (32, 3, 32, 31)"),
    (testing.check_regularizer, NoisyInEval, "changes the model in eval mode"),
    (testing.check_schedule, Unfinished, "does not implement the abstract method(s) lr"),
    (testing.check_optimizer, FixedLR, "with group['lr'] = 0 the step still moves the weights"),
    (testing.check_optimizer, LRParam, "its Params define lr, which the spec's optimizer "
     "mapping holds itself"),
    (testing.check_augmentation, GlobalFlip, "global_flip.apply draws from torch's global RNG"),
    (testing.check_augmentation, InPlace, "in_place.apply modified its input in place"),
    (testing.check_patch_generator, NoStamp,
     "does not implement the abstract method(s) patch_only, stamp"),
])
def test_a_broken_component_fails_naming_the_property(check, cls, says):
    with pytest.raises(AssertionError) as info:
        check(cls)
    assert says in str(info.value)


@pytest.mark.parametrize("check, cls, params, says", [
    (testing.check_schedule, MultiStep, {"milestones": [2], "factor": "a lot"},
     "multistep: bad params: params.factor: Input should be a valid number"),
    (testing.check_schedule, MultiStep, {"milestones": [2], "nope": 1},
     "params.nope: unknown key; allowed: milestones, factor"),
    (testing.check_patch_generator, LWMPatch, {"sep": -1.0}, "lwm: bad params: params.sep: "),
])
def test_a_bad_param_is_an_assertion_naming_the_field(check, cls, params, says):
    with pytest.raises(AssertionError) as info:
        check(cls, params)
    assert says in str(info.value) and "\n" not in str(info.value)


def test_a_metric_that_reads_the_epoch_from_its_context_passes():
    testing.check_metric(EpochScaled)
    with pytest.raises(AssertionError, match="after a resume"):
        testing.check_metric(KeptPeak)
