from __future__ import annotations

import re

import pytest

from patchbench.train.trainer import summarize

from .conftest import SHARED_DATA, tiny_spec

METRICS = ["clean_acc", "mixed_acc", "patch_only_acc", "patch_follow_rate",
           "conflict_clean_acc"]


def stored(out) -> dict[str, dict]:
    from patchbench.store import Store

    store = Store.in_dir(out)
    try:
        return {r["key"]: r for r in store.records()}
    finally:
        store.close()


def test_run_end_to_end_on_synthetic_data(write_spec, run_cli, tmp_path):
    out = tmp_path / "out"
    code, stdout, stderr = run_cli("run", write_spec(tiny_spec()), "--out", out)
    assert code == 0, stderr
    records = stored(out)
    assert sorted(records) == ["wrn-10-1/large_lr/lwm/seed0", "wrn-10-1/large_lr/none/seed0",
                               "wrn-10-1/small_lr/lwm/seed0"]
    record = records["wrn-10-1/large_lr/lwm/seed0"]
    assert record["status"] == "completed" and len(record["spec_hash"]) == 16
    assert [h["epoch"] for h in record["history"]] == [1, 2]
    assert [h["lr"] for h in record["history"]] == pytest.approx([0.1, 0.004])
    for row in record["history"]:
        assert all(0.0 <= row[m] <= 1.0 for m in METRICS)
    assert set(record["summary"]["anneals"]) == {"2"}
    assert record["spec"]["name"] == "tiny" and record["versions"]["torch"]
    assert record["plugins"]["patchbench.patches"] == {"distribution": "patchbench",
                                            "version": record["versions"]["patchbench"]}
    assert record["started_at"] <= record["finished_at"]
    assert record["train_images_per_s"] > 0 and record["wall_time_s"] > 0
    # each metric's metadata travels with the record, for tables that lack the plugin
    assert record["metrics"]["patch_follow_rate"] == {
        "name": "patch_follow_rate", "higher_is_better": False, "range": [0.0, 1.0],
        "short": "follow"}
    assert record["learned_metric"] == "patch_only_acc"
    control = records["wrn-10-1/large_lr/none/seed0"]
    assert control["history"][-1]["clean_acc"] is not None
    assert all(control["history"][-1][m] is None for m in METRICS[1:])
    # the leaderboard of what just ran, with the patch cost of the arm that has a control
    assert "tiny v1" in stdout and "patch cost" in stdout
    line = next(l for l in stdout.splitlines() if "large_lr" in l and "lwm" in l)
    cost = control["summary"]["final"]["clean_acc"] - record["summary"]["final"]["clean_acc"]
    assert f"{cost:.3f}" in line


def test_runs_are_deterministic_for_a_seed(write_spec, run_cli, tmp_path):
    spec = tiny_spec(arms=[tiny_spec()["arms"][1]])
    path = write_spec(spec)
    histories = []
    for name in ("a", "b"):
        assert run_cli("run", path, "--out", tmp_path / name)[0] == 0
        record = stored(tmp_path / name)["wrn-10-1/small_lr/lwm/seed0"]
        histories.append([{k: v for k, v in h.items() if k != "time_s"}
                          for h in record["history"]])
    assert histories[0] == histories[1]


def test_validate_and_list(write_spec, run_cli):
    code, out, _ = run_cli("validate", write_spec(tiny_spec()))
    assert code == 0 and out.endswith("ok (tiny v1: 3 trials, 2 epochs each)\n")
    code, out, _ = run_cli("list", "metrics")
    assert code == 0
    for m in METRICS:
        assert m in out
    code, _, err = run_cli("list", "schedles")
    assert code == 2 and "did you mean 'schedules'" in err


def test_preview_writes_a_png(write_spec, run_cli, tmp_path):
    out = tmp_path / "preview.png"
    code, stdout, err = run_cli("preview", write_spec(tiny_spec()), "--out", out, "-n", "4")
    assert code == 0, err
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, err = run_cli("preview", write_spec(tiny_spec()), "--out", tmp_path / "x.jpg")
    assert code == 2 and "must be a .png file" in err


