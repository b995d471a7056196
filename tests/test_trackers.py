"""Trackers, read back through each tracker's own reader (not patchbench's): TensorBoard's
EventAccumulator, MLflow's client on a local SQLite store, W&B's `wandb leet inspect` of
the offline run's .wandb log. One tiny grid (a patched trial and its control, 2 epochs)
trains once, with all three trackers on, for the module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from patchbench import cli
from patchbench.components import Tracker
from patchbench.plugins import get_registry
from patchbench.results.store import load_records
from patchbench.spec import load_spec, spec_hash

from .conftest import tiny_spec

ENV = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DISABLE_GIT": "true",
       "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"}


def small(**overrides) -> dict:
    """Images (so that there is a preview): a patched trial and its control, 2 epochs."""
    spec = tiny_spec(arms=[{"name": "large_lr", "optimizer": {"lr": 0.1}, "control": True}],
                     evaluation={"metrics": ["clean_acc", "patch_only_acc"], "batch_size": 100})
    spec["dataset"]["params"] = {"n_train": 128, "n_test": 50}
    spec.update(overrides)
    return spec


def vectors(**overrides) -> dict:
    """The cheapest grid: a two-layer MLP on feature vectors, a trial and its control."""
    spec = {"name": "vec", "version": 1,
            "dataset": {"name": "two_pattern",
                        "params": {"d_p": 40, "d_q": 10, "n_train": 64, "n_test": 50}},
            "patch": {"name": "two_pattern_q", "params": {"dims": 10}},
            "architectures": [{"name": "mlp2", "params": {"width": 16}}],
            "arms": [{"name": "a", "optimizer": {"lr": 0.1}, "control": True}],
            "training": {"epochs": 2, "batch_size": 16},
            "evaluation": {"metrics": ["clean_acc", "patch_only_acc"], "batch_size": 50}}
    spec.update(overrides)
    return spec


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """(output dir, records) of the tiny grid trained with every built-in tracker on."""
    pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    pytest.importorskip("tensorboard")
    root = tmp_path_factory.mktemp("tracked")
    out = root / "out"
    path = root / "spec.yaml"
    path.write_text(yaml.safe_dump(small(
        output={"dir": str(out)},
        tracking=["tensorboard", {"name": "wandb", "params": {"mode": "offline"}}])))
    with pytest.MonkeyPatch.context() as mp:
        for k, v in ENV.items():
            mp.setenv(k, v)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        assert cli.main(["run", str(path), "--track", "mlflow"]) == 0
    records = sorted(load_records([out]), key=lambda r: r["key"])
    assert [r["status"] for r in records] == ["completed", "completed"]
    return out, records


def rows(record: dict, field: str) -> list[tuple[int, float]]:
    return [(h["epoch"], h[field]) for h in record["history"] if h.get(field) is not None]


def test_tensorboard_event_files_hold_each_epoch_params_and_preview(grid):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    out, records = grid
    for record in records:
        run = out / "tensorboard" / record["spec_hash"] / record["key"]
        acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
        acc.Reload()
        for tag, field in (("train/loss", "train_loss"), ("train/lr", "lr"),
                           ("eval/clean_acc", "clean_acc")):
            got = [(e.step, e.value) for e in acc.Scalars(tag)]
            assert got == [(s, pytest.approx(v, rel=1e-6)) for s, v in rows(record, field)]
        final = acc.Scalars("final/clean_acc")
        assert [(e.step, e.value) for e in final] == \
            [(2, pytest.approx(record["summary"]["final"]["clean_acc"], rel=1e-6))]
        assert acc.Scalars("train/images_per_s")[0].value == \
            pytest.approx(record["train_images_per_s"], rel=1e-6)
        content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        hparams = plugin_data_pb2.HParamsPluginData.FromString(content) \
            .session_start_info.hparams
        assert hparams["training.batch_size"].number_value == 64
        assert hparams["patch"].string_value == record["patch"]
    preview = EventAccumulator(str(out / "tensorboard" / records[0]["spec_hash"] / "preview"))
    preview.Reload()
    assert preview.Tags()["images"] == ["preview/lwm"]


def test_mlflow_runs_hold_params_metrics_per_step_tags_and_curves(grid):
    from mlflow import MlflowClient

    out, records = grid
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny v1")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == [r["key"] for r in records]
    for record in records:
        run = runs[record["key"]]
        tags = run.data.tags
        assert tags["patchbench.trial_key"] == record["key"]
        assert tags["patchbench.spec_hash"] == record["spec_hash"]
        assert tags["patchbench.source_hash"] == record["source_hash"]
        assert tags["patchbench.status"] == "completed" and run.info.status == "FINISHED"
        assert run.data.params["training.batch_size"] == "64"
        assert run.data.params["arm.optimizer.lr"] == "0.1"
        assert run.data.params["seed"] == "0"
        for key, field in (("train/loss", "train_loss"), ("eval/clean_acc", "clean_acc")):
            history = client.get_metric_history(run.info.run_id, key)
            assert sorted((m.step, m.value) for m in history) == \
                [(s, pytest.approx(v)) for s, v in rows(record, field)]
        assert run.data.metrics["final/clean_acc"] == \
            pytest.approx(record["summary"]["final"]["clean_acc"])
        assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["curves.png"]


def wandb_records(run_dir: Path) -> list[dict]:
    """The records of an offline run's .wandb log, as W&B's own reader prints them."""
    wandb_cli = Path(sys.executable).with_name("wandb")
    done = subprocess.run([str(wandb_cli), "leet", "inspect", "--json", str(run_dir)],
                          capture_output=True, text=True, timeout=120, check=True)
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_wandb_offline_run_history_config_and_summary(grid):
    out, records = grid
    folders = sorted((out / "wandb").glob("offline-run-*"))
    assert len(folders) == len(records)
    seen = set()
    for folder in folders:
        logged = wandb_records(folder)
        config = next(r["run"]["config"]["update"] for r in logged if r["type"] == "run")
        record = next(r for r in records if r["key"] == config["patchbench.trial_key"])
        seen.add(record["key"])
        assert config["patchbench.spec_hash"] == record["spec_hash"]
        assert config["training.batch_size"] == 64
        history = [r["history"]["item"] for r in logged if r["type"] == "history"]
        assert [(h["epoch"], h["train/loss"]) for h in history] == \
            [(s, pytest.approx(v)) for s, v in rows(record, "train_loss")]
        assert [(h["epoch"], h["eval/clean_acc"]) for h in history] == \
            [(s, pytest.approx(v)) for s, v in rows(record, "clean_acc")]
        summary = {}
        for r in logged:
            if r["type"] == "summary":
                summary.update(r["summary"]["update"])
        assert summary["final/clean_acc"] == \
            pytest.approx(record["summary"]["final"]["clean_acc"])
        assert summary["status"] == "completed"
    assert seen == {r["key"] for r in records}


def test_track_replays_into_mlflow_once_and_skips_what_trackers_hold(grid, run_cli, tmp_path,
                                                                    monkeypatch):
    from mlflow import MlflowClient

    out, records = grid
    uri = f"sqlite:///{tmp_path / 'replayed.db'}"
    code, stdout, _ = run_cli("track", out, "--to", "mlflow", "--track-uri", uri)
    assert (code, stdout.strip()) == (0, "sent 2 trials to mlflow")
    code, stdout, _ = run_cli("track", out, "--to", "mlflow", "--track-uri", uri)
    assert (code, stdout.strip()) == (0, "sent 0 trials to mlflow; 2 it already held were "
                                         "skipped")
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("tiny v1").experiment_id])
    assert sorted(r.info.run_name for r in runs) == [r["key"] for r in records]
    replayed = next(r for r in runs if r.info.run_name == records[0]["key"])
    assert sorted((m.step, m.value) for m in
                  client.get_metric_history(replayed.info.run_id, "train/loss")) == \
        [(s, pytest.approx(v)) for s, v in rows(records[0], "train_loss")]
    # The live run's TensorBoard and W&B runs are the records' own: a replay adds none.
    monkeypatch.setenv("WANDB_MODE", "offline")
    for name in ("tensorboard", "wandb"):
        code, stdout, _ = run_cli("track", out, "--to", name)
        assert (code, stdout.strip()) == (0, f"sent 0 trials to {name}; 2 it already held "
                                             "were skipped")


def test_unreachable_tracker_is_one_warning_and_the_grid_completes(write_spec, run_cli,
                                                                   tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    spec = vectors(output={"dir": str(tmp_path / "o")})
    code, _, err = run_cli("run", write_spec(spec), "--track", "mlflow",
                           "--track-uri", "http://127.0.0.1:9")
    assert code == 0
    warnings = [line for line in err.splitlines() if line.startswith("patchbench: warning")]
    assert len(warnings) == 1 and "Traceback" not in err, err
    assert warnings[0].startswith("patchbench: warning: tracker 'mlflow' (plugin "
                                  "'patchbench.trackers', patchbench ")
    assert "patchbench track" in warnings[0]
    records = load_records([tmp_path / "o"])
    assert sorted(r["status"] for r in records) == ["completed", "completed"]
    assert all(len(r["history"]) == 2 for r in records)


def test_a_tracker_without_its_extra_is_one_line_before_training(write_spec, run_cli,
                                                                 tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now raises ImportError
    out = tmp_path / "o"
    code, stdout, err = run_cli("run", write_spec(vectors(output={"dir": str(out)})),
                                "--track", "mlflow")
    assert code == 2
    assert err.strip().splitlines() == [
        "patchbench: error: tracking[0]: tracker 'mlflow' needs the mlflow package, which is "
        "not installed: pip install 'patchbench[mlflow]'"]
    assert not (out / "results.sqlite").exists()  # refused before the grid touches the store


def test_tracking_is_outside_the_spec_hash_and_checked_like_a_component(write_spec, run_cli):
    registry = get_registry()
    plain = load_spec(write_spec(vectors()), registry=registry)
    tracked = load_spec(write_spec(vectors(tracking=["tensorboard",
                                                   {"name": "mlflow",
                                                    "params": {"uri": "http://x:5000"}}]),
                                   "tracked.yaml"), registry=registry)
    assert spec_hash(tracked) == spec_hash(plain)
    code, _, err = run_cli("validate", write_spec(vectors(tracking=["mlfow"]), "bad.yaml"))
    assert code == 2
    assert "tracking[0].name: unknown tracker 'mlfow'; did you mean 'mlflow'? available: " \
        "mlflow, tensorboard, wandb" in err
    code, _, err = run_cli("validate", write_spec(vectors(tracking=[
        {"name": "mlflow", "params": {"url": "x"}}]), "bad2.yaml"))
    assert code == 2 and "tracking[0].params.url: unknown key; allowed: uri" in err
    code, _, err = run_cli("run", write_spec(vectors(), "s.yaml"), "--track", "tensorboard",
                           "--track-uri", "http://x")
    assert (code, err.strip()) == (2, "patchbench: error: --track-uri: none of the trackers "
                                      "takes a URI; allowed with --track mlflow")


class Broken(Tracker):
    """A third party's tracker that fails on its second epoch; it notes its calls in the file
    ``$BROKEN_CALLS`` (it runs in the tracking process, not the test's)."""

    name = "broken"

    def _note(self, *call: Any) -> int:
        with open(os.environ["BROKEN_CALLS"], "a") as f:
            f.write(json.dumps(call) + "\n")
        return len(Path(os.environ["BROKEN_CALLS"]).read_text().splitlines())

    def start_trial(self, trial):
        self._note("start", trial.key)

    def log_epoch(self, trial, row):
        if self._note("epoch", row["epoch"]) > 2:
            raise ConnectionError("server went away")

    def finish_trial(self, trial, record, files):
        self._note("finish", trial.key)

    def has_trial(self, trial):
        return False


def test_a_tracker_plugin_that_raises_is_named_once_and_the_grid_goes_on(write_spec, tmp_path,
                                                                         capsys, monkeypatch):
    """A third party's tracker, registered as any plugin's component, failing mid-grid."""
    from patchbench.plugins import Entry
    from patchbench.run import run_spec

    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("BROKEN_CALLS", str(calls))
    registry = get_registry()
    registry.entries["trackers"]["broken"] = Entry(Broken, "lab-plugin", "lab-trackers", "1.0",
                                                  "trackers")
    try:
        spec = load_spec(write_spec(vectors(output={"dir": str(tmp_path / "o")},
                                            tracking=["broken"])), registry=registry)
        assert run_spec(spec, registry) == 0
    finally:
        del registry.entries["trackers"]["broken"]
    err = capsys.readouterr().err
    assert err.count("patchbench: warning: tracker 'broken'") == 1, err
    assert "failed in log_epoch: ConnectionError: server went away" in err
    assert [json.loads(line) for line in calls.read_text().splitlines()] == [
        ["start", "mlp2-16/a/two_pattern_q/seed0"], ["epoch", 1], ["epoch", 2]]
    assert [r["status"] for r in load_records([tmp_path / "o"])] == ["completed", "completed"]


def test_a_tracker_that_cannot_be_pickled_is_one_line_before_training(write_spec, tmp_path,
                                                                      run_cli):
    """Trackers are sent to the tracking process: one whose state will not pickle (a lock,
    a connection) is refused up front, naming its plugin."""
    from patchbench.plugins import Entry

    class Local(Broken):
        name = "local"

    registry = get_registry()
    registry.entries["trackers"]["local"] = Entry(Local, "lab-plugin", "lab-trackers", "1.0",
                                                 "trackers")
    try:
        out = tmp_path / "o"
        code, _, err = run_cli("run", write_spec(vectors(output={"dir": str(out)},
                                                         tracking=["local"])))
    finally:
        del registry.entries["trackers"]["local"]
    assert code == 2, err
    [line] = err.strip().splitlines()
    assert line.startswith("patchbench: error: tracking[0]: ") and "cannot be pickled" in line
    assert not (out / "results.sqlite").exists()
