"""Sample-wise and clean-test poisons, end to end: evaluation and the preview show the
patterns the model trains with, metrics that cannot apply say so, and a plugin's use of
torch's global RNG in setup cannot shift a trial's model initialization."""

from __future__ import annotations

import contextlib

import pytest
import torch
from pydantic import Field
from torch import nn

from patchbench.components import DataBundle, FixedSubsetPatch, Params
from patchbench.evaluation import EvalContext, pattern_sources
from patchbench.plugins import get_registry
from patchbench.results.preview import preview_rows
from patchbench.spec import load_spec, plan_trials
from patchbench.testing import check_patch_generator, small_dataset
from patchbench.train.trainer import TrialRun

CPU = torch.device("cpu")


class NoiseParams(Params):
    ratio: float = Field(0.5, gt=0, le=1)
    seed: int = 0


class PerImageNoise(FixedSubsetPatch):
    """Sample-wise: training image i carries noise pattern i (the pattern is its index, on
    every pixel, scaled), on an exact ratio of the training set; the test set stays clean."""

    name = "per_image_noise"
    Params = NoiseParams
    sample_wise = True

    def setup(self, data: DataBundle, device: torch.device) -> None:
        self.poison_exactly(data, self.params.ratio, self.params.seed, device)
        n = len(data.y_train)
        # The value of image i's pattern is i / n: tests read the index back from it.
        self.patterns = (torch.arange(n, device=device, dtype=torch.float32) / n)

    def _add(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return x + self.patterns[idx].view(-1, 1, 1, 1)

    def apply(self, x, y, idx, split, gen):
        mask = self.poison_mask(idx, split).view(-1, 1, 1, 1)
        return torch.where(mask, self._add(x, idx), x), y

    def stamp(self, x, cls, gen, idx=None):
        return self._add(x, idx)

    def patch_only(self, cls, image_shape, gen, idx=None):
        return self._add(torch.zeros(len(cls), *image_shape, device=cls.device), idx)


class Recorder(nn.Module):
    """Predicts nothing useful; remembers every input it is shown."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.seen: list[torch.Tensor] = []
        self.num_classes = num_classes

    def forward(self, x):
        self.seen.append(x.clone())
        return torch.zeros(len(x), self.num_classes)


def _context(patch, data, model):
    return EvalContext(model, data, patch, CPU, 50, 0, contextlib.nullcontext)


def test_the_kit_passes_a_sample_wise_poison():
    check_patch_generator(PerImageNoise)
    check_patch_generator(PerImageNoise, {"ratio": 1.0})


def test_exact_ratio_and_a_clean_test_set():
    data = small_dataset(n_train=256)
    patch = PerImageNoise(NoiseParams(ratio=0.3))
    patch.setup(data, CPU)
    assert int(patch.subsets["train"].sum()) == 77  # round(0.3 * 256)
    assert not patch.subsets["test"].any()


def test_evaluation_uses_the_training_patterns_of_poisoned_images_of_the_class():
    data = small_dataset(n_train=256, n_test=64)
    patch = PerImageNoise()
    patch.setup(data, CPU)
    model = Recorder()
    ctx = _context(patch, data, model)
    found = ctx.conflict()
    assert found is not None
    shown = torch.cat(model.seen)
    clean = ctx.normalize(data.x_test)
    sources = torch.round((shown - clean)[:, 0, 0, 0] * 256).long()
    patch_cls = found[2]
    assert patch.subsets["train"][sources].all()  # only poisoned images' patterns
    assert torch.equal(data.y_train[sources], patch_cls)  # of the class they stand for
    assert len(set(sources.tolist())) > 10  # sample-wise: many images' patterns, not one
    model.seen.clear()
    preds, labels = ctx.patch_only(200)
    only = torch.cat(model.seen)
    sources = torch.round(only[:, 0, 0, 0] * 256).long()
    assert patch.subsets["train"][sources].all() and torch.equal(data.y_train[sources], labels)


def test_metrics_that_cannot_apply_are_undefined_not_wrong():
    registry = get_registry()
    data = small_dataset(n_train=256, n_test=64)
    patch = PerImageNoise(NoiseParams(ratio=0.05))  # 13 images: some class has none
    patch.setup(data, CPU)
    assert data.y_train[patch.subsets["train"]].unique().numel() < 10
    ctx = _context(patch, data, Recorder())
    values = {name: registry.build("metrics", name).compute(ctx) for name in (
        "mixed_acc", "patch_only_acc", "patch_follow_rate", "conflict_clean_acc", "clean_acc")}
    assert values["mixed_acc"] is None  # the test set is clean: nothing to mix
    assert values["patch_only_acc"] is None and values["patch_follow_rate"] is None
    assert values["conflict_clean_acc"] is None
    assert isinstance(values["clean_acc"], float)


def test_pattern_sources_draw_within_the_class_and_the_poisoned_subset():
    y = torch.tensor([0, 1, 0, 1, 2, 0])
    patch = PerImageNoise()
    patch.subsets = {"train": torch.tensor([True, True, False, True, False, True])}
    gen = torch.Generator().manual_seed(0)
    src = pattern_sources(patch, y, torch.tensor([0] * 50 + [1] * 50), gen)
    assert set(src[:50].tolist()) == {0, 5} and set(src[50:].tolist()) == {1, 3}
    assert pattern_sources(patch, y, torch.tensor([2]), gen) is None


def test_the_preview_shows_poisoned_images_with_their_own_patterns():
    data = small_dataset(n_train=256)
    patch = PerImageNoise()
    patch.setup(data, CPU)
    rows, labels = preview_rows(data, patch, 8)
    own = torch.round(rows["patch only"][:, 0, 0, 0] * 256).long()
    assert patch.subsets["train"][own].all() and torch.equal(data.y_train[own], labels)
    assert torch.allclose(rows["image + patch"] - rows["clean"],
                          rows["patch only"], atol=1e-6)
    assert torch.allclose(rows["training batch"], rows["image + patch"], atol=1e-6)


class GreedySetup(PerImageNoise):
    """Draws from torch's global RNG in setup, as a careless plugin would."""

    name = "greedy_setup"

    def setup(self, data, device):
        torch.rand(1000)
        super().setup(data, device)


def test_the_kit_flags_a_setup_that_draws_from_the_global_rng():
    with pytest.raises(AssertionError, match="GreedySetup.setup draws from torch's global RNG"):
        check_patch_generator(GreedySetup)


def test_a_setup_drawing_from_the_global_rng_leaves_the_model_initialization_alone(
        write_spec, monkeypatch):
    from .conftest import tiny_spec

    registry = get_registry()
    spec = load_spec(write_spec(tiny_spec(patch={"name": "lwm", "params": {"sep": 0.3}})),
                     registry=registry)
    trial = plan_trials(spec, registry)[0]
    data = registry.build("datasets", spec.dataset.name, spec.dataset.params).load()
    first = lambda run: next(run.model.parameters()).detach().clone()  # noqa: E731
    plain = first(TrialRun(spec, trial, data, CPU, registry))
    from patchbench.builtin.patches import LWMPatch

    real = LWMPatch.setup

    def greedy(self, data, device):
        torch.rand(1000)
        real(self, data, device)
    monkeypatch.setattr(LWMPatch, "setup", greedy)
    assert torch.equal(first(TrialRun(spec, trial, data, CPU, registry)), plain)


def test_the_kit_flags_an_augmentation_setup_that_draws_from_the_global_rng(monkeypatch):
    from patchbench.builtin.augmentations import Flip
    from patchbench.testing import check_augmentation

    check_augmentation(Flip)
    real = Flip.setup

    def greedy(self, data, device):
        torch.randn(3)
        real(self, data, device)
    monkeypatch.setattr(Flip, "setup", greedy)
    with pytest.raises(AssertionError, match="Flip.setup draws from torch's global RNG"):
        check_augmentation(Flip)
