"""Faults at the edges: bad destinations, disk full, corrupt checkpoints, signals. Each one
is one line on stderr (exit 2), no traceback, and nothing already computed is lost."""

from __future__ import annotations

import json

import pytest

from .conftest import tiny_spec


def one_line_error(code: int, err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.startswith("patchbench: error:")]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert all(n in lines[0] for n in needles), lines[0]


@pytest.fixture
def results(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"format": "patchbench-results/1", "records": []}))
    return path


@pytest.mark.parametrize("command", ["export", "report", "plot", "leaderboard", "preview"])
def test_a_file_option_refuses_a_directory_and_a_path_under_a_file(
        command, results, write_spec, run_cli, tmp_path):
    source = write_spec(tiny_spec()) if command == "preview" else results
    suffix = {"export": ".json", "report": ".html", "plot": ".png", "preview": ".png",
              "leaderboard": ".md"}[command]
    folder = tmp_path / f"folder{suffix}"
    folder.mkdir()
    code, _, err = run_cli(command, source, "--out", folder)
    one_line_error(code, err, "--out", str(folder), "is a directory")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, _, err = run_cli(command, source, "--out", blocker / f"x{suffix}")
    one_line_error(code, err, "--out", str(blocker), "is a file")


def test_run_out_refuses_a_file_and_a_path_under_a_file(write_spec, run_cli, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for out in (blocker, blocker / "out"):
        code, _, err = run_cli("run", write_spec(tiny_spec()), "--out", out)
        one_line_error(code, err, "--out", str(blocker), "is a file")
    spec = tiny_spec(output={"dir": str(blocker / "runs")})
    code, _, err = run_cli("run", write_spec(spec))
    one_line_error(code, err, "output.dir", str(blocker), "is a file")
    assert blocker.read_text() == "x"


def test_validate_follows_reduced_spec(write_spec, run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # reduced_spec is relative to the working directory
    path = write_spec(tiny_spec(reduced_spec="reduced.yaml"))
    code, _, err = run_cli("validate", path)
    one_line_error(code, err, str(path), "reduced_spec: reduced.yaml: no such file")
    bad = tiny_spec(name="tiny_reduced")
    bad["training"]["epochs"] = 0
    write_spec(bad, "reduced.yaml")
    code, _, err = run_cli("validate", path)
    assert code == 2 and "reduced.yaml: training.epochs" in err and "Traceback" not in err
    write_spec(tiny_spec(name="tiny_reduced", reduced_spec=str(path)), "reduced.yaml")
    code, out, err = run_cli("validate", path)  # each names the other: each validated once
    assert code == 0, err
    assert f"{path}: ok" in out and "reduced.yaml: ok (tiny_reduced v1" in out
    assert out.count(": ok (") == 2


CROPPER = """
from patchbench import hookimpl
from patchbench.components import PatchGenerator

class Cropper(PatchGenerator):
    "Crops a column off: its apply breaks the contract."
    name = "cropper"
    def setup(self, data, device): pass
    def apply(self, x, y, idx, split, gen): return x[..., :-1], y
    def stamp(self, x, cls, gen): return x
    def patch_only(self, cls, image_shape, gen): return None

@hookimpl
def register_patches(register):
    register(Cropper)
"""


def test_validate_sets_up_and_applies_each_patch_on_the_declared_shape(
        write_spec, run_cli, fake_dist):
    fake_dist("cropper", "0.1", {"cropper_plugin": CROPPER})
    spec = tiny_spec(patch={"name": "lwm", "params": {"size": 40}})
    code, _, err = run_cli("validate", write_spec(spec))
    one_line_error(code, err, "patch (lwm) on 3x32x32 inputs",
                   "patch.params.size: 40 is larger than the 32x32 images")
    spec["dataset"]["params"]["image_size"] = 48
    code, out, err = run_cli("validate", write_spec(spec))
    assert code == 0 and ": ok (" in out, err
    spec["patch"] = ["lwm", "cropper"]
    code, _, err = run_cli("validate", write_spec(spec))
    one_line_error(code, err, "patch[1] (cropper) on 3x48x48 inputs",
                   "apply returned images (64, 3, 48, 47)")


def one_trial(**overrides):
    """One trial (no control), two epochs: a checkpoint after the first."""
    spec = tiny_spec(arms=[{"name": "large_lr", "optimizer": {"lr": 0.1}}], **overrides)
    spec["evaluation"]["metrics"] = ["clean_acc"]
    return spec


def interrupted_after_epoch_1(path, out):
    """Train until the first epoch checkpoint is written, then Ctrl-C."""
    from patchbench.plugins import get_registry
    from patchbench.run import run_spec
    from patchbench.spec import load_spec

    def ctrl_c(event):
        if event["type"] == "epoch":
            raise KeyboardInterrupt

    registry = get_registry()
    with pytest.raises(KeyboardInterrupt):
        run_spec(load_spec(path, [], registry), registry, out, on_event=ctrl_c)
    found = list((out / "checkpoints").rglob("*.pt"))
    assert len(found) == 1
    return found[0]


def history(record):
    return [{k: v for k, v in row.items() if k != "time_s"} for row in record["history"]]


@pytest.mark.parametrize("damage", ["truncated", "other_model"])
def test_a_damaged_checkpoint_is_a_warning_and_the_trial_starts_over(
        damage, write_spec, run_cli, tmp_path):
    import torch

    from .test_cli import stored

    path = write_spec(one_trial())
    assert run_cli("run", path, "--out", tmp_path / "fresh")[0] == 0
    fresh = stored(tmp_path / "fresh")
    out = tmp_path / "out"
    checkpoint = interrupted_after_epoch_1(path, out)
    if damage == "truncated":  # the first 1,000 bytes of a real one
        checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    else:  # readable, but not this trial's model
        state = torch.load(checkpoint, weights_only=True)
        state["model"] = {"conv.weight": torch.zeros(1)}
        torch.save(state, checkpoint)
    code, _, err = run_cli("run", path, "--out", out)
    assert code == 0 and "Traceback" not in err, err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and str(checkpoint) in " ".join(err.split()), err
    assert "starts from its beginning" in " ".join(err.split())
    assert "resuming after epoch" not in err
    records = stored(out)
    assert sorted(records) == sorted(fresh)
    for key, record in records.items():
        assert record["status"] == "completed" and record.get("resumed_after_epoch") is None
        assert history(record) == history(fresh[key])  # the uninterrupted numbers
    assert not list((out / "checkpoints").rglob("*.pt*"))


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs: a disk that fills up for real. Mounting needs root; under CI it must."""
    import os
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot mount a tmpfs under CI: {done.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk):
    """Write a file until the disk has no space left; return it (delete it to free it)."""
    import errno

    filler = disk / "filler"
    with open(filler, "ab", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


@pytest.mark.parametrize("full_at", ["checkpoint", "record"])
def test_a_full_disk_ends_the_run_in_one_line_and_a_rerun_resumes(
        full_at, small_disk, write_spec, run_cli, monkeypatch):
    """``checkpoint``: the disk fills once the second trial has its first checkpoint, so its
    second one cannot be written. ``record``: it fills at the first trial's last checkpoint,
    so its record cannot be stored."""
    import torch

    from patchbench.train import checkpoint as ckpt

    from .test_cli import stored

    spec = tiny_spec(arms=[tiny_spec()["arms"][0]])  # an arm and its no-patch control
    spec["training"].update(epochs=3, threads=1)
    spec["dataset"]["params"].update(n_train=128, n_test=50)
    spec["evaluation"].update(metrics=["clean_acc"], batch_size=50)
    path, out = write_spec(spec), small_disk / "out"
    real_save, first = ckpt.save, []

    def save_then_fill(where, state):
        real_save(where, state)
        first.append(where) if not first else None
        if (small_disk / "filler").exists():
            return
        if (full_at == "checkpoint" and where != first[0]) or \
                (full_at == "record" and state["epoch"] == 2):
            fill(small_disk)

    monkeypatch.setattr(ckpt, "save", save_then_fill)
    code, _, err = run_cli("run", path, "--out", out)
    lines = [line for line in err.splitlines() if line.startswith("patchbench: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "no space left" in lines[0], err
    assert str(out / "checkpoints" if full_at == "checkpoint" else out / "results.sqlite") \
        in lines[0], err
    # what was computed is intact: the records stored, one whole checkpoint, no partial file
    records = stored(out)
    assert [r["status"] for r in records.values()] == \
        (["completed"] if full_at == "checkpoint" else [])
    files = [p for p in (out / "checkpoints").rglob("*") if p.is_file()]
    assert [p.suffix for p in files] == [".pt"]
    resumes_after = 1 if full_at == "checkpoint" else 2
    assert torch.load(files[0], weights_only=True)["epoch"] == resumes_after
    if full_at == "checkpoint":  # an export to the full disk: one line, the good one kept
        (small_disk / "filler").unlink()
        export = small_disk / "results.json"
        assert run_cli("export", out, "--out", export)[0] == 0
        good = export.read_text()
        fill(small_disk)
        code, _, err = run_cli("export", out, "--out", export)
        lines = [line for line in err.splitlines() if line.startswith("patchbench: error:")]
        assert code == 2 and len(lines) == 1 and str(export) in lines[0], err
        assert export.read_text() == good and not list(small_disk.glob("*.tmp"))
    # space freed: the rerun resumes the interrupted trial and completes the grid
    (small_disk / "filler").unlink()
    monkeypatch.setattr(ckpt, "save", real_save)
    code, _, err = run_cli("run", path, "--out", out)
    assert code == 0, err
    assert f"resuming after epoch {resumes_after}" in " ".join(err.split())
    records = stored(out)
    assert len(records) == 2 and all(r["status"] == "completed" for r in records.values())
    assert not [p for p in (out / "checkpoints").rglob("*") if p.is_file()]


IN_PLACE = """
from patchbench import hookimpl
from patchbench.components import Augmentation

class InPlace(Augmentation):
    "Negates its input in place (and returns it)."
    name = "in_place"
    def apply(self, x, gen): return x.neg_()

@hookimpl
def register_augmentations(register):
    register(InPlace)
"""


def test_an_augmentation_that_writes_into_its_input_fails_its_trial_naming_it(
        fake_dist, write_spec, run_cli, tmp_path):
    from .test_cli import stored

    fake_dist("inplace-aug", "0.1", {"inplace_plugin": IN_PLACE})
    spec = one_trial()
    spec["arms"][0].update(augmentations=["in_place"], augment_order="after_patch")
    spec["training"]["epochs"] = 1
    code, _, err = run_cli("run", write_spec(spec), "--out", tmp_path / "out")
    assert code == 1 and "Traceback" not in err, err
    [record] = stored(tmp_path / "out").values()
    assert record["status"] == "failed"
    assert "augmentation 'in_place' (plugin 'inplace_plugin', inplace-aug 0.1)" in \
        record["error"] and "apply modified its input in place" in record["error"]


def test_preview_training_rows_go_through_each_arms_augmentations(write_spec, run_cli,
                                                                  tmp_path, monkeypatch):
    import patchbench.results.preview as preview
    from patchbench.cli import training_pipelines
    from patchbench.plugins import get_registry
    from patchbench.results.preview import preview_rows
    from patchbench.spec import load_spec

    spec = tiny_spec()
    spec["arms"][0].update(augmentations=[{"name": "flip", "params": {"p": 1.0}}],
                           augment_order="after_patch")
    path = write_spec(spec)
    real, rows_drawn = preview.preview_rows, []
    monkeypatch.setattr(preview, "preview_rows", lambda *a, **k: rows_drawn.append(
        real(*a, **k)) or rows_drawn[-1])
    code, out, err = run_cli("preview", path, "--out", tmp_path / "p.png", "-n", "4")
    assert code == 0, err
    assert [label for label in rows_drawn[0][0] if label.startswith("training batch")] == \
        ["training batch\n(arm large_lr: flip)", "training batch\n(arm small_lr: no augmentation)"]
    assert "arm large_lr: flip; arm small_lr: no augmentation" in " ".join(out.split())
    assert (tmp_path / "p.png").stat().st_size > 0
    registry = get_registry()
    loaded = load_spec(path, [], registry)
    data = registry.build("datasets", loaded.dataset.name, loaded.dataset.params).load()
    patch = registry.build("patches", "lwm", {"sep": 0.3})
    patch.setup(data, __import__("torch").device("cpu"))
    pipelines = training_pipelines(loaded, registry, data)
    rows, _ = preview_rows(data, patch, 4, training=[(w, a, f) for w, a, f in pipelines])
    flipped, plain = rows["arm large_lr: flip"], rows["arm small_lr: no augmentation"]
    assert __import__("torch").equal(flipped, plain.flip(-1))  # the same draws, then the flip


def sigterm_grid():
    """An arm and its no-patch control, one thread each, a few seconds an epoch."""
    spec = tiny_spec(arms=[tiny_spec()["arms"][0]])
    spec["dataset"]["params"]["n_train"] = 512
    spec["training"].update(epochs=4, threads=1)
    spec["evaluation"]["metrics"] = ["clean_acc"]
    return spec


def run_until_a_checkpoint_then_sigterm(spec_path, out, *flags, pattern="*.pt",
                                         timeout=240):
    """``patchbench run`` in a subprocess, SIGTERM once a checkpoint matching ``pattern``
    exists; return (exit status, stderr)."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "patchbench", "run", str(spec_path),
                             "--out", str(out), *flags], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + timeout
        while not list(out.glob(f"checkpoints/*/{pattern}")):
            assert proc.poll() is None, f"ended before a checkpoint: {proc.communicate()[1]}"
            assert time.monotonic() < deadline, "no checkpoint in time"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, err


def assert_interrupted_then_resumed(code, err, path, out, run_cli):
    import torch

    from .test_cli import stored

    assert code == 143, err
    assert err.strip().splitlines()[-1] == "patchbench: interrupted (SIGTERM); rerun to resume"
    assert "Traceback" not in err, err
    kept = [p for p in (out / "checkpoints").rglob("*") if p.is_file()]
    assert kept and all(p.suffix == ".pt" for p in kept)  # whole checkpoints, no partial file
    assert all(torch.load(p, weights_only=True)["epoch"] >= 1 for p in kept)
    before = stored(out)  # the store is readable and holds only completed trials
    assert all(r["status"] == "completed" for r in before.values())
    code, _, err = run_cli("run", path, "--out", out)  # the local executor resumes them
    assert code == 0, err
    assert "resuming after epoch" in err
    records = stored(out)
    assert len(records) == 2 and all(r["status"] == "completed" for r in records.values())
    assert any(r.get("resumed_after_epoch") for r in records.values())


def test_sigterm_stops_a_local_run_like_ctrl_c_and_a_rerun_resumes(write_spec, run_cli,
                                                                   tmp_path):
    path, out = write_spec(sigterm_grid()), tmp_path / "out"
    code, err = run_until_a_checkpoint_then_sigterm(path, out, pattern="*__none__*.pt")
    assert_interrupted_then_resumed(code, err, path, out, run_cli)