def test_missing_cifar_is_one_line(write_spec, run_cli, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    spec = tiny_spec(dataset={"name": "cifar10",
                              "params": {"data_dir": str(empty), "download": False}})
    code, _, err = run_cli("run", write_spec(spec), "--out", tmp_path / "o")
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1
    assert f"CIFAR-10 not found: {empty / 'cifar10.npz'} does not exist; put cifar10.npz there" \
        in err


def test_summary_learned_epoch_and_anneals():
    history = [{"epoch": e, "patch_only_acc": p, "clean_acc": c}
               for e, p, c in [(1, 0.1, 0.3), (2, 0.5, 0.4), (3, 0.92, 0.5), (4, 0.95, 0.6)]]
    s = summarize(history, [3], ["clean_acc", "patch_only_acc"], 0.9)
    assert s["patch_learned_epoch"] == 3
    assert s["final"] == {"clean_acc": 0.6, "patch_only_acc": 0.95}
    assert s["anneals"]["3"] == {"before": {"clean_acc": 0.4, "patch_only_acc": 0.5},
                                 "after": {"clean_acc": 0.5, "patch_only_acc": 0.92}}
    assert summarize(history, [], ["clean_acc"], 0.99)["patch_learned_epoch"] is None


def test_summary_peak_and_its_epoch_for_each_metric_in_its_direction():
    # epoch 2 is not evaluated; follow rate is lower-is-better and ties at epochs 3 and 4
    history = [{"epoch": 1, "clean_acc": 0.30, "patch_follow_rate": 0.6},
               {"epoch": 2, "train_loss": 1.0},
               {"epoch": 3, "clean_acc": 0.70, "patch_follow_rate": 0.2},
               {"epoch": 4, "clean_acc": 0.55, "patch_follow_rate": 0.2},
               {"epoch": 5, "clean_acc": 0.70, "patch_follow_rate": 0.4}]
    s = summarize(history, [4], ["clean_acc", "patch_follow_rate"], 0.9,
                  higher_is_better={"clean_acc": True, "patch_follow_rate": False})
    assert s["peak"] == {"clean_acc": 0.70, "patch_follow_rate": 0.2}
    assert s["peak_epoch"] == {"clean_acc": 3, "patch_follow_rate": 3}  # the first to reach it
    assert s["final"] == {"clean_acc": 0.70, "patch_follow_rate": 0.4}  # the old keys as before
    assert list(s) == ["final", "patch_learned_epoch", "patch_learned_threshold",
                       "learned_metric", "anneals", "peak", "peak_epoch"]
    assert summarize(history, [], ["clean_acc"], 0.9)["peak"] == {"clean_acc": 0.70}
    assert summarize([], [], ["clean_acc"], 0.9)["peak"] == {}


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "cifar10.npz").exists(), reason="no local CIFAR-10 copy")
def test_short_real_cifar_run_records_all_metrics(write_spec, run_cli, tmp_path):
    spec = tiny_spec(dataset={"name": "cifar10", "params": {
        "data_dir": str(SHARED_DATA), "train_size": 512, "test_size": 300}},
        arms=[tiny_spec()["arms"][0]])
    code, _, err = run_cli("run", write_spec(spec), "--out", tmp_path / "o",
                           "--set", "arms.large_lr.control=false")
    assert code == 0, err
    record = stored(tmp_path / "o")["wrn-10-1/large_lr/lwm/seed0"]
    assert len(record["history"]) == 2
    for row in record["history"]:
        assert all(isinstance(row[m], float) for m in METRICS)


