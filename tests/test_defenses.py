"""Defenses as recipes: label mixing (mixup, cutmix) against hand-computed losses, cutout,
grayscale and JPEG against their references, PGD adversarial training, and a spec's
``defenses`` crossed with its arms."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from patchbench import testing
from patchbench.builtin.adversarial import PGD
from patchbench.builtin.augmentations import Cutout
from patchbench.builtin.mixing import CutMix, Mixup, beta
from patchbench.builtin.squeezing import Grayscale, Jpeg
from patchbench.components import LabelMixing, Perturbation
from patchbench.spec import load_spec, spec_hash

from .test_recipe import Decided
from .test_science import small, trial_run

CPU = torch.device("cpu")


def mixing_arm(aug: dict | str) -> dict:
    return {"name": "a", "optimizer": {"lr": 0.05}, "augmentations": [aug],
            "augment_order": "after_patch"}


def batch(run, n: int = 16):
    return run.normalize(run.data.x_train[:n]), run.data.y_train[:n]


# ---------------------------------------------------------------- mixup and cutmix

@pytest.mark.parametrize("alpha", [0.4, 1.0, 2.0])
def test_beta_draws_have_the_beta_mean_and_variance(alpha):
    draws = beta(alpha, 40_000, torch.Generator().manual_seed(0), CPU)
    assert 0 <= float(draws.min()) and float(draws.max()) <= 1
    var = 1 / (4 * (2 * alpha + 1))  # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1))
    assert float(draws.mean()) == pytest.approx(0.5, abs=0.01)
    assert float(draws.var()) == pytest.approx(var, rel=0.03)


def test_mixup_trains_on_the_blend_against_the_hand_computed_mixed_loss(write_spec):
    run = trial_run(write_spec, small(arms=[mixing_arm({"name": "mixup",
                                                       "params": {"alpha": 0.7}})]))
    x, y = batch(run)
    state = run.gen.get_state()
    # The draws mixup makes, in its order: lambda, then the partners.
    g = torch.Generator().set_state(state)
    lam = float(beta(0.7, 1, g, CPU))
    partner = torch.randperm(16, generator=g)
    mixed = lam * x + (1 - lam) * x[partner]
    model = run.model
    with torch.no_grad():
        logp = torch.log_softmax(model(mixed), 1)
    rows = torch.arange(16)
    expected = -(lam * logp[rows, y] + (1 - lam) * logp[rows, y[partner]]).mean()
    run.gen.set_state(state)
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    loss = run.train_step(x, y)
    assert torch.allclose(seen[0], mixed, atol=1e-6)
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)
    assert 0.05 < lam < 0.95 and not torch.equal(y, y[partner])  # a real mix was tested


def test_cutmix_pastes_the_partners_box_and_weighs_the_targets_by_its_area():
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 16, 16), torch.arange(8) % 4
    targets = F.one_hot(y, 4).float()
    cut = CutMix(CutMix.Params(alpha=1.0, p=1.0))
    g = torch.Generator().manual_seed(3)
    mixed, mixed_t = cut.mix(x, targets, g)
    g = torch.Generator().manual_seed(3)
    beta(1.0, 1, g, CPU)
    partner = torch.randperm(8, generator=g)
    changed = (mixed != x).any(1)  # (n, h, w): where the partner's pixels are
    others = [i for i in range(8) if int(partner[i]) != i]  # (an image may draw itself)
    assert len(others) >= 6
    assert all(torch.equal(changed[i], changed[others[0]]) for i in others)  # one box
    where = changed[others[0]]
    area = where.float().mean()
    assert 0 < float(area) < 1
    ys, xs = where.nonzero(as_tuple=True)
    box = (slice(int(ys.min()), int(ys.max()) + 1), slice(int(xs.min()), int(xs.max()) + 1))
    assert bool(where[box].all())  # a rectangle
    assert torch.equal(mixed[:, :, box[0], box[1]], x[partner][:, :, box[0], box[1]])
    kept = 1 - float(area)
    expected = kept * targets + (1 - kept) * targets[partner]
    assert torch.allclose(mixed_t, expected, atol=1e-6)


def test_cutmix_with_p_zero_leaves_the_batch_alone():
    x, t = torch.randn(4, 3, 8, 8), F.one_hot(torch.arange(4), 4).float()
    mixed, mixed_t = CutMix(CutMix.Params(p=0.0)).mix(x, t, torch.Generator().manual_seed(0))
    assert torch.equal(mixed, x) and torch.equal(mixed_t, t)


def test_train_acc_under_mixing_credits_the_target_weight_of_the_predicted_class(write_spec):
    spec = small(arms=[mixing_arm("mixup")], evaluation={"metrics": ["train_acc"]})
    del spec["patch"]
    run = trial_run(write_spec, spec)
    run.model = Decided(run.data.num_classes)
    run.optimizer = run.optim.build(run.model.parameters(), 0.05)
    run.norms = []
    x, y = batch(run, 64)
    state = run.gen.get_state()
    g = torch.Generator().set_state(state)
    mixed, t = run.mixers[0].mix(x, F.one_hot(y, run.data.num_classes).float(), g)
    expected = float(t[torch.arange(64), Decided.predicted(mixed)].sum())
    assert expected != round(expected)  # fractional credit: a mixed count, not a plain one
    run.gen.set_state(state)
    correct = torch.zeros((), dtype=torch.float64)
    run.train_step(x, y, correct=correct)
    assert float(correct) == pytest.approx(expected, abs=1e-5)


# ---------------------------------------------------------------- cutout, grayscale, JPEG

def uint8_data(n: int = 12, size: int = 32):
    data = testing.small_dataset(n_train=n, n_test=10)
    g = torch.Generator().manual_seed(1)
    data.x_train = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    # smooth images compress like photographs, not like noise
    data.x_train = F.avg_pool2d(data.x_train.float(), 3, 1, 1).round().to(torch.uint8)
    return data


@pytest.mark.parametrize("fill", ["mean", "zeros"])
def test_cutout_is_the_authors_mask_at_the_drawn_centres(fill):
    data = uint8_data(n=32, size=12)
    aug = Cutout(Cutout.Params(length=6, fill=fill))
    aug.setup(data, CPU)
    x = data.normalizer(CPU)(data.x_train)
    out = aug.apply(x, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    cy, cx = torch.randint(0, 12, (32, 1), generator=g), torch.randint(0, 12, (32, 1), generator=g)
    black = data.normalizer(CPU)(torch.zeros(1, 3, 1, 1, dtype=torch.uint8)).view(3, 1, 1)
    for i in range(32):  # DeVries & Taylor's Cutout.__call__, image by image
        mask = np.ones((12, 12), np.float32)
        y0, x0 = int(cy[i]), int(cx[i])
        mask[np.clip(y0 - 3, 0, 12):np.clip(y0 + 3, 0, 12),
             np.clip(x0 - 3, 0, 12):np.clip(x0 + 3, 0, 12)] = 0.0
        m = torch.from_numpy(mask).bool()
        ref = x[i] * m if fill == "mean" else torch.where(m, x[i], black)
        assert torch.equal(out[i], ref), i
    assert any(int(cy[i]) in (0, 11) for i in range(32))  # a box clipped at a border


def test_grayscale_equals_pils_luma_exactly():
    data = uint8_data()
    aug = Grayscale()
    aug.setup(data, CPU)
    out = aug.apply(data.normalizer(CPU)(data.x_train), torch.Generator())
    pixels = aug.pixels.to_uint8(out)
    for i in range(len(pixels)):
        ref = np.asarray(Image.fromarray(data.x_train[i].permute(1, 2, 0).numpy()).convert("L"))
        for c in range(3):
            assert np.array_equal(pixels[i, c].numpy(), ref), i


JPEG_TOLERANCE = 2
"""Max abs difference in 8-bit levels from PIL's JPEG round trip at the same quality (the
same libjpeg: 0 on 500 CIFAR-10 training images at quality 10 and 75; the bound allows
another build's rounding)."""


