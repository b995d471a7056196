"""The components of the authors' plain-CIFAR experiment (PAPER.md, "The second experiment"):
WRN dropout, the activation-noise decay modes, cifar100, the named LR schedules."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
import yaml

from patchbench.boundary import load_dataset
from patchbench.builtin.architectures import WRN, BasicBlock, WideResNet
from patchbench.builtin.regularizers import ActNoise, Dropout
from patchbench.builtin.schedules import AUTHORS_SCHEDULES
from patchbench.errors import PatchbenchError
from patchbench.plugins import get_registry
from patchbench.spec import load_spec, spec_hash

from .conftest import REPO, tiny_spec


# --- WRN dropout -------------------------------------------------------------------------

def conv2_inputs(model: torch.nn.Module, x: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
    """(relu2 output, conv2 input) of every block for one forward."""
    seen: list[tuple[torch.Tensor, ...]] = []
    for block in (m for m in model.modules() if isinstance(m, BasicBlock)):
        pair: list[torch.Tensor] = []
        block.relu2.register_forward_hook(lambda m, a, out, pair=pair: pair.append(out.clone()))
        block.conv2.register_forward_pre_hook(lambda m, a, pair=pair: pair.append(a[0].clone()))
        seen.append(pair)  # type: ignore[arg-type]
    model(x)
    return [tuple(p) for p in seen]


def test_wrn_dropout_sits_between_the_two_convolutions_while_training():
    torch.manual_seed(0)
    model = WRN(WRN.Params(depth=10, width=2, dropout=0.4)).build(10, (3, 16, 16))
    x = torch.randn(16, 3, 16, 16)
    model.train()
    pairs = conv2_inputs(model, x)
    assert len(pairs) == 3  # one per block of WRN-10
    for relu_out, conv_in in pairs:
        live = relu_out > 0
        ratio = conv_in[live] / relu_out[live]
        dropped = ratio == 0
        # Inverted dropout: each activation is zeroed or scaled by 1 / (1 - 0.4).
        assert torch.allclose(ratio[~dropped], torch.full_like(ratio[~dropped], 1 / 0.6))
        assert abs(float(dropped.float().mean()) - 0.4) < 0.03
    model.eval()
    for relu_out, conv_in in conv2_inputs(model, x):
        assert torch.equal(relu_out, conv_in)
    assert torch.equal(model(x), model(x))


def test_wrn_without_dropout_is_unchanged_and_draws_nothing():
    torch.manual_seed(0)
    model = WRN(WRN.Params(depth=10, width=1)).build(10, (3, 32, 32))
    digest = hashlib.sha256(b"".join(v.numpy().tobytes() for v in model.state_dict().values()))
    # The state at seed 0 as built before dropout existed (same draws, same order).
    assert digest.hexdigest()[:16] == "32d4196bf69dc0ff"
    model.train()
    x = torch.randn(4, 3, 32, 32)
    state = torch.get_rng_state()
    model(x)
    assert torch.equal(torch.get_rng_state(), state)  # rate 0: no dropout draw
    assert WRN(WRN.Params(depth=16, width=10)).label() == "wrn-16-10"
    assert WRN(WRN.Params(depth=16, width=10, dropout=0.4)).label() == "wrn-16-10-drop0.4"


def test_dropout_regularizer_sets_the_rate_of_every_block():
    torch.manual_seed(0)
    model = WideResNet(10, 1, 10)
    Dropout(Dropout.Params(rate=0.5)).attach(model)
    model.train()
    for relu_out, conv_in in conv2_inputs(model, torch.randn(16, 3, 32, 32)):
        live = relu_out > 0
        assert abs(float((conv_in[live] == 0).float().mean()) - 0.5) < 0.03
    with pytest.raises(PatchbenchError, match="the wrn already has dropout from its "
                                              "params.dropout; give the rate in one place"):
        Dropout().attach(WideResNet(10, 1, 10, dropout=0.3))
    with pytest.raises(PatchbenchError, match="the model has no wrn blocks"):
        Dropout().attach(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU()))


# --- activation noise decay modes ----------------------------------------------------------

# The authors' train_util.adjust_act_noise, worked out by hand for their default std 0.01.
@pytest.mark.parametrize("params, levels", [
    ({"decay": "cont"}, {1: 0.01, 2: 0.00995, 3: 0.0099002500, 101: 0.0060577044,
                         200: 0.0036880183}),
    ({"decay": "cont", "rate": 0.5}, {1: 0.01, 2: 0.005, 4: 0.00125}),
    ({"decay": "step", "rate": 0.5}, {1: 0.01, 59: 0.01, 60: 0.005, 119: 0.005, 120: 0.0025,
                                      149: 0.0025, 150: 0.00125, 200: 0.00125}),
    ({"decay": "step"}, {59: 0.01, 60: 0.00995, 120: 0.0099002500, 150: 0.0098507488}),
    ({"decay": "step_early", "rate": 0.5}, {1: 0.01, 29: 0.01, 30: 0.005, 200: 0.005}),
    ({"decay": "none"}, {1: 0.01, 60: 0.01, 200: 0.01}),
])
def test_act_noise_decay_modes_follow_the_authors_formulas(params, levels):
    noise = ActNoise(ActNoise.Params(std=0.01, **params))
    for epoch, want in levels.items():
        noise.set_epoch(epoch)
        assert noise.level == pytest.approx(want, rel=1e-7, abs=0), epoch


def test_act_noise_default_is_todays_one_step_anneal():
    noise = ActNoise()
    got = {}
    for epoch in (1, 29, 30, 60):
        noise.set_epoch(epoch)
        got[epoch] = noise.level
    assert got == {1: 0.4, 29: 0.4, 30: 0.4 * 1e-5, 60: 0.4 * 1e-5}
    assert ActNoise().anneal_epochs(60) == [30]


@pytest.mark.parametrize("decay, epochs, anneals", [
    ("step", 200, [60, 120, 150]), ("step", 100, [60]), ("step_early", 200, [30]),
    ("cont", 200, []), ("none", 200, []),
])
def test_act_noise_reports_its_step_epochs(decay, epochs, anneals):
    assert ActNoise(ActNoise.Params(decay=decay)).anneal_epochs(epochs) == anneals


def noise_spec(params: dict) -> dict:
    spec = tiny_spec()
    spec["arms"][1]["regularizers"] = [{"name": "act_noise", "params": params}]
    return spec


@pytest.mark.parametrize("params, message", [
    ({"decay": "step", "anneal_epoch": 60},
     ": arms[1].regularizers[0].params.anneal_epoch: only for decay anneal; decay step is set "
     "by rate (got 60)\n"),
    ({"decay": "cont", "factor": 0.1},
     ": arms[1].regularizers[0].params.factor: only for decay anneal; decay cont is set by "
     "rate (got 0.1)\n"),
    ({"rate": 0.9},
     ": arms[1].regularizers[0].params.rate: applies to decay step, step_early and cont; decay "
     "anneal (the default) uses anneal_epoch and factor (got 0.9)\n"),
    ({"decay": "linear"}, "arms[1].regularizers[0].params.decay: Input should be 'anneal', "
                          "'none', 'step', 'step_early' or 'cont'"),
])
def test_act_noise_conflicting_params_are_one_line_errors(write_spec, run_cli, params, message):
    code, _, err = run_cli("validate", write_spec(noise_spec(params)))
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1
    assert message in err


def test_act_noise_new_params_keep_todays_hashes_and_drop_what_cannot_matter(write_spec):
    today = spec_hash(load_spec(write_spec(noise_spec({"anneal_epoch": 2}))))
    assert spec_hash(load_spec(write_spec(noise_spec({"anneal_epoch": 2, "decay": "anneal"})))) \
        == today
    step = spec_hash(load_spec(write_spec(noise_spec({"decay": "step"}))))
    assert step != today
    assert spec_hash(load_spec(write_spec(noise_spec({"decay": "step", "rate": 0.995})))) \
        == step
    assert spec_hash(load_spec(write_spec(noise_spec({"decay": "none", "rate": 0.5})))) == \
        spec_hash(load_spec(write_spec(noise_spec({"decay": "none"}))))
    resolved = load_spec(write_spec(noise_spec({"decay": "step"}))).arms[1].regularizers[0]
    assert resolved.params == {"std": 0.4, "shared": True, "decay": "step", "rate": 0.995}


# --- cifar100 --------------------------------------------------------------------------------

def write_cifar100(folder, n_train: int = 200, n_test: int = 100):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
              "y_train": np.arange(n_train, dtype=np.int64) % 100,
              "x_test": rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8),
              "y_test": (np.arange(n_test, dtype=np.int64) * 7) % 100}
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / "cifar100.npz", **arrays)
    return arrays


def test_cifar100_loads_the_npz_with_100_classes(tmp_path):
    arrays = write_cifar100(tmp_path / "data")
    registry = get_registry()
    data = load_dataset(registry.build("datasets", "cifar100",
                                       {"data_dir": str(tmp_path / "data")}))
    assert data.x_train.shape == (200, 3, 32, 32) and data.x_train.dtype == torch.uint8
    assert data.x_test.shape == (100, 3, 32, 32) and data.y_test.dtype == torch.int64
    assert data.num_classes == 100 and data.image_shape == (3, 32, 32)
    assert data.classes[:3] == ["apple", "aquarium_fish", "baby"] and data.classes[-1] == "worm"
    assert torch.equal(data.x_train[5].permute(1, 2, 0), torch.from_numpy(arrays["x_train"][5]))
    assert torch.equal(data.y_test, torch.from_numpy(arrays["y_test"]))
    assert data.mean == pytest.approx((0.4914, 0.4824, 0.4467), abs=1e-4)  # CIFAR-10's, as theirs
    small = load_dataset(registry.build("datasets", "cifar100", {
        "data_dir": str(tmp_path / "data"), "train_size": 50, "test_size": 20}))
    assert small.x_train.shape == (50, 3, 32, 32) and small.y_test.shape == (20,)
    again = load_dataset(registry.build("datasets", "cifar100", {
        "data_dir": str(tmp_path / "data"), "train_size": 50, "test_size": 20}))
    assert torch.equal(small.y_train, again.y_train)


def test_cifar100_missing_is_one_line(write_spec, run_cli, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    spec = tiny_spec(dataset={"name": "cifar100",
                              "params": {"data_dir": str(empty), "download": False}})
    code, _, err = run_cli("run", write_spec(spec), "--out", tmp_path / "o")
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1
    assert f"CIFAR-100 not found: {empty / 'cifar100.npz'} does not exist; put cifar100.npz " \
           "there, or set PATCHBENCH_DATA_DIR or dataset.params.data_dir" in err


def test_cifar100_download_fallback_uses_torchvisions_cifar100(tmp_path, monkeypatch):
    import torchvision.datasets

    calls = []

    class Offline:
        def __init__(self, root, train, download):
            calls.append((root, train))
            raise RuntimeError("no network")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", Offline)
    dataset = get_registry().build("datasets", "cifar100", {"data_dir": str(tmp_path / "d")})
    with pytest.raises(PatchbenchError) as exc:
        dataset.load()
    assert str(exc.value) == (
        f"CIFAR-100 not found at {tmp_path / 'd' / 'cifar100.npz'} and the download failed "
        "(RuntimeError: no network); put cifar100.npz there, or set PATCHBENCH_DATA_DIR or "
        "dataset.params.data_dir to the folder that holds it")
    assert calls == [(str(tmp_path / "d"), True)]

    class Fetched:
        def __init__(self, root, train, download):
            n = 30 if train else 10
            self.data = np.zeros((n, 32, 32, 3), np.uint8)
            self.targets = list(range(70, 70 + n))

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", Fetched)
    data = load_dataset(dataset)
    assert (tmp_path / "d" / "cifar100.npz").exists()
    assert data.x_train.shape == (30, 3, 32, 32) and int(data.y_train.max()) == 99


def test_cifar100_trains(write_spec, run_cli, tmp_path):
    write_cifar100(tmp_path / "data", n_train=128, n_test=100)
    spec = tiny_spec(dataset={"name": "cifar100", "params": {"data_dir": str(tmp_path / "data")}},
                     arms=[{"name": "a", "optimizer": {"lr": 0.05}}],
                     training={"epochs": 1, "batch_size": 64, "threads": 1},
                     evaluation={"metrics": ["clean_acc"]})
    del spec["patch"]
    code, _, err = run_cli("run", write_spec(spec), "--out", tmp_path / "o")
    assert code == 0, err


# --- the authors' named LR schedules -----------------------------------------------------------

# train_util.py's lr_sched_* for an initial LR of 0.1, worked out by hand (epochs from 1).
NAMED_LRS = {
    "default": {1: 0.1, 59: 0.1, 60: 0.02, 119: 0.02, 120: 0.004, 149: 0.004, 150: 0.0008,
                200: 0.0008},
    "fixed": {1: 0.1, 200: 0.1},
    "decay_once": {1: 0.1, 149: 0.1, 150: 0.02, 200: 0.02},
    "decay_early": {1: 0.1, 29: 0.1, 30: 0.004, 200: 0.004},
}


@pytest.mark.parametrize("name", sorted(NAMED_LRS))
def test_the_authors_named_schedules_as_specs_write_them(name):
    kind, params = AUTHORS_SCHEDULES[name]
    schedule = get_registry().build("schedules", kind, params)
    steps = 391  # 50,000 images, batch 128
    for epoch, want in NAMED_LRS[name].items():
        first, last = (epoch - 1) * steps, epoch * steps - 1
        assert schedule.lr(first, steps, 200 * steps, 0.1) == pytest.approx(want, rel=1e-12)
        assert schedule.lr(last, steps, 200 * steps, 0.1) == pytest.approx(want, rel=1e-12)


def test_cifar_lr_yaml_carries_the_authors_protocol():
    # Read as YAML, not validated: its augmentations need the augmentation kind (issue 13).
    spec = yaml.safe_load((REPO / "benchmarks" / "cifar_lr.yaml").read_text())
    assert spec["dataset"] == "cifar10" and "patch" not in spec
    assert spec["architectures"] == [{"name": "wrn", "params": {"depth": 16, "width": 10}}]
    assert spec["training"]["epochs"] == 200 and spec["training"]["batch_size"] == 128
    assert spec["seeds"] == [0, 1, 2]
    assert spec["evaluation"]["metrics"] == ["clean_acc", "train_acc"]
    kind, params = AUTHORS_SCHEDULES["default"]
    arms = {a["name"]: a for a in spec["arms"]}
    for arm in arms.values():
        assert arm["schedule"] == {"name": kind, "params": params}
        assert arm["optimizer"] == {"lr": 0.1 if arm["name"] == "large_lr" else 0.01,
                                    "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}
        assert arm["augmentations"] == [{"name": "crop", "params": {"padding": 4,
                                                                    "fill": "reflect"}}, "flip"]
    noise = {a["regularizers"][0]["params"]["decay"]: a["regularizers"][0]["params"]
             for a in arms.values() if a.get("regularizers", [{}])[0].get("name") == "act_noise"}
    assert sorted(noise) == ["cont", "none", "step", "step_early"]
    assert all(p["std"] == 0.01 and p.get("rate", 0.995) == 0.995 for p in noise.values())
    assert arms["small_lr_dropout"]["regularizers"] == [{"name": "dropout",
                                                         "params": {"rate": 0.4}}]
