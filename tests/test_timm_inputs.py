"""timm models with their creation arguments, and the preflight that tries each architecture
on the spec's inputs before any trial trains."""

from __future__ import annotations

import pytest
import torch

from patchbench.builtin.architectures import Timm
from patchbench.errors import PatchbenchError
from patchbench.train.preflight import check_inputs
from patchbench.plugins import get_registry
from patchbench.spec import load_spec, spec_hash

from .conftest import tiny_spec
from .test_cli import stored

VIT = "timm:vit_tiny_patch16_224"
SMALL_VIT = {"img_size": 32, "patch_size": 4, "kwargs": {"depth": 1}}


CNN = "timm:mobilenetv3_small_050"


def timm_spec(*archs: dict) -> dict:
    spec = tiny_spec(dataset={"name": "synthetic", "params": {"n_train": 64, "n_test": 32}},
                     architectures=list(archs),
                     arms=[{"name": "a", "optimizer": {"lr": 0.01}}],
                     training={"epochs": 1, "batch_size": 32, "threads": 1},
                     evaluation={"metrics": ["clean_acc"], "batch_size": 32})
    del spec["patch"]
    return spec


def test_a_cnn_and_a_vit_from_timm_train_in_one_spec(write_spec, run_cli, tmp_path):
    spec = timm_spec({"name": CNN}, {"name": VIT, "params": SMALL_VIT})
    code, _, err = run_cli("run", write_spec(spec), "--out", tmp_path / "o")
    assert code == 0, err
    records = stored(tmp_path / "o")
    vit_key = "timm:vit_tiny_patch16_224(depth=1,img_size=32,patch_size=4)/a/none/seed0"
    assert sorted(records) == sorted([f"{CNN}/a/none/seed0", vit_key])
    assert all(r["status"] == "completed" for r in records.values())


def test_a_vit_built_for_224_is_refused_before_training(write_spec, run_cli, tmp_path):
    spec = timm_spec({"name": CNN}, {"name": VIT, "params": {"kwargs": {"depth": 1}}})
    path = write_spec(spec, "bench.yaml")
    want = (f"patchbench: error: {path}: architectures[1] (timm:vit_tiny_patch16_224(depth=1)): "
            "cannot take 3x32x32 inputs: Input height (32) doesn't match model (224); set "
            "architectures[1].params.img_size: 32\n")
    code, _, err = run_cli("run", path, "--out", tmp_path / "o")
    assert (code, err) == (2, want)
    assert stored(tmp_path / "o") == {}
    code, out, err = run_cli("validate", path)  # synthetic data declares its shape
    assert (code, out, err) == (2, "", want)


def test_preflight_leaves_the_global_rng_as_it_was():
    spec = load_spec_dict(timm_spec({"name": "wrn", "params": {"depth": 10, "width": 1}},
                                    {"name": VIT, "params": SMALL_VIT}))
    torch.manual_seed(123)
    before = torch.get_rng_state()
    check_inputs(spec, (3, 32, 32), 10, get_registry(), "s.yaml")
    assert torch.equal(torch.get_rng_state(), before)


def load_spec_dict(data: dict):
    import tempfile
    from pathlib import Path

    import yaml

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.yaml"
        path.write_text(yaml.safe_dump(data))
        return load_spec(path)


def test_creation_arguments_are_passed_only_when_set():
    assert Timm.Params().create_args() == {}
    assert Timm(Timm.Params(), variant="resnet18").label() == "timm:resnet18"
    vit = Timm(Timm.Params(img_size=32, patch_size=4, drop_path_rate=0.1,
                           kwargs={"depth": 1}), variant="vit_tiny_patch16_224")
    assert vit.params.create_args() == {"img_size": 32, "patch_size": 4,
                                        "drop_path_rate": 0.1, "depth": 1}
    model = vit.build(10, (3, 32, 32))
    assert model.patch_embed.img_size == (32, 32) and model.patch_embed.patch_size == (4, 4)
    assert len(model.blocks) == 1
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_timm_params_added_later_keep_todays_hashes(write_spec):
    base = timm_spec({"name": "timm:test_resnet"})
    today = spec_hash(load_spec(write_spec(base)))
    base["architectures"] = [{"name": "timm:test_resnet",
                              "params": {"img_size": None, "kwargs": {}}}]
    assert spec_hash(load_spec(write_spec(base))) == today
    spec = load_spec(write_spec(base))
    assert spec.architectures[0].params == {"adapt_stem": True, "drop_rate": 0.0}


def test_bad_creation_arguments_are_one_line_errors(write_spec, run_cli):
    spec = timm_spec({"name": "timm:test_resnet", "params": {"kwargs": {"num_classes": 3}}})
    code, _, err = run_cli("validate", write_spec(spec))
    assert code == 2 and "architectures[0].params.kwargs: num_classes: not allowed " \
        "in kwargs (set by patchbench or a param of its own)" in err
    spec = timm_spec({"name": "timm:test_resnet", "params": {"img_size": 32}})
    code, _, err = run_cli("validate", write_spec(spec))
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1
    assert ": architectures: timm:test_resnet does not take img_size (" in err
    assert err.endswith("got an unexpected keyword argument 'img_size'); remove it from its "
                        "params\n")


def test_a_model_bug_is_left_to_the_trial():
    class Buggy(Timm):
        def build(self, num_classes, image_shape):
            class Net(torch.nn.Module):
                def forward(self, x):
                    return undefined_name  # noqa: F821

            return Net()

    from patchbench.train.preflight import _forward_problem

    assert _forward_problem(Buggy(Timm.Params(), "test_resnet"), 10, (3, 32, 32)) is None
    with pytest.raises(PatchbenchError):
        Timm.check_variant("no_such_model")