@pytest.mark.parametrize("quality", [10, 75])
def test_jpeg_matches_pils_encoder_at_the_same_quality(quality):
    data = uint8_data()
    aug = Jpeg(Jpeg.Params(quality=quality))
    aug.setup(data, CPU)
    x = data.normalizer(CPU)(data.x_train)
    pixels = aug.pixels.to_uint8(aug.apply(x, torch.Generator())).int()
    diffs = []
    for i in range(len(pixels)):
        buf = io.BytesIO()
        Image.fromarray(data.x_train[i].permute(1, 2, 0).numpy()).save(buf, "JPEG",
                                                                        quality=quality)
        ref = torch.from_numpy(np.array(Image.open(buf))).permute(2, 0, 1).int()
        diffs.append((pixels[i] - ref).abs().max())
    assert int(max(diffs)) <= JPEG_TOLERANCE
    assert (pixels - data.x_train.int()).abs().float().mean() > 1  # it did compress


# ---------------------------------------------------------------- adversarial training

def pgd_setup(write_spec, **params):
    arm = {"name": "a", "optimizer": {"lr": 0.05},
           "perturbation": {"name": "pgd", "params": params}}
    return trial_run(write_spec, small(arms=[arm]))


def pixel_space(run, x):
    mean = torch.tensor(run.data.mean).view(1, -1, 1, 1)
    std = torch.tensor(run.data.std).view(1, -1, 1, 1)
    return x * std + mean


