"""Built-in metrics: the authors' three accuracies, two patch-versus-image conflict rates and
the training accuracy.

Every metric is a fraction in [0, 1]; each docstring states its exact denominator.
"""

from __future__ import annotations

from pydantic import Field

from .. import hookimpl
from ..components import Metric, Params
from ..evaluation import EvalContext, accuracy


class CleanAcc(Metric):
    """Accuracy on the unmodified test set (denominator: every test image)."""

    name = "clean_acc"
    short = "clean"

    def compute(self, ctx: EvalContext) -> float:
        return accuracy(*ctx.clean())


class MixedAcc(Metric):
    """Accuracy on the test set patched like training: a fixed subset of the test images
    patched per load, labels unchanged (denominator: every test image)."""

    name = "mixed_acc"
    short = "mixed"
    needs_patch = True
    may_be_undefined = True  # a poison that leaves the test set clean

    def compute(self, ctx: EvalContext) -> float | None:
        found = ctx.mixed()
        return None if found is None else accuracy(*found)


class PatchOnlyParams(Params):
    n: int = Field(1000, ge=1)
    """Number of patch-only images (the authors use 1,000)."""


class PatchOnlyAcc(Metric):
    """Accuracy on n blank images that carry only the patch of a random class
    (denominator: the n images)."""

    name = "patch_only_acc"
    short = "patch-only"
    Params = PatchOnlyParams
    needs_patch = True
    may_be_undefined = True  # a sample-wise poison with no poisoned image of some class

    def compute(self, ctx: EvalContext) -> float | None:
        found = ctx.patch_only(self.params.n)
        return None if found is None else accuracy(*found)


class PatchFollowRate(Metric):
    """Fraction of test images, each stamped with another class's patch, predicted as the
    patch's class (denominator: every test image). High = the model relies on the patch."""

    name = "patch_follow_rate"
    short = "follow"
    needs_patch = True
    higher_is_better = False
    may_be_undefined = True  # see patch_only_acc

    def compute(self, ctx: EvalContext) -> float | None:
        found = ctx.conflict()
        return None if found is None else accuracy(found[0], found[2])


class ConflictCleanAcc(Metric):
    """Fraction of test images, each stamped with another class's patch, predicted as their
    true class (denominator: every test image). High = the image wins over the patch."""

    name = "conflict_clean_acc"
    short = "conflict-clean"
    needs_patch = True
    may_be_undefined = True  # see patch_only_acc

    def compute(self, ctx: EvalContext) -> float | None:
        found = ctx.conflict()
        return None if found is None else accuracy(found[0], found[1])


class TrainAcc(Metric):
    """Accuracy on the training inputs as the model saw them in the epoch just trained: in
    train mode (noise, dropout on), augmented and patched, against the labels it was trained
    on, counted from each step's first forward pass, before that step's update (denominator:
    every training input of the epoch, n_train)."""

    name = "train_acc"
    short = "train"
    may_be_undefined = True  # outside a trial (no epoch trained in this process)
    needs_train_acc = True

    def compute(self, ctx: EvalContext) -> float | None:
        return ctx.train_acc


@hookimpl
def register_metrics(register) -> None:
    for cls in (CleanAcc, MixedAcc, PatchOnlyAcc, PatchFollowRate, ConflictCleanAcc, TrainAcc):
        register(cls)