def test_ray_executor_without_ray_is_one_line(write_spec, run_cli, tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # as if not installed
    path = write_spec(tiny_spec())
    code, out, err = run_cli("run", path, "--out", tmp_path / "out", "--executor", "ray")
    assert code == 2 and out == ""
    assert err == (f"patchbench: error: {path}: execution.executor: 'ray' needs Ray, which is "
                   "not installed; install the extra: pip install 'patchbench[ray]'\n")
    assert not (tmp_path / "out").exists()


def test_slurm_executor_without_submitit_is_one_line(write_spec, run_cli, tmp_path,
                                                     monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "submitit", None)  # as if not installed
    path = write_spec(tiny_spec())
    code, out, err = run_cli("run", path, "--out", tmp_path / "out", "--executor", "slurm")
    assert code == 2 and out == ""
    assert err == (f"patchbench: error: {path}: execution.executor: 'slurm' needs submitit, "
                   "which is not installed; install the extra: pip install "
                   "'patchbench[slurm]'\n")
    assert not (tmp_path / "out").exists()


def test_slurm_settings_are_validated_before_slurm_is_looked_for(write_spec, run_cli,
                                                                 tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "submitit", None)  # found wanting later
    path = write_spec(tiny_spec())
    for flags, message in [
            (["--cpus-per-trial", "1.5"], "execution.cpus_per_trial: 1.5: Slurm allocates "
             "whole ones; allowed: 1, 2, ..."),
            (["--gpus-per-trial", "0.25"], "execution.gpus_per_trial: 0.25: Slurm allocates "
             "whole ones; allowed: 0, 1, 2, ..."),
            (["--set", "execution.sbatch_options={time: 5}"], "execution.sbatch_options: 'time' "
             "is set by patchbench (execution.time); leave it out"),
            (["--set", "execution.mem=lots"], "execution.mem: String should match pattern")]:
        code, _, err = run_cli("run", path, "--out", tmp_path / "out", "--executor", "slurm",
                               *flags)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert err.startswith(f"patchbench: error: {path}: {message}"), err


def test_execution_settings_are_validated_and_not_part_of_the_science(write_spec, run_cli):
    from patchbench.spec import load_spec, spec_hash

    path = write_spec(tiny_spec())
    code, _, err = run_cli("run", path, "--executor", "ray", "--cpus-per-trial", "0")
    assert code == 2 and err.strip().splitlines() == [
        f"patchbench: error: {path}: execution.cpus_per_trial: Input should be greater than 0 "
        "(got 0)"]
    code, _, err = run_cli("validate", path, "--set", "execution.executor=kubernetes")
    assert code == 2 and "execution.executor: Input should be 'local', 'ray' or 'slurm'" in err
    local = load_spec(path)
    remote = load_spec(path, ["execution.executor=ray", "execution.gpus_per_trial=0.25"])
    assert remote.execution.gpus_per_trial == 0.25
    assert spec_hash(local) == spec_hash(remote)


def seconds(span: str) -> float:
    value, unit = span.split()
    return float(value) * {"s": 1, "min": 60, "h": 3600, "days": 86400}[unit]


def test_run_says_what_the_grid_costs_before_it_trains(write_spec, run_cli, tmp_path,
                                                       monkeypatch):
    import patchbench.train.estimate as estimate

    monkeypatch.setattr(estimate, "LONG_GRID_S", 0.0)  # as if the grid needed days here
    spec = tiny_spec(reduced_spec="benchmarks/cheap.yaml")
    spec["training"]["epochs"] = 1
    code, _, err = run_cli("run", write_spec(spec), "--out", tmp_path / "out")
    assert code == 0
    text = " ".join(err.split())
    # Any unit duration() prints: a loaded machine turns seconds into minutes.
    span = r"([\d.]+ (?:s|min|h|days))"
    found = re.search(rf"estimate on cpu: ([\d.e+-]+) s per step, about {span} per trial, "
                      rf"{span} for the 3 trials", text)
    assert found, text
    assert float(found.group(1)) > 0
    assert seconds(found.group(3)) >= seconds(found.group(2))
    assert ("this grid needs more than a day on cpu: for a look in minutes, run "
            "benchmarks/cheap.yaml; for the full protocol, a GPU") in text
    assert text.index("estimate on cpu") < text.index("epoch 1:")  # before training
    assert len(stored(tmp_path / "out")) == 3  # and training went on: no prompt
    from patchbench.spec import load_spec, spec_hash
    assert spec_hash(load_spec(write_spec(spec))) == \
        spec_hash(load_spec(write_spec({**spec, "reduced_spec": None})))


def test_only_trains_the_matching_trials_of_the_whole_grid(write_spec, run_cli, tmp_path):
    path, out = write_spec(tiny_spec()), tmp_path / "out"
    code, _, err = run_cli("run", path, "--out", out, "--only", "*/none/*")
    assert code == 0 and "1 trials on cpu" in " ".join(err.split())
    assert list(stored(out)) == ["wrn-10-1/large_lr/none/seed0"]
    code, _, err = run_cli("run", path, "--out", out)  # the rest of the same grid
    assert code == 0 and "skipping 1 of 3 trials already completed" in err
    code, _, err = run_cli("run", path, "--out", out, "--only", "*/seed7")
    assert code == 2 and err == (f"patchbench: error: {path}: --only */seed7: no trial key "
                                 "matches; keys look like wrn-10-1/large_lr/lwm/seed0\n")