def test_pgd_stays_within_eps_and_in_range_and_raises_the_loss(write_spec):
    run = pgd_setup(write_spec, eps=8 / 255, step_size=2 / 255, steps=7)
    for _ in range(2):  # a model that has learned something to attack
        run.train_epoch()
    x, y = batch(run, 48)
    adv = run.perturbation.perturb(run.model.train(), x, y, torch.Generator().manual_seed(0))
    gap = (pixel_space(run, adv) - pixel_space(run, x)).abs()
    assert float(gap.max()) <= 8 / 255 + 1e-6
    assert float(gap.max()) >= 8 / 255 - 1e-6  # it uses its budget
    p = pixel_space(run, adv)
    assert float(p.min()) >= -1e-6 and float(p.max()) <= 1 + 1e-6
    run.model.eval()
    with torch.no_grad():
        clean, attacked = (F.cross_entropy(run.model(v), y) for v in (x, adv))
    assert float(attacked) > float(clean) + 0.05


def test_pgd_changes_the_batch_the_optimizer_trains_on(write_spec):
    run = pgd_setup(write_spec, steps=2)
    x, y = batch(run)
    seen = []
    hook = run.model.register_forward_pre_hook(lambda m, a: seen.append((m.training,
                                                                         a[0].clone())))
    run.train_step(x, y)
    hook.remove()
    trained = [v for training, v in seen if training]
    assert len(seen) == 3 and len(trained) == 1  # two attack passes (eval), one step
    gap = (pixel_space(run, trained[0]) - pixel_space(run, x)).abs().max()
    assert 0 < float(gap) <= 8 / 255 + 1e-6


def robust_acc(run, x, y) -> float:
    run.model.eval()
    adv = run.perturbation.perturb(run.model, x, y, torch.Generator().manual_seed(1))
    run.model.eval()
    with torch.no_grad():
        return float((run.model(adv).argmax(1) == y).float().mean())


def test_adversarial_training_raises_robust_accuracy_on_pgd_inputs(write_spec):
    spec = small(arms=[{"name": "a", "optimizer": {"lr": 0.05},
                        "perturbation": {"name": "pgd", "params": {"steps": 3}}}],
                 dataset={"name": "synthetic",
                          "params": {"n_train": 256, "n_test": 40, "image_size": 8}},
                 training={"epochs": 6, "batch_size": 32})
    del spec["patch"]
    run = trial_run(write_spec, spec)
    x, y = run.normalize(run.data.x_train[:128]), run.data.y_train[:128]
    before = robust_acc(run, x, y)
    for _ in range(6):
        run.train_epoch()
    after = robust_acc(run, x, y)
    assert after > before + 0.15, (before, after)


# ---------------------------------------------------------------- the kit and bad params

