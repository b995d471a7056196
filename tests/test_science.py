"""Tests that fail when the science breaks: what the optimizer receives, how metrics are
measured, the WRN against an independent reference, the evaluation sets, and a seeded
behavioural check that a small LR learns the patch before a large one."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from patchbench.builtin.architectures import WRN
from patchbench.components import Metric
from patchbench.plugins import get_registry
from patchbench.spec import load_spec
from patchbench.spec import plan_trials
from patchbench.train.trainer import TrialRun

from .conftest import REPO, tiny_spec

CPU = torch.device("cpu")


def trial_run(write_spec, spec: dict, overrides: list[str] = (), which: int = 0) -> TrialRun:
    registry = get_registry()
    loaded = load_spec(write_spec(spec), list(overrides), registry)
    data = registry.build("datasets", loaded.dataset.name, loaded.dataset.params).load()
    return TrialRun(loaded, plan_trials(loaded, registry)[which], data, CPU, registry)


def small(**overrides) -> dict:
    spec = tiny_spec(dataset={"name": "synthetic",
                              "params": {"n_train": 96, "n_test": 40, "image_size": 8}},
                     patch={"name": "lwm", "params": {"size": 3}})
    spec.update(overrides)
    return spec


# ---------------------------------------------------------------- the optimizer

def test_the_optimizer_uses_the_schedules_lr_at_every_step_and_the_arms_settings(write_spec):
    arm = {"name": "a", "optimizer": {"lr": 0.3, "momentum": 0.5, "nesterov": False,
                                      "weight_decay": 1e-3},
           "schedule": {"name": "cosine", "params": {"warmup_epochs": 0.5}}}
    run = trial_run(write_spec, small(arms=[arm], training={"epochs": 2, "batch_size": 16}))
    seen = []
    step = run.optimizer.step

    def spy(*args, **kwargs):
        seen.append(dict(run.optimizer.param_groups[0]))
        return step(*args, **kwargs)

    run.optimizer.step = spy
    rows = [run.train_epoch(), run.train_epoch()]
    spe = run.steps_per_epoch
    expected = [run.schedule.lr(s, spe, 2 * spe, 0.3) for s in range(2 * spe)]
    assert len(set(expected)) >= 2 * spe - 1  # the LR changes at (nearly) every step
    assert [g["lr"] for g in seen] == pytest.approx(expected, rel=0, abs=0)
    assert all((g["momentum"], g["nesterov"], g["weight_decay"]) == (0.5, False, 1e-3)
               for g in seen)
    # the history's lr is the one the optimizer used last in each epoch
    assert [r["lr"] for r in rows] == [expected[spe - 1], expected[-1]]


# ---------------------------------------------------------------- how metrics measure

class ModeProbe(Metric):
    """Records what the model looks like while metrics are computed."""

    name = "mode_probe"
    seen: list = []

    def compute(self, ctx) -> float:
        x = ctx.normalize(ctx.data.x_test[:8])
        with torch.no_grad():
            a, b = ctx.model(x), ctx.model(x)
        ModeProbe.seen.append((ctx.model.training, torch.equal(a, b)))
        return 0.5


def test_metrics_are_computed_in_eval_mode_with_regularizers_off(write_spec):
    spec = small(arms=[{"name": "noisy", "optimizer": {"lr": 0.05},
                        "regularizers": [{"name": "act_noise",
                                          "params": {"std": 1.0, "anneal_epoch": None}}]}],
                 training={"epochs": 1, "batch_size": 32})
    run = trial_run(write_spec, spec)
    run.train_epoch()
    run.metrics, run.metric_keys = [ModeProbe()], ["mode_probe"]
    ModeProbe.seen = []
    run.evaluate()
    # eval mode: BatchNorm uses its running statistics and the noise is off, so the same
    # input gives the same logits twice
    assert ModeProbe.seen == [(False, True)]
    run.model.train()  # and the probe would see it otherwise
    x = run.normalize(run.data.x_test[:8])
    assert not torch.equal(run.model(x), run.model(x))


# ---------------------------------------------------------------- the WideResNet

def reference_wrn(sd: dict, x: torch.Tensor, n_blocks: int) -> torch.Tensor:
    """WRN written from PAPER.md and the authors' models/wideresnet.py description, not from
    patchbench's code: a 3x3 stem conv; three groups of pre-activation basic blocks
    (BN-ReLU-conv3x3-BN-ReLU-conv3x3), the first block of groups 2 and 3 with stride 2;
    where a block changes the width, a 1x1 conv shortcut applied to the *activated* input
    (BN-ReLU of x), else the identity on x; then BN-ReLU, global average pool, linear."""
    def bn(prefix, t):
        return F.batch_norm(t, sd[f"{prefix}.running_mean"], sd[f"{prefix}.running_var"],
                            sd[f"{prefix}.weight"], sd[f"{prefix}.bias"], False, 0.0, 1e-5)

    out = F.conv2d(x, sd["conv1.weight"], padding=1)
    b = 0
    for group in range(3):
        for j in range(n_blocks):
            p = f"blocks.{b}"
            stride = 2 if group > 0 and j == 0 else 1
            act = F.relu(bn(f"{p}.bn1", out))
            h = F.conv2d(act, sd[f"{p}.conv1.weight"], stride=stride, padding=1)
            h = F.conv2d(F.relu(bn(f"{p}.bn2", h)), sd[f"{p}.conv2.weight"], padding=1)
            if f"{p}.shortcut.weight" in sd:
                short = F.conv2d(act, sd[f"{p}.shortcut.weight"], stride=stride)
            else:
                short = out
            out = short + h
            b += 1
    out = F.relu(bn("bn1", out)).mean(dim=(2, 3))
    return F.linear(out, sd["fc.weight"], sd["fc.bias"])


def test_wrn_logits_equal_an_independent_reference():
    torch.manual_seed(0)
    model = WRN(WRN.Params(depth=16, width=2)).build(10, (3, 16, 16))
    for m in model.modules():  # BN statistics and affine params that are not the identity
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    model.fc.bias.data.uniform_(-0.1, 0.1)
    model.eval()
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        got = model(x)
    want = reference_wrn(sd, x, n_blocks=2)
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)
    # both kinds of block are exercised: identity (width kept) and 1x1 shortcut
    assert sum(k.endswith("shortcut.weight") for k in sd) == 3
    assert len({k.split(".")[1] for k in sd if k.startswith("blocks.")}) == 6


# ---------------------------------------------------------------- the evaluation sets

class Recorder(nn.Module):
    """Passes inputs to a model and keeps each batch it saw."""

    def __init__(self, model):
        super().__init__()
        self.model, self.inputs = model, []

    def forward(self, x):
        self.inputs.append(x.clone())
        return self.model(x)


def test_each_evaluation_set_is_the_documented_one(write_spec):
    run = trial_run(write_spec, small(training={"epochs": 1, "batch_size": 32},
                                      evaluation={"metrics": ["clean_acc"], "batch_size": 1000}))
    from patchbench.evaluation import EvalContext

    data, patch = run.data, run.patch
    calls = []
    apply, stamp = patch.apply, patch.stamp
    patch.apply = lambda x, y, idx, split, g: calls.append(("apply", x.clone(), y, idx, split)) \
        or apply(x, y, idx, split, g)
    patch.stamp = lambda x, cls, g: calls.append(("stamp", x.clone(), cls)) or stamp(x, cls, g)
    model = Recorder(run.model.eval())
    ctx = EvalContext(model, data, patch, CPU, 1000, 0, run.autocast)
    test_images = run.normalize(data.x_test)
    n_test = len(data.y_test)

    # clean: the test set, unmodified
    ctx.clean()
    assert torch.equal(model.inputs[-1], test_images) and not calls
    # mixed: the *test* split through the training transform, every test index once
    ctx.mixed()
    (_, x, y, idx, split), = calls
    assert split == "test" and torch.equal(idx, torch.arange(n_test))
    assert torch.equal(x, test_images) and torch.equal(y, data.y_test)
    # conflict: every test image stamped with another class's patch
    calls.clear()
    ctx.conflict()
    (_, x, cls), = calls
    assert torch.equal(x, test_images) and bool((cls != data.y_test).all())
    # patch-only: n images with no image content, uniformly random labels
    preds, labels = ctx.patch_only(300)
    inputs = model.inputs[-1]
    assert inputs.shape == (300, *data.image_shape) and len(labels) == 300
    outside = torch.ones(8, 8, dtype=torch.bool)
    outside[patch.rows, patch.cols] = False
    assert bool((inputs[:, :, outside] == 0).all())
    assert 0.05 < float((labels == 0).float().mean()) < 0.2


# ---------------------------------------------------------------- the behaviour

BEHAVIOUR = ["training.epochs=50", "dataset.params.n_train=400", "dataset.params.n_test=500",
             "arms.large_lr.schedule=constant", "arms.small_lr.optimizer.lr=0.01",
             "evaluation.every=2"]
"""The theory task (benchmarks/theory.yaml) cut to seconds: 400 training examples, 50
epochs, the small LR at 0.01, the large LR never annealed. Measured over seeds 0-4, the
best Q-only (patch-only) accuracy of the small LR over the 25 evaluations was 0.97, 0.97,
0.98, 0.98 and 0.77; of the large LR 0.53, 0.53, 0.52, 0.54 and 0.53 (chance is 0.5)."""


@pytest.mark.parametrize("seed", [0, 1])
def test_a_small_lr_learns_the_patch_before_a_large_lr(seed):
    registry = get_registry()
    spec = load_spec(REPO / "benchmarks" / "theory.yaml", BEHAVIOUR + [f"seeds=[{seed}]"],
                     registry)
    data = registry.build("datasets", "two_pattern", spec.dataset.params).load()
    best = {}
    for trial in plan_trials(spec, registry):
        if trial.arm.name not in ("large_lr", "small_lr"):
            continue
        run = TrialRun(spec, trial, data, CPU, registry)
        curve = []
        while run.epoch < spec.training.epochs:
            run.train_epoch()
            if run.epoch % 2 == 0:
                curve.append(run.evaluate()["patch_only_acc"])
        best[trial.arm.name] = max(curve)
    assert best["small_lr"] >= 0.7, best
    assert best["large_lr"] <= 0.6, best
    assert math.isfinite(best["small_lr"])
