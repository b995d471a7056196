"""Training recipes: optimizers (SGD unchanged bit for bit, Adam, AdamW, SAM), augmentation
(crop and flip as airbench does them, before or after the patch, training only), label
smoothing and the training accuracy."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from patchbench.boundary import PluginError
from patchbench.builtin.augmentations import Crop, Flip
from patchbench.builtin.optimizers import SAM
from patchbench.components import Augmentation, Metric
from patchbench.plugins import get_registry
from patchbench.spec import load_spec, spec_hash
from patchbench.spec import plan_trials
from patchbench.train.trainer import train_trial

from .conftest import tiny_spec
from .test_cli import stored
from .test_science import small, trial_run

CPU = torch.device("cpu")


@pytest.fixture
def one_thread():
    """Golden values were recorded on one thread: more may sum in another order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_history(write_spec, spec: dict, overrides: list[str] = ()) -> list[dict]:
    registry = get_registry()
    loaded = load_spec(write_spec(spec), list(overrides), registry)
    data = registry.build("datasets", loaded.dataset.name, loaded.dataset.params).load()
    result = train_trial(loaded, plan_trials(loaded, registry)[0], data, CPU, registry)
    assert result.status == "completed", result.error
    return [{k: v for k, v in row.items() if k != "time_s"} for row in result.history]


# ---------------------------------------------------------------- SGD as it was

PIN_IMAGES = {
    "name": "pin", "version": 1,
    "dataset": {"name": "synthetic", "params": {"n_train": 96, "n_test": 40, "image_size": 8}},
    "patch": {"name": "lwm", "params": {"size": 3, "sep": 0.3}},
    "architectures": [{"name": "wrn", "params": {"depth": 10, "width": 1}}],
    "arms": [{"name": "a", "optimizer": {"lr": 0.1},
              "schedule": {"name": "multistep", "params": {"milestones": [2], "factor": 0.04}}}],
    "training": {"epochs": 2, "batch_size": 16},
    "evaluation": {"metrics": ["clean_acc", "mixed_acc", "patch_only_acc"], "batch_size": 40},
}
PIN_THEORY = {
    "name": "pin_theory", "version": 1,
    "dataset": {"name": "two_pattern",
                "params": {"d_p": 40, "d_q": 10, "n_train": 64, "n_test": 50}},
    "patch": {"name": "two_pattern_q", "params": {"dims": 10}},
    "architectures": [{"name": "mlp2", "params": {"width": 16}}],
    "arms": [{"name": "a", "optimizer": {"lr": 0.1, "nesterov": False}}],
    "training": {"epochs": 3, "batch_size": 16},
    "evaluation": {"metrics": ["clean_acc", "patch_only_acc"], "batch_size": 50},
}
# Recorded with the code before optimizers became components (main at 519317a, one thread).
GOLDEN_IMAGES = [
    {"epoch": 1, "lr": 0.1, "train_loss": 2.3035545349121094, "clean_acc": 0.17499999701976776,
     "mixed_acc": 0.17499999701976776, "patch_only_acc": 0.09600000083446503},
    {"epoch": 2, "lr": 0.004, "train_loss": 1.9076501528422039,
     "clean_acc": 0.22499999403953552, "mixed_acc": 0.30000001192092896,
     "patch_only_acc": 0.10300000011920929}]
GOLDEN_THEORY = [
    {"epoch": 1, "lr": 0.1, "train_loss": 0.71225506067276, "clean_acc": 0.5199999809265137,
     "patch_only_acc": 0.5130000114440918},
    {"epoch": 2, "lr": 0.1, "train_loss": 0.6922645568847656,
     "clean_acc": 0.47999998927116394, "patch_only_acc": 0.5130000114440918},
    {"epoch": 3, "lr": 0.1, "train_loss": 0.7140800356864929, "clean_acc": 0.5,
     "patch_only_acc": 0.2590000033378601}]


@pytest.mark.parametrize("spec, golden", [(PIN_IMAGES, GOLDEN_IMAGES),
                                          (PIN_THEORY, GOLDEN_THEORY)], ids=["wrn", "theory"])
def test_sgd_without_augmentation_reproduces_the_stored_histories(write_spec, one_thread,
                                                                 spec, golden):
    assert run_history(write_spec, spec) == golden
    # the new options at their defaults, spelled out, change nothing either
    explicit = copy.deepcopy(spec)
    explicit["arms"][0].update(augmentations=[], label_smoothing=0.0)
    explicit["arms"][0]["optimizer"]["name"] = "sgd"
    assert run_history(write_spec, explicit) == golden