def test_the_kit_passes_the_new_builtins():
    for cls, params in ((Mixup, {}), (CutMix, {"p": 1.0}), (Cutout, {}), (Grayscale, {}),
                        (Jpeg, {}), (Cutout, {"fill": "zeros", "length": 4})):
        testing.check_augmentation(cls, params, data=uint8_data(n=16, size=8))
    testing.check_perturbation(PGD, {"steps": 2})


class Unnormalized(LabelMixing):
    """Targets that do not sum to 1."""

    name = "unnormalized"

    def mix(self, x, targets, gen):
        return x.flip(0), targets + targets.flip(0)


class LeavesEval(Perturbation):
    """Forgets to switch the model back."""

    name = "leaves_eval"

    def perturb(self, model, x, targets, gen):
        model.eval()
        return x + 0.01 * torch.randn(x.shape, generator=gen)


class Accumulates(Perturbation):
    """Calls backward on the model's loss."""

    name = "accumulates"

    def perturb(self, model, x, targets, gen):
        F.cross_entropy(model(x), targets).backward()
        return x + 0.01 * torch.randn(x.shape, generator=gen)


@pytest.mark.parametrize("check, cls, says", [
    (testing.check_augmentation, Unnormalized, "not class probabilities"),
    (testing.check_perturbation, LeavesEval, "left the model in eval mode"),
    (testing.check_perturbation, Accumulates, "left gradients in the model's parameters"),
])
def test_a_broken_defense_fails_the_kit_naming_the_property(check, cls, says):
    with pytest.raises(AssertionError, match=says):
        check(cls)


@pytest.mark.parametrize("where, value, says", [
    ("arms.a.augmentations", '[{name: mixup, params: {alpha: 0}}]',
     "arms[0].augmentations[0].params.alpha: Input should be greater than 0"),
    ("arms.a.augmentations", '[{name: cutmix, params: {alpha: -1}}]',
     "arms[0].augmentations[0].params.alpha: Input should be greater than 0"),
    ("arms.a.augmentations", '[{name: jpeg, params: {quality: 0}}]',
     "arms[0].augmentations[0].params.quality: Input should be greater than or equal to 1"),
    ("arms.a.augmentations", '[{name: jpeg, params: {quality: 101}}]',
     "arms[0].augmentations[0].params.quality: Input should be less than or equal to 100"),
    ("arms.a.perturbation", '{name: pgd, params: {eps: -0.1}}',
     "arms[0].perturbation.params.eps: Input should be greater than or equal to 0"),
])
def test_a_bad_defense_param_is_one_line_exit_2(write_spec, run_cli, where, value, says):
    spec = small(arms=[{"name": "a", "optimizer": {"lr": 0.05}, "augment_order": "after_patch"}])
    code, out, err = run_cli("validate", write_spec(spec), "--set", f"{where}={value}")
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "Traceback" not in err, err


# ---------------------------------------------------------------- defenses in a spec

DEFENSES = [{"name": "jpeg", "before": [{"name": "jpeg", "params": {"quality": 10}}]},
            {"name": "cutout", "after": ["cutout"]},
            {"name": "at", "perturbation": {"name": "pgd", "params": {"steps": 2}},
             "control": False}]


def test_defenses_are_crossed_with_every_arm_each_after_its_arm(write_spec):
    arms = [{"name": "large", "optimizer": {"lr": 0.1}, "control": True,
             "augmentations": ["flip"], "augment_order": "after_patch"},
            {"name": "small", "optimizer": {"lr": 0.01}}]
    spec = load_spec(write_spec(small(arms=arms, defenses=DEFENSES)))
    assert [a.name for a in spec.arms] == [
        "large", "large-jpeg", "large-cutout", "large-at",
        "small", "small-jpeg", "small-cutout", "small-at"]
    by = {a.name: a for a in spec.arms}
    assert [r.name for r in by["large-jpeg"].augmentations] == ["jpeg", "flip"]
    assert [r.name for r in by["large-cutout"].augmentations] == ["flip", "cutout"]
    assert by["small-cutout"].augment_order == "after_patch"
    assert by["large-at"].perturbation.name == "pgd" and not by["large-at"].control
    assert by["large-jpeg"].control and by["small-jpeg"].defense.of == "small"
    assert by["large"].defense is None


