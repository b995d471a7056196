"""The conformance kit covers all six kinds, passes every built-in component, and names the
property a broken component fails."""

from __future__ import annotations

import pytest

from patchbench import testing
from patchbench.builtin.architectures import WRN
from patchbench.builtin.datasets import Synthetic
from patchbench.builtin.metrics import CleanAcc, PatchFollowRate, PatchOnlyAcc
from patchbench.builtin.patches import LWMPatch
from patchbench.builtin.regularizers import ActNoise
from patchbench.builtin.schedules import Constant, Cosine, MultiStep
from patchbench.components import FixedSubsetPatch, Metric, Schedule


def test_every_builtin_kind_passes():
    testing.check_dataset(Synthetic, {"n_train": 64, "n_test": 20})
    testing.check_patch_generator(LWMPatch)
    testing.check_architecture(WRN, {"depth": 10, "width": 1})
    for cls, params in ((Constant, {}), (Cosine, {}), (MultiStep, {"milestones": [3]})):
        testing.check_schedule(cls, params)
    testing.check_regularizer(ActNoise, {"std": 0.4, "anneal_epoch": 2})
    for cls in (CleanAcc, PatchOnlyAcc, PatchFollowRate):
        testing.check_metric(cls)


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


class Unfinished(Schedule):
    """No lr."""
    name = "unfinished"


@pytest.mark.parametrize("check, cls, says", [
    (testing.check_schedule, Negative, "lr(step=0) returned -0.1; allowed: a finite float >= 0"),
    (testing.check_metric, TooHigh, "compute returned 1.5; allowed: a finite float in [0, 1]"),
    (testing.check_patch_generator, Crops, "stamp returned images (32, 3, 32, 31)"),
    (testing.check_regularizer, NoisyInEval, "changes the model in eval mode"),
    (testing.check_schedule, Unfinished, "does not implement the abstract method(s) lr"),
    (testing.check_patch_generator, NoStamp,
     "does not implement the abstract method(s) patch_only, stamp"),
])
def test_a_broken_component_fails_naming_the_property(check, cls, says):
    with pytest.raises(AssertionError) as info:
        check(cls)
    assert says in str(info.value)
