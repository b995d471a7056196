"""benchmarks/gpu_paper.py end to end on CPU, with a tiny override of the paper spec."""

from __future__ import annotations

import importlib.util

from .conftest import REPO
from .test_cli import stored

TINY = ["dataset={name: synthetic, params: {n_train: 256, n_test: 100}}",
        "architectures=[{name: wrn, params: {depth: 10, width: 1}}]",
        "training.epochs=2", "training.precision=fp32", "training.channels_last=false",
        "training.threads=1", "arms.large_lr.schedule.params.milestones=[2]",
        "arms.small_lr_act_noise.regularizers[0].params.anneal_epoch=2",
        "evaluation.batch_size=100", "evaluation.metrics[2].params.n=100"]


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_paper", REPO / "benchmarks" /
                                                  "gpu_paper.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_paper_script_runs_arms_first_then_controls(tmp_path, capsys):
    script = load_script()
    out = tmp_path / "out"
    args = ["--out", str(out), "--budget-s", "600"] + [a for s in TINY for a in ("--set", s)]
    assert script.main(args) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].startswith("no CUDA device; torch ")
    records = stored(out)
    order = [r["key"] for r in sorted(records.values(), key=lambda r: r["finished_at"])]
    assert sorted(records) == sorted([
        "wrn-10-1/large_lr/lwm/seed0", "wrn-10-1/small_lr/lwm/seed0",
        "wrn-10-1/small_lr_act_noise/lwm/seed0", "wrn-10-1/large_lr/none/seed0",
        "wrn-10-1/small_lr/none/seed0"])
    assert all("/lwm/" in k for k in order[:3]) and all("/none/" in k for k in order[3:])
    for name in ("leaderboard.md", "per_epoch.md", "timing.md", "curves.png"):
        assert (out / name).stat().st_size > 0
    per_epoch = (out / "per_epoch.md").read_text()
    clean = records["wrn-10-1/small_lr/lwm/seed0"]["history"][1]["clean_acc"]
    assert "| small_lr/lwm | clean_acc | " in per_epoch and f"{clean:.3f} |" in per_epoch
    assert "| 1 | 2 |" in per_epoch.splitlines()[0]
    # the spec hash is the whole 3-seed grid's: later seeds join the same store
    assert len({r["spec_hash"] for r in records.values()}) == 1
    assert records["wrn-10-1/large_lr/lwm/seed0"]["spec"]["seeds"] == [0, 1, 2]


def test_the_paper_script_stops_within_its_budget_and_resumes(tmp_path):
    script = load_script()
    out = tmp_path / "out"
    args = ["--out", str(out)] + [a for s in TINY for a in ("--set", s)]
    slow = args + ["--set", "dataset.params.n_train=2048", "--set", "training.epochs=6"]
    assert script.main(slow + ["--budget-s", "1"]) == 3  # cut off: nothing lost
    assert len(stored(out)) < 5
    assert script.main(slow + ["--budget-s", "900"]) == 0
    assert len(stored(out)) == 5
