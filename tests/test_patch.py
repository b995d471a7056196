"""The lwm patch against PAPER.md and the authors' data_util.py."""

from __future__ import annotations

import torch

from patchbench.builtin.patches import LWMPatch
from patchbench.components import DataBundle

ROWS = slice(12, 19)


def bundle(n_train: int = 5000, n_test: int = 1000) -> DataBundle:
    g = torch.Generator().manual_seed(0)
    x = lambda n: torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = lambda n: torch.randint(0, 10, (n,), generator=g)
    return DataBundle(x(n_train), y(n_train), x(n_test), y(n_test),
                      (0.49, 0.48, 0.45), (0.25, 0.24, 0.26), [str(i) for i in range(10)])


def make(**params) -> tuple[LWMPatch, DataBundle]:
    data = bundle()
    patch = LWMPatch(LWMPatch.Params(**params))
    patch.setup(data, torch.device("cpu"))
    return patch, data


# Golden values: the authors' draws (torch seeded with 2, z then zeta; numpy RandomState(2),
# one uniform per index, train then test, kept if < 0.8), stored as numbers. Each is a
# row of the tensor at the index given.
Z_0_0 = [-1.301001, 1.145755, -1.630238, -1.387098, -1.523473, 1.459491, -1.32174]
Z_2_6 = [3.151331, -0.05655, -0.388154, -1.175911, 0.437046, -1.210228, -0.286593]
ZETA_0_0_0_0 = [-0.097714, 0.004744, 0.064194, -0.058801, -0.004601, -0.049822, -0.078851]
ZETA_9_0_2_6 = [-0.021301, 0.012458, 0.010234, -0.091402, 0.079878, 0.032131, 0.00075]
TRAIN_UNPATCHED = [16, 18, 40, 42, 49, 53, 58, 59, 60, 68, 74, 88]  # of 5,000; 4,025 patched
TEST_UNPATCHED = [7, 12, 13, 19, 24, 35, 49, 52, 59, 75, 76, 77]  # of 1,000; 803 patched


def test_pattern_is_the_authors_draw():
    patch, _ = make()
    close = lambda got, want: torch.allclose(got, torch.tensor(want), atol=1e-6)
    assert close(patch.z[0, 0], Z_0_0) and close(patch.z[2, 6], Z_2_6)
    assert close(patch.zeta[0, 0, 0, 0], ZETA_0_0_0_0)
    assert close(patch.zeta[9, 0, 2, 6], ZETA_9_0_2_6)
    assert patch.z.shape == (3, 7, 7) and patch.zeta.shape == (10, 1, 3, 7, 7)
    assert patch.zeta.abs().max() <= 0.1


def test_fixed_subsets_are_the_authors_draw():
    patch, _ = make()
    train, test = patch.subsets["train"], patch.subsets["test"]
    assert (~train).nonzero().flatten()[:12].tolist() == TRAIN_UNPATCHED
    assert (~test).nonzero().flatten()[:12].tolist() == TEST_UNPATCHED
    assert (int(train.sum()), int(test.sum())) == (4025, 803)


def test_stamp_location_size_and_values():
    patch, data = make()
    x = torch.randn(400, 3, 32, 32)
    cls = torch.arange(400) % 10
    out = patch.stamp(x, cls, torch.Generator().manual_seed(1))
    changed = (out != x).any(dim=(0, 1))
    assert changed.nonzero().min(0).values.tolist() == [12, 12]
    assert changed.nonzero().max(0).values.tolist() == [18, 18]
    centre = out[:, :, ROWS, ROWS]
    plus = patch.z + patch.zeta[cls, 0]
    minus = patch.z - patch.zeta[cls, 0]
    is_plus = torch.isclose(centre, plus).flatten(1).all(1)
    is_minus = torch.isclose(centre, minus).flatten(1).all(1)
    assert bool((is_plus | is_minus).all())
    assert 0.4 < is_plus.float().mean() < 0.6  # the sign is a fair coin


def test_training_split_fixed_subset_and_patch_only_scaling():
    patch, data = make()
    n = 20000
    idx = torch.randint(0, 5000, (n,), generator=torch.Generator().manual_seed(3))
    x = torch.randn(n, 3, 32, 32) + 5.0  # no pixel of the image is 0 or inside the patch range
    y = data.y_train[idx]
    out, out_y = patch.apply(x.clone(), y, idx, "train", torch.Generator().manual_seed(4))
    assert torch.equal(out_y, y)
    in_subset = patch.subsets["train"][idx]
    clean = (out == x).flatten(1).all(1)
    outside = torch.ones(32, 32, dtype=torch.bool)
    outside[ROWS, ROWS] = False
    patch_only = (out[:, :, outside] == 0).flatten(1).all(1)
    patched = ~clean & ~patch_only
    assert not bool((clean & in_subset).any()) and bool(clean[~in_subset].all())
    frac = lambda m: float(m.float().mean())
    assert abs(frac(clean) - 0.20) < 0.015
    assert abs(frac(patched) - 0.64) < 0.015
    assert abs(frac(patch_only) - 0.16) < 0.015
    # image+patch keeps the image outside the centre
    assert torch.equal(out[patched][:, :, outside], x[patched][:, :, outside])
    # patch-only centre = z + c * zeta_y with |c| = 1.75 a, a ~ U[0, 1]
    d = out[patch_only][:, :, ROWS, ROWS] - patch.z
    zeta = patch.zeta[y[patch_only], 0]
    coef = (d * zeta).flatten(1).sum(1) / (zeta * zeta).flatten(1).sum(1)
    assert torch.allclose(d, coef.view(-1, 1, 1, 1) * zeta, atol=1e-5)
    assert coef.abs().max() <= 1.75 + 1e-5 and coef.abs().min() < 0.05
    assert abs(float(coef.abs().mean()) - 1.75 / 2) < 0.05


def test_fixed_subset_is_eighty_percent_and_stable():
    patch, data = make()
    assert abs(float(patch.subsets["train"].float().mean()) - 0.8) < 0.02
    again, _ = make()
    assert torch.equal(patch.subsets["train"], again.subsets["train"])
    assert torch.equal(patch.subsets["test"], again.subsets["test"])
    other, _ = make(seed=7)
    assert not torch.equal(patch.subsets["train"], other.subsets["train"])


def test_deterministic_for_a_seed():
    patch, data = make()
    idx = torch.arange(256)
    x = torch.randn(256, 3, 32, 32)
    a, _ = patch.apply(x.clone(), data.y_train[idx], idx, "train", torch.Generator().manual_seed(5))
    b, _ = patch.apply(x.clone(), data.y_train[idx], idx, "train", torch.Generator().manual_seed(5))
    c, _ = patch.apply(x.clone(), data.y_train[idx], idx, "train", torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_patch_only_images_are_blank_outside_the_patch():
    patch, data = make()
    cls = torch.arange(1000) % 10
    out = patch.patch_only(cls, (3, 32, 32), torch.Generator().manual_seed(0))
    assert out.shape == (1000, 3, 32, 32)
    mask = torch.ones(32, 32, dtype=torch.bool)
    mask[ROWS, ROWS] = False
    assert bool((out[:, :, mask] == 0).all())
    d = out[:, :, ROWS, ROWS] - patch.z
    full = torch.isclose(d.abs(), patch.zeta[cls, 0].abs(), atol=1e-5).flatten(1).all(1)
    assert abs(float(full.float().mean()) - 0.8) < 0.04  # 0.8 z +/- zeta, 0.2 rescaled
