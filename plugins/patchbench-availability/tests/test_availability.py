"""Each poison against its definition (the authors' code, cited in the modules), through the
public plugin API and the conformance kit."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from importlib.metadata import entry_points

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from patchbench.testing import check_patch_generator, small_dataset
from patchbench_availability.ar import AR, CIFAR10_COEFFICIENTS, ar_perturbations
from patchbench_availability.lsp import LSP
from patchbench_availability.ops import OPS, ops_search

CPU = torch.device("cpu")
ALL = (LSP, AR, OPS)


@pytest.fixture(scope="module")
def data():
    return small_dataset()  # 256 training and 64 test images, 10 classes, 3x32x32


def set_up(cls, data, **params):
    patch = cls(cls.Params(**params))
    patch.setup(data, CPU)
    return patch


def poison(patch, data, split="train", order=None):
    """``apply`` on a whole split (in the order ``order`` of dataset indices), and the
    normalized clean images in that order."""
    xs, ys = (data.x_train, data.y_train) if split == "train" else (data.x_test, data.y_test)
    idx = torch.arange(len(ys)) if order is None else order
    x = data.normalizer(CPU)(xs[idx])
    out, y = patch.apply(x.clone(), ys[idx].clone(), idx, split, torch.Generator().manual_seed(0))
    assert torch.equal(y, ys[idx])  # availability poisons keep every label
    return out, x


def to_pixels(data, x):
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    return x * std + mean


# --- shared: conformance, params, ratio, test set, batch order -----------------------------

@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("params", [{}, {"ratio": 0.3}, {"seed": 3, "ratio": 0.01}])
def test_conformance(cls, params):
    check_patch_generator(cls, params)


@pytest.mark.parametrize("cls", ALL)
def test_bad_params_are_refused(cls):
    for bad in ({"ratio": 0.0}, {"ratio": 1.5}, {"ratio": -0.1}):
        with pytest.raises(ValidationError):
            cls.Params(**bad)
    if cls is not OPS:
        for eps in (0.0, -1.0):
            with pytest.raises(ValidationError):
                cls.Params(eps=eps)


@pytest.mark.parametrize("cls", ALL)
def test_the_ratio_is_poisoned_exactly_and_the_test_set_is_clean(cls, data):
    patch = set_up(cls, data, ratio=0.3)
    out, x = poison(patch, data)
    changed = (out != x).flatten(1).any(dim=1)
    assert int(changed.sum()) == round(0.3 * 256) == 77
    assert torch.equal(changed, patch.subsets["train"])
    out, x = poison(patch, data, "test")
    assert torch.equal(out, x)
    assert not patch.poison_mask(torch.arange(64), "test").any()


@pytest.mark.parametrize("cls", ALL)
def test_apply_follows_the_index_whatever_the_batch_order(cls, data):
    patch = set_up(cls, data, ratio=0.5)
    out, _ = poison(patch, data)
    order = torch.randperm(256, generator=torch.Generator().manual_seed(1))
    shuffled, _ = poison(patch, data, order=order)
    assert torch.equal(shuffled, out[order])
    half, _ = poison(patch, data, order=order[:100])  # another batch size
    assert torch.equal(half, out[order[:100]])


def test_sample_wise_flags():
    assert LSP.sample_wise and AR.sample_wise and not OPS.sample_wise


@pytest.mark.parametrize("cls", (LSP, AR))
def test_stamp_and_patch_only_use_the_patterns_of_the_named_images(cls, data):
    patch = set_up(cls, data, ratio=0.5)
    poisoned = torch.nonzero(patch.subsets["train"]).flatten()[:12]
    cls_ = data.y_train[poisoned]
    gen = torch.Generator().manual_seed(0)
    x = data.normalizer(CPU)(data.x_train[poisoned])
    out, _ = poison(patch, data)
    assert torch.allclose(patch.stamp(x, cls_, gen, idx=poisoned), out[poisoned], atol=1e-6)
    only = to_pixels(data, patch.patch_only(cls_, data.image_shape, gen, idx=poisoned))
    blank = to_pixels(data, torch.zeros_like(x))
    assert torch.allclose(only - blank, patch.deltas(poisoned), atol=1e-5)  # no clipping here
    # without idx (the core's evaluation and preview): patterns of poisoned images of the class
    chosen = patch.choose(torch.arange(10).repeat(5), torch.Generator().manual_seed(0))
    assert torch.equal(data.y_train[chosen], torch.arange(10).repeat(5))
    assert patch.subsets["train"][chosen].all()


def test_stamp_without_idx_falls_back_for_a_class_without_poisoned_images(data):
    patch = set_up(LSP, data, ratio=0.01)  # 3 poisoned images: most classes have none
    chosen = patch.choose(torch.arange(10), torch.Generator().manual_seed(0))
    assert torch.equal(patch.labels[chosen], torch.arange(10))
    missing = torch.bincount(data.y_train[patch.subsets["train"]], minlength=10) == 0
    assert missing.any() and (chosen[missing] < 256).all()  # a training image of the class


# --- LSP -----------------------------------------------------------------------------------

def test_lsp_budget_blocks_and_clusters():
    data = small_dataset(n_train=1000)
    patch = set_up(LSP, data)
    delta = patch.deltas(torch.arange(1000))
    budget = math.sqrt((6 / 255) ** 2 * 3 * 32 * 32)
    assert budget == pytest.approx(1.3041, abs=1e-4)
    assert torch.allclose(delta.flatten(1).norm(dim=1), torch.full((1000,), budget), rtol=1e-5)
    # constant on 8x8 blocks: a 4x4 grid per channel, upsampled
    blocks = delta.view(1000, 3, 4, 8, 4, 8)
    assert torch.equal(blocks, blocks[:, :, :, :1, :, :1].expand_as(blocks))
    # one point per image: images of one class differ
    y = data.y_train
    same = delta[y == 3]
    assert not torch.equal(same[0], same[1])
    # linearly separable: the nearest class mean of the 48 coordinates is the image's class
    grid = blocks[:, :, :, 0, :, 0].flatten(1)
    means = torch.stack([grid[y == c].mean(0) for c in range(10)])
    assert float((torch.cdist(grid, means).argmin(1) == y).float().mean()) > 0.99


def test_lsp_poisoned_image_is_the_clipped_sum(data):
    patch = set_up(LSP, data)
    out, x = poison(patch, data)
    expected = (to_pixels(data, x) + patch.deltas(torch.arange(256))).clamp(0, 1)
    assert torch.allclose(to_pixels(data, out), expected, atol=1e-5)


def test_lsp_crops_blocks_that_do_not_fit():
    data = small_dataset(n_train=50)
    patch = set_up(LSP, data, patch_size=6, eps=3.0)  # a 6x6 grid, the last blocks 2 wide
    delta = patch.deltas(torch.arange(50))
    assert delta.shape == (50, 3, 32, 32)
    budget = math.sqrt((3 / 255) ** 2 * 3072)
    assert torch.allclose(delta.flatten(1).norm(dim=1), torch.full((50,), budget), rtol=1e-5)


def test_lsp_refuses_too_few_coordinates_for_the_classes(data):
    from patchbench.errors import PatchbenchError

    with pytest.raises(PatchbenchError, match="patch.params.patch_size"):
        set_up(LSP, data, patch_size=32)  # 3 coordinates: 8 vertices for 10 classes


def test_lsp_golden_values(data):
    patch = set_up(LSP, data)
    first = patch.deltas(torch.tensor([0]))[0, :, 0, ::8].flatten()[:5]
    assert first.tolist() == pytest.approx([-0.025770695880055428, -0.011644533835351467,
                                            -0.023983344435691833, -0.027966205030679703,
                                            0.004343735054135323], abs=1e-7)
    other = set_up(LSP, data, seed=1).deltas(torch.tensor([0]))
    assert not torch.allclose(other, patch.deltas(torch.tensor([0])))


# --- AR ------------------------------------------------------------------------------------

def test_ar_budget_and_the_classes_filters(data):
    patch = set_up(AR, data)
    delta = patch.deltas(torch.arange(256))
    assert torch.allclose(delta.flatten(1).norm(dim=1), torch.ones(256), rtol=1e-5)
    y = data.y_train
    # the matching filter (the process's coefficients with -1 at the current pixel,
    # autoregressive.py get_filter) annihilates its class's noise on every 3x3 window
    coef = torch.tensor(CIFAR10_COEFFICIENTS)
    filters = coef.clone()
    filters[:, :, 2, 2] = -1

    def response(images, cls):
        return F.conv2d(images, filters[cls].unsqueeze(1), groups=3).abs().amax(dim=(1, 2, 3))

    own = torch.stack([response(delta[i:i + 1], int(y[i])) for i in range(0, 256, 16)])
    other = torch.stack([response(delta[i:i + 1], (int(y[i]) + 1) % 10)
                         for i in range(0, 256, 16)])
    assert float(own.max()) < 1e-5 and float(other.min()) > 1e-3
    # fresh noise per image: images of one class differ
    same = delta[y == 3]
    assert not torch.allclose(same[0], same[1])


def reference_generate(b: torch.Tensor, start: torch.Tensor, crop: int, eps: float):
    """The authors' ARProcessPerturb3Channel.generate (p=2, no added noise) for one image,
    spelled out: a grouped 3x3 conv at every position, in raster order, then crop and scale."""
    signal = start.clone()
    for i in range(signal.shape[1] - 2):
        for j in range(signal.shape[2] - 2):
            val = F.conv2d(signal[:, i:i + 3, j:j + 3], b.unsqueeze(1), groups=3)
            signal[:, i + 2, j + 2] = val.squeeze()
    signal = signal[:, crop:, crop:]
    return signal * (eps / signal.norm())


def test_ar_generation_is_the_authors_generate():
    coef = torch.tensor(CIFAR10_COEFFICIENTS)
    start = torch.randn((2, 3, 20, 20), generator=torch.Generator().manual_seed(0))
    cls_ = torch.tensor([4, 7])
    ours = ar_perturbations(coef[cls_], start, 4, 1.0)
    expected = torch.stack([reference_generate(coef[int(c)], s, 4, 1.0)
                            for c, s in zip(cls_, start)])
    assert ours.shape == (2, 3, 16, 16)
    assert torch.allclose(ours, expected, atol=1e-5)


def test_ar_poisoned_image_is_the_clipped_sum(data):
    patch = set_up(AR, data)
    out, x = poison(patch, data)
    expected = (to_pixels(data, x) + patch.deltas(torch.arange(256))).clamp(0, 1)
    assert torch.allclose(to_pixels(data, out), expected, atol=1e-5)


def test_ar_random_coefficients_and_other_datasets():
    from patchbench.errors import PatchbenchError

    five = small_dataset(n_train=40, num_classes=5)
    with pytest.raises(PatchbenchError, match="patch.params.coefficients"):
        set_up(AR, five)
    patch = set_up(AR, five, coefficients="random")
    assert torch.allclose(patch.coefficients.sum(dim=(2, 3)), torch.ones(5, 3), atol=1e-5)
    assert torch.all(patch.coefficients[:, :, 2, 2] == 0)
    check_patch_generator(AR, {"coefficients": "random"}, data=five)


def test_ar_golden_values(data):
    patch = set_up(AR, data)
    first = patch.deltas(torch.tensor([0])).flatten()[:5]
    assert first.tolist() == pytest.approx([-0.02252567559480667, -0.019498072564601898,
                                            -0.026107756420969963, -0.07040145993232727,
                                            -0.04738250747323036], abs=1e-6)
    # the pattern of an image does not depend on which other images are poisoned
    assert torch.equal(set_up(AR, data, ratio=0.3).deltas(torch.tensor([0])),
                       patch.deltas(torch.tensor([0])))


# --- OPS -----------------------------------------------------------------------------------

def reference_search(x: np.ndarray, y: np.ndarray, k: int):
    """The authors' pixel_search, spelled out with loops (sparsity 1), on uint8 NCHW images."""
    img = x.transpose(0, 2, 3, 1) / 255
    n, h, w, c = img.shape
    taken, out = [], []
    for cls in range(k):
        imgs = img[y == cls]
        score = np.zeros((h * w, 2 ** c))
        for point in range(h * w):
            for colour in range(2 ** c):
                value = np.array([(colour >> (c - 1 - ch)) & 1 for ch in range(c)], float)
                if (point, colour) in taken:
                    continue
                d = np.abs(value - imgs[:, point // w, point % w, :])
                score[point, colour] = d.mean() / d.std()
        best = np.unravel_index(np.argmax(score), score.shape)
        taken.append((int(best[0]), int(best[1])))
        out.append(taken[-1])
    return out


def test_ops_search_is_the_authors_criterion():
    data = small_dataset(n_train=200)
    small = data.x_train[:, :, :12, :12].contiguous()  # a 12x12 crop keeps the loops short
    positions, colours = ops_search(small, data.y_train, 10)
    expected = reference_search(small.numpy(), data.y_train.numpy(), 10)
    assert list(zip(positions.tolist(), colours.tolist())) == expected
    assert len(set(expected)) == 10  # no two classes share a (position, colour)


def test_ops_a_later_class_cannot_take_an_earlier_class_pair():
    data = small_dataset(n_train=60)
    x = data.x_train[:30, :, :8, :8].contiguous()
    twins = torch.cat([x, x])  # classes 0 and 1 see the same images: the same scores
    y = torch.cat([torch.zeros(30, dtype=torch.long), torch.ones(30, dtype=torch.long)])
    positions, colours = ops_search(twins, y, 2)
    pairs = list(zip(positions.tolist(), colours.tolist()))
    assert pairs[0] != pairs[1]
    assert pairs == reference_search(twins.numpy(), y.numpy(), 2)


def test_ops_one_pixel_per_image_the_class_pixel(data):
    patch = set_up(OPS, data)
    out, x = poison(patch, data)
    changed = (out != x).any(dim=1)  # (N, H, W): a pixel changed in any channel
    assert (changed.flatten(1).sum(dim=1) <= 1).all()
    assert int(changed.flatten(1).sum()) >= 250  # all but images that had the colour already
    y = data.y_train
    n = torch.arange(256)
    rows, cols = patch.rows[y], patch.cols[y]
    pixels = to_pixels(data, out)[n, :, rows, cols]
    assert torch.allclose(pixels, patch.colours[y], atol=1e-5)  # the class's corner colour
    assert set(patch.colours.flatten().tolist()) <= {0.0, 1.0}
    # class-wise: the same perturbation for every image of a class
    for c in (0, 5):
        same = torch.nonzero(changed[y == c].flatten(1))[:, 1]
        assert (same == same[0]).all()
    untouched = out.clone()
    untouched[n, :, rows, cols] = x[n, :, rows, cols]
    assert torch.equal(untouched, x)


def test_ops_stamp_and_patch_only_are_class_wise(data):
    patch = set_up(OPS, data)
    cls_ = torch.tensor([2, 2, 7])
    only = patch.patch_only(cls_, data.image_shape, torch.Generator().manual_seed(0))
    assert torch.equal(only[0], only[1]) and not torch.equal(only[0], only[2])
    assert int((only[0] != 0).any(dim=0).sum()) == 1


def test_ops_golden_values(data):
    patch = set_up(OPS, data)
    assert patch.rows.tolist() == [31, 30, 31, 10, 12, 19, 11, 6, 21, 10]
    assert patch.cols.tolist() == [9, 1, 10, 3, 31, 13, 12, 31, 29, 21]
    assert [int(v @ torch.tensor([4.0, 2, 1])) for v in patch.colours] == \
        [0, 7, 5, 0, 3, 0, 6, 0, 4, 6]


# --- registration --------------------------------------------------------------------------

def test_registered_through_the_entry_point():
    names = {ep.name: ep.value for ep in entry_points(group="patchbench")}
    assert names.get("availability") == "patchbench_availability.plugin", \
        "install the distribution: pip install -e plugins/patchbench-availability"
    env = {**os.environ, "COLUMNS": "200"}  # one table row per line
    out = subprocess.run([sys.executable, "-m", "patchbench", "list", "patches"],
                         capture_output=True, text=True, check=True, env=env).stdout
    rows = {line.split("│")[1].strip(): line for line in out.splitlines()
            if line.startswith("│") and line.split("│")[1].strip()}
    for name in ("lsp", "ar", "ops"):
        assert "patchbench-availability 0.1.0" in rows[name]
