"""EM against its definition: the L-inf budget held exactly, sample-wise noise per image and
class-wise noise per class, added then clipped to the image range, and crafting that lowers
the surrogate's loss on the poisoned set (the min-min objective)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from patchbench.crafting import CraftContext
from patchbench.plugins import build_registry
from patchbench.testing import check_patch_generator, small_dataset
from patchbench.train.crafting import build_surrogate
from patchbench_availability.em import EM

CPU = torch.device("cpu")
SMALL = {"surrogate": {"architecture": {"name": "wrn", "params": {"depth": 10, "width": 1}},
                       "lr": 0.1, "batch_size": 64},
         "batch_size": 128, "max_rounds": 3, "train_steps": 2}


def _craft(params: dict, data=None):
    """Craft on a small synthetic set; return the poison, its noise and the surrogate."""
    registry = build_registry()
    data = data or small_dataset(n_train=256, n_test=64)
    em = EM(EM.Params(**params))
    made = []

    def surrogate(spec):
        made.append(build_surrogate(spec, data, CPU, registry))
        return made[-1]
    ctx = CraftContext(data, CPU, em.params.seed, surrogate)
    out = em.craft(ctx)
    em.use_crafted(out)
    em.setup(data, CPU)
    return em, out["noise"], made[0], data, ctx


def test_sample_wise_noise_is_per_image_within_its_budget():
    em, noise, _, data, ctx = _craft({**SMALL, "steps": 3, "step_size": 4 / 255})
    assert noise.shape == (256, 3, 32, 32)
    assert noise.abs().max() <= 8 / 255 + 1e-7
    assert torch.isclose(noise.abs().max(), torch.tensor(8 / 255), atol=1e-6)  # it is used
    same = (data.y_train == data.y_train[0]).nonzero().flatten()[:2]
    assert not torch.equal(noise[same[0]], noise[same[1]])  # two images of a class differ
    assert ctx.stats["rounds"] >= 1 and 0 <= ctx.stats["final_error"] <= 1


def test_class_wise_noise_is_one_per_class():
    em, noise, _, data, _ = _craft({**SMALL, "perturb": "classwise"})
    assert noise.shape == (10, 3, 32, 32) and noise.abs().max() <= 8 / 255 + 1e-7
    x = data.normalizer(CPU)(data.x_train[:64])
    y = data.y_train[:64]
    out, _ = em.apply(x, y, torch.arange(64), "train", torch.Generator())
    a, b = (y == y[0]).nonzero().flatten()[:2]
    delta = (out - x) * em.std
    # The same noise on two images of a class, where neither image is clipped.
    keep = ((data.x_train[a] > 30) & (data.x_train[a] < 225) & (data.x_train[b] > 30)
            & (data.x_train[b] < 225))
    assert torch.allclose(delta[a][keep], delta[b][keep], atol=1e-5)


def test_the_noise_is_added_then_clipped_to_the_image_range():
    em, noise, _, data, _ = _craft({**SMALL, "steps": 2})
    idx = torch.arange(32)
    x = data.normalizer(CPU)(data.x_train[idx])
    out, y = em.apply(x, data.y_train[idx], idx, "train", torch.Generator())
    pixels = out * em.std + em.mean
    expected = (data.x_train[idx].float() / 255 + noise[idx]).clamp(0, 1)
    assert torch.allclose(pixels, expected, atol=1e-5)
    assert torch.equal(y, data.y_train[idx])
    test, _ = em.apply(x, y, idx, "test", torch.Generator())
    assert torch.equal(test, x)  # the test set is clean


def test_crafting_lowers_the_surrogates_loss_on_the_poisoned_set():
    em, noise, surrogate, data, _ = _craft({**SMALL, "steps": 5, "max_rounds": 2})
    model = surrogate.model.eval()
    x = data.normalizer(CPU)(data.x_train)
    with torch.no_grad():
        clean = F.cross_entropy(model(x), data.y_train)
        poisoned, _ = em.apply(x, data.y_train, torch.arange(256), "train", torch.Generator())
        loss = F.cross_entropy(model(poisoned), data.y_train)
    assert loss < clean * 0.9, (float(loss), float(clean))


def test_the_kit_passes_it_with_a_crafted_artifact():
    em = EM
    noise = torch.zeros(256, 3, 32, 32).uniform_(-8 / 255, 8 / 255,
                                                 generator=torch.Generator().manual_seed(0))

    class Crafted(em):
        def setup(self, data, device):
            self.use_crafted({"noise": noise})
            super().setup(data, device)
    Crafted.name = "em_crafted_for_the_kit"
    check_patch_generator(Crafted)
