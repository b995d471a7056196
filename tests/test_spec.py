from __future__ import annotations

from pathlib import Path

import pytest

from patchbench.errors import PatchbenchError
from patchbench.spec import apply_override, load_spec, spec_hash

from .conftest import REPO, tiny_spec


@pytest.mark.parametrize("path", sorted((REPO / "benchmarks").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_shipped_benchmark_validates(path, run_cli, monkeypatch):
    if path.name.startswith("backdoor_"):
        pytest.importorskip("patchbench_backdoors", reason="needs plugins/patchbench-backdoors")
        monkeypatch.delenv("PATCHBENCH_DISABLE_PLUGINS")
    if path.name.startswith(("availability_", "poison_")):
        pytest.importorskip("patchbench_availability",
                            reason="needs plugins/patchbench-availability")
        monkeypatch.delenv("PATCHBENCH_DISABLE_PLUGINS")
    code, out, err = run_cli("validate", path)
    assert code == 0, err
    assert out.startswith(f"{path}: ok")


def one_error(run_cli, path: Path, *extra: str) -> str:
    code, out, err = run_cli("validate", path, *extra)
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_malformed_yaml(write_spec, run_cli):
    path = write_spec("name: x\narms: [\n  - {name: a\n")
    line = one_error(run_cli, path)
    assert line.startswith(f"patchbench: error: {path}: invalid YAML: line ")


def test_spec_must_be_a_mapping(write_spec, run_cli):
    path = write_spec("- just\n- a list\n")
    assert one_error(run_cli, path).endswith("the spec must be a YAML mapping (key: value)")


def test_missing_file(run_cli, tmp_path):
    line = one_error(run_cli, tmp_path / "nope.yaml")
    assert line == f"patchbench: error: {tmp_path / 'nope.yaml'}: no such file"


def test_unknown_key_names_path_and_allowed_keys(write_spec, run_cli):
    spec = tiny_spec()
    spec["training"]["epoch"] = 3
    line = one_error(run_cli, write_spec(spec))
    assert line.endswith("training.epoch: unknown key; allowed: epochs, batch_size, precision, "
                         "channels_last, device, threads, deterministic")


def test_unknown_component_name(write_spec, run_cli):
    spec = tiny_spec()
    spec["arms"][1]["schedule"] = "cosin"
    path = write_spec(spec)
    assert one_error(run_cli, path) == (
        f"patchbench: error: {path}: arms[1].schedule.name: unknown schedule 'cosin'; "
        "did you mean 'cosine'? available: constant, cosine, multistep, step")


def test_bad_param_value_names_yaml_path(write_spec, run_cli):
    spec = tiny_spec()
    spec["arms"][0]["schedule"]["params"]["milestones"] = [5, 2]
    line = one_error(run_cli, write_spec(spec))
    assert line.endswith("arms[0].schedule.params.milestones: milestones must be strictly "
                         "increasing (got [5, 2])")


def test_unknown_param_lists_allowed_params(write_spec, run_cli):
    spec = tiny_spec()
    spec["patch"]["params"]["sise"] = 5
    line = one_error(run_cli, write_spec(spec))
    assert "patch.params.sise: unknown key; allowed: size, location, z_scale, sep" in line


def test_bad_types_and_ranges(write_spec, run_cli):
    spec = tiny_spec()
    spec["training"]["epochs"] = 0
    line = one_error(run_cli, write_spec(spec))
    assert line.endswith("training.epochs: Input should be greater than 0 (got 0)")
    spec = tiny_spec()
    spec["architectures"][0]["params"]["depth"] = 12
    line = one_error(run_cli, write_spec(spec))
    assert "architectures[0].params.depth: depth must be 6n+4" in line


def test_missing_required_field(write_spec, run_cli):
    spec = tiny_spec()
    del spec["training"]
    assert one_error(run_cli, write_spec(spec)).endswith("training: required field is missing")


def test_duplicate_arm_names(write_spec, run_cli):
    spec = tiny_spec()
    spec["arms"][1]["name"] = "large_lr"
    assert "arm names must be unique; repeated: large_lr" in one_error(run_cli, write_spec(spec))


def test_set_overrides(write_spec):
    path = write_spec(tiny_spec())
    spec = load_spec(path, ["training.epochs=5", "arms[1].optimizer.lr=0.01",
                            "arms.large_lr.schedule.params.milestones=[3]",
                            "seeds=[1, 2]", "arms.small_lr.schedule=cosine"])
    assert spec.training.epochs == 5
    assert spec.arms[1].optimizer.lr == 0.01
    assert spec.arms[0].schedule.params["milestones"] == [3]
    assert spec.arms[1].schedule.name == "cosine"
    assert spec.arms[1].schedule.params == {"warmup_epochs": 0.0, "final_factor": 0.0}
    assert spec.seeds == [1, 2]


def test_set_errors(write_spec, run_cli):
    path = write_spec(tiny_spec())
    assert one_error(run_cli, path, "--set", "arms[7].optimizer.lr=1").endswith(
        "--set arms[7].optimizer.lr: index 7 out of range at arms[7] (length 2)")
    assert one_error(run_cli, path, "--set", "arms.nope.optimizer.lr=1").endswith(
        "--set arms.nope.optimizer.lr: no item named 'nope' at arms.nope")
    assert one_error(run_cli, path, "--set", "training.epochs").endswith(
        "--set training.epochs: expected KEY=VALUE")
    assert one_error(run_cli, path, "--set", "training.epochs=many").endswith(
        "training.epochs: Input should be a valid integer, unable to parse string as an "
        "integer (got 'many')")


def test_apply_override_creates_missing_mapping():
    data = {"training": {"epochs": 1}}
    apply_override(data, "training.device=cpu")
    apply_override(data, "output.dir=somewhere")
    assert data == {"training": {"epochs": 1, "device": "cpu"}, "output": {"dir": "somewhere"}}


def test_hash_ignores_output_dir_but_not_science(write_spec):
    path = write_spec(tiny_spec())
    base = spec_hash(load_spec(path))
    assert spec_hash(load_spec(path, ["output.dir=elsewhere"])) == base
    assert spec_hash(load_spec(path, ["training.epochs=3"])) != base


def test_component_defaults_are_filled_in(write_spec):
    spec = load_spec(write_spec(tiny_spec()))
    assert spec.patch.params["z_scale"] == 1.25 and spec.patch.params["sep"] == 0.3
    assert spec.arms[1].regularizers[0].params["std"] == 0.4


def test_load_spec_errors_are_patchbench_errors(write_spec):
    with pytest.raises(PatchbenchError):
        load_spec(write_spec("name: [unclosed\n"))


def test_same_architecture_twice(write_spec, run_cli):
    spec = tiny_spec()
    spec["architectures"].append({"name": "wrn", "params": {"depth": 10, "width": 1}})
    assert one_error(run_cli, write_spec(spec)).endswith(
        "architectures[1]: the same model as architectures[0] (wrn-10-1)")


def test_variant_components_need_a_variant(write_spec, run_cli):
    spec = tiny_spec()
    spec["architectures"][0] = "timm"
    assert one_error(run_cli, write_spec(spec)).endswith(
        "architectures[0].name: architecture 'timm' needs a variant: timm:<name>")


def test_cuda_requested_without_cuda(write_spec, run_cli, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    path = write_spec(tiny_spec())
    code, _, err = run_cli("run", path, "--set", "training.device=cuda", "--out", tmp_path / "o")
    assert code == 2 and err == (f"patchbench: error: {path}: training.device: 'cuda' requested "
                                 "but CUDA is not available; allowed here: auto, cpu\n")


def test_deep_or_huge_yaml_is_one_line(write_spec, run_cli):
    deep = write_spec("name: " + "[" * 5000 + "]" * 5000 + "\n", "deep.yaml")
    assert one_error(run_cli, deep) == (f"patchbench: error: {deep}: invalid YAML: line 1, "
                                        "column 38: nested deeper than 32 levels")
    deep_map = write_spec("".join("  " * i + f"k{i}:\n" for i in range(500)), "map.yaml")
    assert "nested deeper than 32 levels" in one_error(run_cli, deep_map)
    huge = write_spec("description: " + "x" * (1 << 20) + "\n", "huge.yaml")
    assert one_error(run_cli, huge).endswith("characters; at most 1,048,576 are allowed")
    path = write_spec(tiny_spec())
    assert one_error(run_cli, path, "--set", "seeds=" + "[" * 100 + "]" * 100).endswith(
        "--set seeds: nested deeper than 32 levels")


@pytest.mark.parametrize("field", [
    "patch.params.sep", "arms[0].optimizer.lr", "arms[1].optimizer.weight_decay",
    "arms[1].regularizers[0].params.std", "arms[1].regularizers[0].params.factor"])
@pytest.mark.parametrize("value", ["1e300", ".inf", ".nan"])
def test_floats_must_be_finite_and_fit_float32(field, value, write_spec, run_cli):
    path = write_spec(tiny_spec())
    line = one_error(run_cli, path, "--set", f"{field}={value}")
    assert line.startswith(f"patchbench: error: {path}: {field}: ")
    assert "finite" in line


def test_version_must_be_at_least_1(write_spec, run_cli):
    for bad in (-1, 0, "abc"):
        line = one_error(run_cli, write_spec(tiny_spec(version=bad)))
        assert line.endswith(f"version: must be a number >= 1 (1, 2, ... or 1.1) (got {bad!r})")
    assert run_cli("validate", write_spec(tiny_spec(version="1.1")))[0] == 0


def test_out_naming_a_file_is_one_line(write_spec, run_cli, tmp_path):
    target = tmp_path / "afile"
    target.write_text("not a directory")
    code, _, err = run_cli("run", write_spec(tiny_spec()), "--out", target)
    assert code == 2 and err == (f"patchbench: error: --out: {target} is a file; allowed: a "
                                 "directory (new or holding results)\n")


def test_a_metric_twice_needs_other_params_and_learned_metric_must_be_listed(write_spec,
                                                                            run_cli):
    spec = tiny_spec()
    spec["evaluation"]["metrics"] = ["clean_acc", "patch_only_acc",
                                     {"name": "patch_only_acc", "params": {"n": 37}}]
    spec["evaluation"]["learned_metric"] = "patch_only_acc(n=37)"
    loaded = load_spec(write_spec(spec))
    assert loaded.evaluation.metric_keys() == ["clean_acc", "patch_only_acc(n=1000)",
                                               "patch_only_acc(n=37)"]
    spec["evaluation"]["metrics"][2] = {"name": "patch_only_acc", "params": {"n": 1000}}
    del spec["evaluation"]["learned_metric"]
    assert one_error(run_cli, write_spec(spec)).endswith(
        "evaluation.metrics[2]: the same metric and params as evaluation.metrics[1] "
        "(patch_only_acc(n=1000))")
    spec = tiny_spec()
    spec["evaluation"]["learned_metric"] = "attack_success_rate"
    assert one_error(run_cli, write_spec(spec)).endswith(
        "evaluation.learned_metric: 'attack_success_rate' is not among the metrics; allowed: "
        "clean_acc, mixed_acc, patch_only_acc, patch_follow_rate, conflict_clean_acc")


def test_the_default_learned_metric_keeps_existing_spec_hashes():
    """Stores written before learned_metric (and execution, reduced_spec) existed still skip
    their completed trials: smoke.yaml as it was in bf16 had this hash."""
    spec = load_spec(REPO / "benchmarks" / "smoke.yaml", ["training.precision=bf16"])
    assert spec_hash(spec) == "c95ec8d662e8e1f1"
