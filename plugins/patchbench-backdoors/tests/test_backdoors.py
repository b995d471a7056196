from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

from patchbench.evaluation import EvalContext
from patchbench.plugins import build_registry
from patchbench.testing import check_patch_generator, small_dataset
from patchbench_backdoors.metrics import AttackSuccessRate
from patchbench_backdoors.triggers import SIG, BadNets, Blend, WaNet

CPU = torch.device("cpu")


def poison_all(generator, data):
    """The generator set up on ``data`` and applied to its whole normalized training set."""
    generator.setup(data, CPU)
    x = data.normalizer(CPU)(data.x_train)
    idx = torch.arange(len(data.y_train))
    return generator.apply(x, data.y_train.clone(), idx, "train", torch.Generator())


@pytest.mark.parametrize("cls", [BadNets, Blend, SIG, WaNet])
@pytest.mark.parametrize("params", [{}, {"mode": "all_to_all"}, {"poison_rate": 0.5}])
def test_conformance(cls, params):
    check_patch_generator(cls, params)


def test_clean_label_sig_and_bad_combinations():
    check_patch_generator(SIG, {"clean_label": True, "target": 3, "poison_rate": 0.5})
    data = small_dataset()
    sig = SIG(SIG.Params(clean_label=True, target=3, poison_rate=0.5))
    _, y = poison_all(sig, data)
    assert bool((data.y_train[sig.subsets["train"]] == 3).all())
    assert torch.equal(y, data.y_train)  # clean label: no label changes
    from patchbench.errors import PatchbenchError
    with pytest.raises(PatchbenchError, match="badnets defines no clean-label variant"):
        BadNets(BadNets.Params(clean_label=True)).setup(data, CPU)
    with pytest.raises(ValueError, match="clean_label needs mode all_to_one"):
        SIG.Params(clean_label=True, mode="all_to_all")


def test_poisoned_labels_and_rate():
    data = small_dataset(n_train=2000)
    bad = BadNets(BadNets.Params(poison_rate=0.1, target=7))
    out, y = poison_all(bad, data)
    mask = bad.subsets["train"]
    assert abs(float(mask.float().mean()) - 0.1) < 0.02
    assert bool((y[mask] == 7).all()) and torch.equal(y[~mask], data.y_train[~mask])
    # the checkerboard sits in the bottom-right corner, 1 pixel from the edges, in pixels
    pixels = out[mask] * torch.tensor(data.std).view(1, 3, 1, 1) + \
        torch.tensor(data.mean).view(1, 3, 1, 1)
    assert torch.allclose(pixels[:, :, 28:31, 28:31], bad.square.expand(3, 3, 3), atol=1e-5)
    all_to_all = BadNets(BadNets.Params(mode="all_to_all"))
    all_to_all.setup(data, CPU)
    assert torch.equal(all_to_all.target_for(torch.tensor([0, 9])), torch.tensor([1, 0]))


def test_wanet_noise_mode_keeps_labels():
    data = small_dataset(n_train=2000)
    wanet = WaNet(WaNet.Params(poison_rate=0.1, cross_ratio=2.0))
    out, y = poison_all(wanet, data)
    cross = wanet.cross
    assert not (cross & wanet.subsets["train"]).any()
    assert 0.12 < float(cross.float().mean()) < 0.24  # ~0.2 of the images, minus overlap
    assert torch.equal(y[cross], data.y_train[cross])
    assert not torch.equal(out[cross], data.normalizer(CPU)(data.x_train)[cross])


class Always(nn.Module):
    def __init__(self, k):
        super().__init__()
        self.k = k

    def forward(self, x):
        return nn.functional.one_hot(torch.full((len(x),), self.k), 10).float()


def test_attack_success_rate_excludes_target_class_images():
    data = small_dataset(n_test=500)
    bad = BadNets(BadNets.Params(target=2))
    bad.setup(data, CPU)
    ctx = EvalContext(Always(2), data, bad, CPU, 128, 0, contextlib.nullcontext)
    assert AttackSuccessRate().compute(ctx) == 1.0  # target-class images are not counted
    ctx = EvalContext(Always(3), data, bad, CPU, 128, 0, contextlib.nullcontext)
    assert AttackSuccessRate().compute(ctx) == 0.0
    bad_all = BadNets(BadNets.Params(mode="all_to_all"))
    bad_all.setup(data, CPU)
    ctx = EvalContext(Always(3), data, bad_all, CPU, 128, 0, contextlib.nullcontext)
    expected = float((data.y_test == 2).float().mean())  # (y + 1) % 10 == 3
    assert AttackSuccessRate().compute(ctx) == pytest.approx(expected)


def test_registered_through_the_entry_point():
    registry = build_registry()
    for name in ("badnets", "blend", "sig", "wanet"):
        entry = registry.get("patches", name)
        assert (entry.plugin, entry.distribution) == ("backdoors", "patchbench-backdoors")
    assert registry.get("metrics", "attack_success_rate").version == "0.1.0"


def test_the_core_works_without_this_plugin(monkeypatch, tmp_path):
    from pathlib import Path

    from patchbench import cli

    monkeypatch.setenv("PATCHBENCH_DISABLE_PLUGINS", "backdoors")
    bench = Path(__file__).resolve().parents[3] / "benchmarks"
    assert cli.main(["validate", str(bench / "smoke.yaml")]) == 0
    assert cli.main(["validate", str(bench / "backdoor_lr.yaml")]) == 2


def test_a_short_run_with_each_generator_records_attack_success_rate(tmp_path, monkeypatch):
    import yaml

    from patchbench import cli
    from patchbench.store import Store

    monkeypatch.delenv("PATCHBENCH_DISABLE_PLUGINS", raising=False)
    spec = {
        "name": "bd", "version": 1,
        "dataset": {"name": "synthetic", "params": {"n_train": 256, "n_test": 100}},
        "patch": ["badnets", "blend", "sig", "wanet"],
        "architectures": [{"name": "wrn", "params": {"depth": 10, "width": 1}}],
        "arms": [{"name": "large_lr", "optimizer": {"lr": 0.1}}],
        "training": {"epochs": 2, "batch_size": 64},
        "evaluation": {"metrics": ["clean_acc", "mixed_acc", "attack_success_rate"]},
    }
    path = tmp_path / "bd.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert cli.main(["run", str(path), "--out", str(tmp_path / "out")]) == 0
    records = {r["patch"]: r for r in Store.in_dir(tmp_path / "out").records()}
    assert sorted(records) == ["badnets", "blend", "sig", "wanet"]
    for r in records.values():
        assert r["plugins"]["backdoors"]["distribution"] == "patchbench-backdoors"
        for row in r["history"]:
            assert 0.0 <= row["attack_success_rate"] <= 1.0


def test_triggers_need_images():
    from patchbench.builtin.theory import TwoPattern
    from patchbench.errors import PatchbenchError

    vectors = TwoPattern(TwoPattern.Params(d_p=20, d_q=5, n_train=10, n_test=10)).load()
    with pytest.raises(PatchbenchError, match=r"^patch: badnets needs images .* shape \(25,\)$"):
        BadNets().setup(vectors, CPU)
