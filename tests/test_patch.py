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


def test_pattern_is_the_authors_draw():
    patch, _ = make()
    g = torch.Generator().manual_seed(2)  # the authors seed torch with 2, then draw z, zeta
    z = 1.25 * torch.randn(3, 7, 7, generator=g)
    zeta = torch.zeros(10, 1, 3, 7, 7).uniform_(-0.1, 0.1, generator=g)
    assert torch.equal(patch.z, z) and torch.equal(patch.zeta, zeta)
    assert patch.zeta.abs().max() <= 0.1


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