def test_defaults_spelled_out_keep_the_spec_hash(write_spec):
    base = spec_hash(load_spec(write_spec(tiny_spec())))
    spec = tiny_spec()
    spec["arms"][0].update(augmentations=[], label_smoothing=0, optimizer={
        "name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4})
    assert spec_hash(load_spec(write_spec(spec))) == base
    for override in ("arms[0].optimizer.name=sam", "arms[0].label_smoothing=0.1",
                     "arms[0].augmentations=[flip]"):
        changed = load_spec(write_spec(spec), [override, "arms[0].augment_order=after_patch"])
        assert spec_hash(changed) != base, override


# ---------------------------------------------------------------- optimizer specs

def test_an_optimizers_params_are_the_keys_of_the_arms_optimizer_mapping(write_spec):
    spec = tiny_spec()
    spec["arms"][0]["optimizer"] = {"name": "adamw", "lr": 1e-3, "weight_decay": 0.05}
    arm = load_spec(write_spec(spec)).arms[0]
    assert (arm.optimizer.name, arm.optimizer.lr) == ("adamw", 1e-3)
    assert arm.optimizer.params == {"betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.05}


@pytest.mark.parametrize("optimizer, says", [
    ({"name": "adam", "lr": 0.1, "momentum": 0.9},
     "arms[0].optimizer.momentum: unknown key; allowed: name, lr, betas, eps, weight_decay"),
    ({"lr": 0.1, "momentum": 0, "nesterov": True},
     "arms[0].optimizer: nesterov needs momentum > 0 (got {'momentum': 0, 'nesterov': True})"),
    ({"name": "adm", "lr": 0.1},
     "arms[0].optimizer.name: unknown optimizer 'adm'; did you mean 'adam', 'adamw', 'sam'? "
     "available: adam, adamw, sam, sgd"),
    ({"name": "sam", "lr": 0.1, "rho": 0}, "arms[0].optimizer.rho: Input should be greater "
     "than 0 (got 0)"),
    ({"name": "adamw"}, "arms[0].optimizer.lr: required field is missing"),
    ({"name": "adam", "lr": 0.1, "betas": [0.9, 1.0]},
     "arms[0].optimizer.betas: each must be in [0, 1) (got [0.9, 1.0])"),
])
def test_bad_optimizer_settings_are_one_line_naming_the_field(write_spec, run_cli, optimizer,
                                                              says):
    from .test_spec import one_error

    spec = tiny_spec()
    spec["arms"][0]["optimizer"] = optimizer
    assert one_error(run_cli, write_spec(spec)).endswith(says)


def test_the_trainer_builds_the_arms_optimizer_and_sets_the_schedules_lr(write_spec):
    arm = {"name": "a", "optimizer": {"name": "adamw", "lr": 0.01, "weight_decay": 0.1},
           "schedule": {"name": "cosine"}}
    run = trial_run(write_spec, small(arms=[arm], training={"epochs": 1, "batch_size": 32}))
    assert type(run.optimizer) is torch.optim.AdamW
    seen, step = [], run.optimizer.step

    def spy(*args, **kwargs):
        seen.append(dict(run.optimizer.param_groups[0]))
        return step(*args, **kwargs)

    run.optimizer.step = spy
    run.train_epoch()
    spe = run.steps_per_epoch
    assert [g["lr"] for g in seen] == [run.schedule.lr(s, spe, spe, 0.01) for s in range(spe)]
    assert all(g["weight_decay"] == 0.1 and g["betas"] == (0.9, 0.999) for g in seen)


# ---------------------------------------------------------------- SAM

def test_one_sam_step_equals_the_hand_computed_one():
    """Least squares on a linear model: every gradient in closed form, 2/n X^T (Xw - t)."""
    torch.manual_seed(0)
    X, t = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    w0 = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    rho, lr, mom, wd = 0.05, 0.1, 0.9, 5e-4

    def grad(w):
        return 2 / len(t) * X.T @ (X @ w - t)

    for adaptive in (False, True):
        g = grad(w0)
        if adaptive:  # ASAM: e = rho * w^2 g / ||w g||
            e = rho * w0 ** 2 * g / torch.linalg.vector_norm(w0.abs() * g)
        else:  # SAM: e = rho * g / ||g||
            e = rho * g / torch.linalg.vector_norm(g)
        d = grad(w0 + e) + wd * w0  # the gradient at w + e, plus SGD's L2 term
        expected = w0 - lr * (d + mom * d)  # Nesterov, first step: buffer = d

        w = nn.Parameter(w0.clone())
        sam = SAM(SAM.Params(rho=rho, adaptive=adaptive))
        opt = sam.build([w], lr)
        loss = sam.step(opt, lambda: ((X @ w - t) ** 2).mean())
        assert float(loss.detach()) == pytest.approx(float(((X @ w0 - t) ** 2).mean()), abs=1e-12)
        torch.testing.assert_close(w.detach(), expected, rtol=0, atol=1e-12)
    # and the base optimizer is SGD with the arm's momentum, nesterov and weight decay
    group = SAM(SAM.Params(momentum=0.5, nesterov=False, weight_decay=0.1)).build(
        [nn.Parameter(torch.zeros(1))], 0.3).param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == \
        (0.3, 0.5, False, 0.1)


def test_sams_second_pass_leaves_the_batch_norm_statistics_alone(write_spec):
    arm = {"name": "a", "optimizer": {"name": "sam", "lr": 0.1}}
    run = trial_run(write_spec, small(arms=[arm], training={"epochs": 1, "batch_size": 16}))
    x = run.normalize(run.data.x_train[:16])
    y = run.data.y_train[:16]
    reference = copy.deepcopy(run.model).train()
    with torch.no_grad():
        reference(x)  # one forward pass in train mode: one update of the running statistics
    run.train_step(x, y)
    buffers = dict(run.model.named_buffers())
    assert buffers, "the model has batch norms"
    for name, value in reference.named_buffers():
        assert torch.equal(buffers[name], value), name


# ---------------------------------------------------------------- augmentations

def images(n: int = 64, size: int = 8) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("fill", ["reflect", "zeros"])
def test_crop_is_a_padded_crop_at_the_drawn_offsets(fill):
    from patchbench.testing import small_dataset

    data = small_dataset(n_train=32, n_test=10)
    crop = Crop(Crop.Params(padding=3, fill=fill))
    crop.setup(data, CPU)
    normalize = data.normalizer(CPU)
    x = normalize(data.x_train)
    out = crop.apply(x, torch.Generator().manual_seed(7))
    # the reference: torchvision's way, one image at a time on the stored uint8 image
    shifts = torch.randint(0, 7, (len(x), 2), generator=torch.Generator().manual_seed(7))
    for i, (dy, dx) in enumerate(shifts.tolist()):
        if fill == "reflect":
            padded = F.pad(x[i:i + 1], (3, 3, 3, 3), mode="reflect")[0]
        else:  # a black pixel, normalized as the dataset's images are
            padded = normalize(F.pad(data.x_train[i:i + 1], (3, 3, 3, 3), value=0))[0]
        assert torch.equal(out[i], padded[:, dy:dy + 32, dx:dx + 32]), i
    assert (shifts.min(), shifts.max()) == (0, 6)


def test_crop_draws_every_offset_in_the_padding():
    x = torch.arange(4 * 4, dtype=torch.float32).view(1, 1, 4, 4).expand(3000, 3, 4, 4)
    crop = Crop(Crop.Params(padding=1))
    out = crop.apply(x.contiguous(), torch.Generator().manual_seed(0))
    # the centre pixel (1, 1) of a reflect-padded crop comes from (dy, dx) in -1..1
    centres = set(out[:, 0, 1, 1].tolist())
    assert centres == {0.0, 1.0, 2.0, 4.0, 5.0, 6.0, 8.0, 9.0, 10.0}


def test_flip_mirrors_the_drawn_images():
    x = images(200)
    out = Flip(Flip.Params(p=0.5)).apply(x, torch.Generator().manual_seed(3))
    mirrored = torch.rand(200, generator=torch.Generator().manual_seed(3)) < 0.5
    assert 60 < int(mirrored.sum()) < 140
    assert torch.equal(out[mirrored], x[mirrored].flip(-1))
    assert torch.equal(out[~mirrored], x[~mirrored])


def test_crop_of_feature_vectors_is_refused_before_training(write_spec, run_cli, tmp_path):
    spec = {**PIN_THEORY, "arms": [{"name": "a", "optimizer": {"lr": 0.1},
                                    "augmentations": ["crop"], "augment_order": "after_patch"}]}
    path = write_spec(spec)
    code, _, err = run_cli("run", path, "--out", tmp_path / "out")
    assert code == 2 and err == (
        f"patchbench: error: {path}: augmentations: augmentation 'crop' needs images (channels, "
        "height, width); the dataset gives feature vectors of shape (50,)\n")
    assert stored(tmp_path / "out") == {}  # nothing trained


def test_augment_order_is_required_with_a_patch(write_spec, run_cli):
    from .test_spec import one_error

    spec = tiny_spec()
    spec["arms"][1]["augmentations"] = ["crop", "flip"]
    path = write_spec(spec)
    assert one_error(run_cli, path) == (
        f"patchbench: error: {path}: arms[1].augment_order: required when the spec has a "
        "patch and the arm has augmentations; allowed: after_patch (poison, then augment, as "
        "BackdoorBench), before_patch (augment the clean image, then patch it)")
    del spec["patch"]
    code, out, err = run_cli("validate", write_spec(spec))
    assert code == 0, err


class Spy(Augmentation):
    """Records the calls."""

    name = "spy"
    events: list = []

    def apply(self, x, gen):
        Spy.events.append(("augment", x.clone()))
        return x + 0.0


@pytest.mark.parametrize("order", ["after_patch", "before_patch"])
def test_augmentation_goes_where_the_arm_says_and_only_in_training(write_spec, order):
    arm = {"name": "a", "optimizer": {"lr": 0.05}, "augmentations": ["flip"],
           "augment_order": order}
    evaluation = {"metrics": ["clean_acc", "mixed_acc", "conflict_clean_acc",
                              {"name": "patch_only_acc", "params": {"n": 100}}],
                  "batch_size": 50}
    spec = small(arms=[arm], training={"epochs": 1, "batch_size": 16}, evaluation=evaluation)
    run = trial_run(write_spec, spec)
    plain = trial_run(write_spec, small(arms=[{"name": "a", "optimizer": {"lr": 0.05}}],
                                        training={"epochs": 1, "batch_size": 16},
                                        evaluation=evaluation))
    # same seed, same initial model: the augmentation's setup draws nothing
    assert run.evaluate() == plain.evaluate()
    Spy.events = []
    run.augs = [Spy(), *run.augs]
    apply = run.patch.apply

    def patch_apply(x, y, idx, split, gen):
        Spy.events.append(("patch", x.clone()))
        return apply(x, y, idx, split, gen)

    run.patch.apply = patch_apply
    run.train_epoch()
    kinds = [k for k, _ in Spy.events]
    assert kinds == (["patch", "augment"] if order == "after_patch" else ["augment", "patch"])
    # evaluation never augments
    Spy.events = []
    run.patch.apply = apply
    run.evaluate()
    assert Spy.events == []


def test_an_augmentation_that_changes_the_shape_fails_naming_it(write_spec):
    class Shrinks(Augmentation):
        """Bad."""
        name = "shrinks"

        def apply(self, x, gen):
            return x[..., 1:]

    run = trial_run(write_spec, small(arms=[{"name": "a", "optimizer": {"lr": 0.05}}]))
    bad = Shrinks()
    bad.origin = "augmentation 'shrinks' (plugin 'p', dist 1.0)"
    run.augs = [bad]
    with pytest.raises(PluginError) as info:
        run.train_epoch()
    assert str(info.value) == (
        "augmentation 'shrinks' (plugin 'p', dist 1.0): apply returned images (96, 3, 8, 7) "
        "float32 on cpu for input (96, 3, 8, 8) float32 on cpu; allowed: the same shape, "
        "dtype and device")


def test_a_recipe_trial_resumes_as_if_uninterrupted(write_spec, tmp_path):
    arm = {"name": "a", "optimizer": {"name": "sam", "lr": 0.05}, "label_smoothing": 0.1,
           "augmentations": ["crop", {"name": "flip", "params": {"p": 0.3}}],
           "augment_order": "before_patch"}
    spec = small(arms=[arm], training={"epochs": 2, "batch_size": 32},
                 evaluation={"metrics": ["clean_acc", "train_acc"], "batch_size": 40})
    registry = get_registry()
    loaded = load_spec(write_spec(spec), [], registry)
    data = registry.build("datasets", "synthetic", loaded.dataset.params).load()
    trial = plan_trials(loaded, registry)[0]
    whole = train_trial(loaded, trial, data, CPU, registry)
    path = tmp_path / "ckpt.pt"

    class Killed(Exception):
        pass

    def kill(row):
        if row["epoch"] == 1:
            raise Killed

    with pytest.raises(Killed):
        train_trial(loaded, trial, data, CPU, registry, on_epoch=kill, checkpoint=path)
    resumed = train_trial(loaded, trial, data, CPU, registry, checkpoint=path)
    strip = lambda h: [{k: v for k, v in row.items() if k != "time_s"} for row in h]
    assert strip(resumed.history) == strip(whole.history)
    assert all(0 <= row["train_acc"] <= 1 for row in whole.history)


# ---------------------------------------------------------------- loss and training accuracy

def test_label_smoothing_is_crossentropy_against_the_smoothed_target(write_spec):
    s = 0.2
    arm = {"name": "a", "optimizer": {"lr": 0.05}, "label_smoothing": s}
    run = trial_run(write_spec, small(arms=[arm]))
    x, y = run.normalize(run.data.x_train[:16]), run.data.y_train[:16]
    with torch.no_grad():
        logp = torch.log_softmax(copy.deepcopy(run.model).train()(x), 1)
    k = logp.shape[1]
    target = torch.full_like(logp, s / k)
    target[torch.arange(16), y] += 1 - s
    expected = -(target * logp).sum(1).mean()
    assert float(run.train_step(x, y).detach()) == pytest.approx(float(expected), rel=1e-5)


class Decided(nn.Module):
    """Predicts class (sum of the first channel > 0) * 3: logits fixed by the input alone; a
    parameter multiplied by zero gives the optimizer something to step."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.k, self.w = num_classes, nn.Parameter(torch.zeros(()))

    @staticmethod
    def predicted(x: torch.Tensor) -> torch.Tensor:
        return (x[:, 0].sum((1, 2)) > 0).long() * 3

    def forward(self, x):
        return F.one_hot(self.predicted(x), self.k).float() * 5 + 0 * self.w


@pytest.mark.parametrize("optimizer", ["sgd", "sam"])
def test_train_acc_counts_every_training_input_once(write_spec, optimizer):
    # 100 inputs in batches of 16: six full batches and one of 4, no patch, no augmentation;
    # SAM's second pass does not count
    spec = small(dataset={"name": "synthetic",
                          "params": {"n_train": 100, "n_test": 40, "image_size": 8}},
                 arms=[{"name": "a", "optimizer": {"name": optimizer, "lr": 0.05}}],
                 training={"epochs": 2, "batch_size": 16},
                 evaluation={"metrics": ["train_acc"], "batch_size": 40})
    del spec["patch"]
    run = trial_run(write_spec, spec)
    run.model = Decided(run.data.num_classes)
    run.optimizer = run.optim.build(run.model.parameters(), 0.05)
    run.norms = []
    x, y = run.normalize(run.data.x_train), run.data.y_train
    expected = int((Decided.predicted(x) == y).sum())
    assert 5 <= expected <= 50  # neither none nor all: the count is informative
    for _ in range(2):
        run.train_epoch()
        assert run.evaluate() == {"train_acc": expected / 100}


def test_train_acc_is_against_the_patched_labels_and_augmented_inputs(write_spec):
    """A patch that relabels every image to class 3, and an augmentation that makes every
    first channel positive: all predictions are right."""
    class Positive(Augmentation):
        """Shifts channel 0 up."""
        name = "positive"

        def apply(self, x, gen):
            return torch.cat([x[:, :1].abs() + 1, x[:, 1:]], 1)

    spec = small(arms=[{"name": "a", "optimizer": {"lr": 0.05}}],
                 training={"epochs": 1, "batch_size": 16},
                 evaluation={"metrics": ["train_acc"], "batch_size": 40})
    run = trial_run(write_spec, spec)
    run.model = Decided(run.data.num_classes)
    run.optimizer = run.optim.build(run.model.parameters(), 0.05)
    run.augs = [Positive()]
    run.patch.apply = lambda x, y, idx, split, gen: (x, torch.full_like(y, 3))
    run.train_epoch()
    assert run.evaluate() == {"train_acc": 1.0}


class EpochSeen(Metric):
    """The epoch the context says was just trained, over 10."""
    name = "epoch_seen"

    def compute(self, ctx):
        return None if ctx.epoch is None else ctx.epoch / 10


def test_a_metric_gets_the_epoch_just_trained_from_its_context_also_after_a_resume(write_spec):
    spec = small(arms=[{"name": "a", "optimizer": {"lr": 0.05}}],
                 training={"epochs": 3, "batch_size": 32},
                 evaluation={"metrics": ["clean_acc"], "batch_size": 40})
    run = trial_run(write_spec, spec)
    run.metrics, run.metric_keys = [EpochSeen()], ["epoch_seen"]
    seen = []
    for _ in range(2):
        run.train_epoch()
        seen.append(run.evaluate()["epoch_seen"])
    resumed = trial_run(write_spec, spec)
    resumed.restore(run.snapshot(0.0, None))
    resumed.metrics, resumed.metric_keys = [EpochSeen()], ["epoch_seen"]
    resumed.train_epoch()
    seen.append(resumed.evaluate()["epoch_seen"])
    assert seen == [0.1, 0.2, 0.3]