def test_a_spec_without_defenses_keeps_its_hash(write_spec):
    # recorded before arms could carry a perturbation or a defense
    assert spec_hash(load_spec(write_spec(small()))) == spec_hash(load_spec(write_spec(small())))
    plain = load_spec(write_spec(small()))
    data = plain.model_dump(mode="json")
    assert data["arms"][0]["perturbation"] is None  # the field exists ...
    assert spec_hash(plain) == GOLDEN_SMALL_HASH  # ... and leaves the hash as it was


GOLDEN_SMALL_HASH = "da971ff72f25962b"  # main at 1dc68d1, before this field


def test_a_defense_on_an_arm_that_augments_before_the_patch_is_refused(write_spec, run_cli):
    arms = [{"name": "b", "optimizer": {"lr": 0.1}, "augmentations": ["flip"],
             "augment_order": "before_patch"}]
    code, _, err = run_cli("validate", write_spec(small(arms=arms, defenses=DEFENSES[:1])))
    assert code == 2
    assert "defenses[0] (jpeg) with arm 'b': the arm augments before the patch" in err


def test_a_bad_defense_entry_names_its_path(write_spec, run_cli):
    code, _, err = run_cli("validate", write_spec(small(defenses=[{"name": "none"}])))
    assert code == 2 and "defenses[0]: a defense needs at least one of" in err, err
    code, _, err = run_cli("validate", write_spec(small(defenses=[{"name": "x", "bad": 1}])))
    assert code == 2 and "defenses[0].bad: unknown key" in err, err


def test_a_defended_grid_gives_attack_by_defense_tables_gains_and_heatmaps(write_spec, run_cli,
                                                                          tmp_path):
    import json

    from .test_cli import stored

    spec = small(arms=[{"name": "big", "optimizer": {"lr": 0.1}, "control": True},
                       {"name": "little", "optimizer": {"lr": 0.01}}],
                 defenses=[{"name": "gray", "before": ["grayscale"]},
                           {"name": "mix", "after": ["mixup"]}],
                 training={"epochs": 2, "batch_size": 32, "threads": 1}, seeds=[0, 1])
    out = tmp_path / "out"
    code, _, err = run_cli("run", write_spec(spec), "--out", out)
    assert code == 0, err
    records = stored(out)
    assert len(records) == 2 * (3 * 2 + 3)  # 6 patched arms, the big ones' 3 controls
    clean = {(r["arm"], r["patch"], r["seed"]): r["summary"]["final"]["clean_acc"]
             for r in records.values()}
    code, text, err = run_cli("leaderboard", out, "--defenses", "--format", "json")
    assert code == 0, err
    tables = json.loads(text)
    gains = next(t for t in tables if "defense gain" in t["title"])["rows"]
    cell = next(r for r in gains if r["attack"] == "lwm" and r["arm"] == "little"
                and r["defense"] == "gray")
    by_hand = [clean[("little-gray", "lwm", s)] - clean[("little", "lwm", s)] for s in (0, 1)]
    assert cell["gain_mean"] == pytest.approx(sum(by_hand) / 2, abs=1e-12)
    assert cell["gain_n"] == 2
    table = next(t for t in tables if "final / peak" in t["title"])["rows"]
    none = next(r for r in table if r["attack"] == "lwm" and r["arm"] == "big"
                and r["defense"] == "none")
    assert none["final_mean"] == pytest.approx((clean[("big", "lwm", 0)]
                                                + clean[("big", "lwm", 1)]) / 2)
    assert {r["defense"] for r in table} == {"none", "gray", "mix"}
    code, text, _ = run_cli("leaderboard", out, "--defenses", "--format", "md")
    assert "| lwm | little |" in text and "defense gain" in text
    code, text, _ = run_cli("leaderboard", out, "--format", "md")
    assert "defense gain" in text
    page = tmp_path / "r.html"
    code, _, err = run_cli("report", out, "--out", page)
    assert code == 0, err
    html = page.read_text()
    assert "<h3>Defenses</h3>" in html and 'data-metric="defense_gain"' in html
    assert f'{by_hand[0] / 2 + by_hand[1] / 2:+.3f}' in html
