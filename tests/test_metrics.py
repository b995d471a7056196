"""Metric denominators on hand-built models whose answers are known exactly."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from patchbench.builtin.metrics import (CleanAcc, ConflictCleanAcc, MixedAcc, PatchFollowRate,
                                        PatchOnlyAcc)
from patchbench.builtin.patches import LWMPatch
from patchbench.evaluation import EvalContext

from .test_patch import ROWS, bundle


class Constant(nn.Module):
    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, x):
        out = torch.zeros(len(x), 10)
        out[:, self.k] = 1
        return out


class PatchReader(nn.Module):
    """Reads the class from the centre: the zeta_c most aligned with (centre - z)."""

    def __init__(self, patch: LWMPatch):
        super().__init__()
        self.z, self.zeta = patch.z, patch.zeta[:, 0].flatten(1)

    def forward(self, x):
        d = (x[:, :, ROWS, ROWS] - self.z).flatten(1)
        return (d @ self.zeta.T).abs() / self.zeta.norm(dim=1)


def context(model: nn.Module, n_test: int = 1000) -> tuple[EvalContext, LWMPatch]:
    data = bundle(n_test=n_test)
    patch = LWMPatch()
    patch.setup(data, torch.device("cpu"))
    return EvalContext(model, data, patch, torch.device("cpu"), 128, 0,
                       contextlib.nullcontext), patch


def test_constant_model_scores_the_class_frequency():
    ctx, _ = context(Constant(3))
    y = ctx.data.y_test
    assert CleanAcc().compute(ctx) == float((y == 3).float().mean())
    assert MixedAcc().compute(ctx) == float((y == 3).float().mean())
    assert ConflictCleanAcc().compute(ctx) == float((y == 3).float().mean())
    _, _, patch_cls = ctx.conflict()
    assert PatchFollowRate().compute(ctx) == float((patch_cls == 3).float().mean())
    _, labels = ctx.patch_only(1000)
    assert len(labels) == 1000
    assert PatchOnlyAcc().compute(ctx) == float((labels == 3).float().mean())
    assert PatchOnlyAcc(PatchOnlyAcc.Params(n=37)).compute(ctx) == \
        float((ctx.patch_only(37)[1] == 3).float().mean())


def test_a_model_that_reads_only_the_patch():
    ctx, patch = context(None)
    ctx.model = PatchReader(patch)
    assert PatchFollowRate().compute(ctx) == 1.0
    assert ConflictCleanAcc().compute(ctx) == 0.0  # the stamped class is never the true one
    assert PatchOnlyAcc().compute(ctx) > 0.99  # all but near-zero rescaled patches
    # mixed: right on the patched 80% of the test set, chance on the rest
    mixed = MixedAcc().compute(ctx)
    subset = float(patch.subsets["test"].float().mean())
    assert subset < mixed < subset + 0.2 * (1 - subset) + 0.05


def test_evaluation_sets_are_the_same_every_epoch():
    ctx1, patch = context(None)
    ctx1.model = PatchReader(patch)
    ctx2 = EvalContext(ctx1.model, ctx1.data, patch, torch.device("cpu"), 128, 0,
                       contextlib.nullcontext)
    assert torch.equal(ctx1.patch_only(1000)[1], ctx2.patch_only(1000)[1])
    assert torch.equal(ctx1.conflict()[2], ctx2.conflict()[2])
    assert (ctx1.conflict()[2] != ctx1.data.y_test).all()
