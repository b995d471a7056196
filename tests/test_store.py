"""Durable results: the store, resume, faults, leaderboards, exports and plots."""

from __future__ import annotations

import csv
import io
import json
import math
import multiprocessing

import pytest
import torch

from patchbench.results.leaderboard import build_boards, tables
from patchbench.results.table import RENDERERS
from patchbench.plugins import get_registry
from patchbench.spec import load_spec
from patchbench.store import Store, load_records
from patchbench.spec import plan_trials
from patchbench.train.trainer import train_trial

from .conftest import BOOM_PLUGIN, tiny_spec
from .test_cli import stored


def test_second_run_trains_nothing_and_force_trains_again(write_spec, run_cli, tmp_path):
    path, out = write_spec(tiny_spec()), tmp_path / "out"
    assert run_cli("run", path, "--out", out)[0] == 0
    first = stored(out)
    code, stdout, stderr = run_cli("run", path, "--out", out)
    assert code == 0
    assert "all 3 trials already completed" in stderr and "nothing to train" in stderr
    assert "tiny v1" in stdout  # the leaderboard is still shown
    assert stored(out) == first
    code, _, stderr = run_cli("run", path, "--out", out, "--set", "seeds=[0, 1]")
    assert code == 0 and "6 trials on" in stderr  # another spec hash: another grid
    code, _, stderr = run_cli("run", path, "--out", out, "--force")
    assert code == 0 and "3 trials on" in stderr
    again = stored(out)
    assert all(again[k]["finished_at"] >= first[k]["finished_at"] for k in first)
    assert len(Store.in_dir(out).records()) == 9


class Killed(Exception):
    pass


def test_killed_trial_resumes_and_matches_an_uninterrupted_run(write_spec, tmp_path):
    spec = load_spec(write_spec(tiny_spec(arms=[tiny_spec()["arms"][1]])),
                     ["training.epochs=4", "arms.small_lr.regularizers[0].params.anneal_epoch=3"])
    registry = get_registry()
    trial = plan_trials(spec, registry)[0]
    data = registry.build("datasets", "synthetic", spec.dataset.params).load()
    cpu = torch.device("cpu")
    whole = train_trial(spec, trial, data, cpu, registry)

    path = tmp_path / "ckpt.pt"

    def kill_after_2(row):
        if row["epoch"] == 2:
            raise Killed

    with pytest.raises(Killed):
        train_trial(spec, trial, data, cpu, registry, on_epoch=kill_after_2, checkpoint=path)
    assert torch.load(path, weights_only=True)["epoch"] == 2
    torch.manual_seed(12345)  # whatever the process did since must not matter
    resumed = train_trial(spec, trial, data, cpu, registry, checkpoint=path)
    strip = lambda h: [{k: v for k, v in row.items() if k != "time_s"} for row in h]
    assert len(resumed.history) == 4
    assert strip(resumed.history) == strip(whole.history)
    assert resumed.summary == whole.summary


def kill_after_epoch_1(run_cli, spec_path, out, monkeypatch) -> tuple[int, str]:
    """Run the CLI with a Ctrl-C after the first epoch of the first trial."""
    import patchbench.run.jobs as jobs

    real = jobs.train_trial

    def dies_after_epoch_1(*args, **kwargs):
        def on_epoch(row):
            if row["epoch"] == 1:
                raise KeyboardInterrupt
        return real(*args[:6], on_epoch, *args[7:], **kwargs)

    monkeypatch.setattr(jobs, "train_trial", dies_after_epoch_1)
    code, _, err = run_cli("run", spec_path, "--out", out)
    monkeypatch.setattr(jobs, "train_trial", real)
    return code, err


def test_a_killed_grid_resumes_through_the_cli(write_spec, run_cli, tmp_path, monkeypatch):
    path, out = write_spec(tiny_spec(arms=[tiny_spec()["arms"][1]])), tmp_path / "out"
    code, err = kill_after_epoch_1(run_cli, path, out, monkeypatch)
    assert code == 130 and "interrupted" in err
    assert list((out / "checkpoints").rglob("*.pt"))
    code, _, err = run_cli("run", path, "--out", out)
    assert code == 0 and "resuming after epoch 1" in err and "other code" not in err
    record = stored(out)["wrn-10-1/small_lr/lwm/seed0"]
    assert [h["epoch"] for h in record["history"]] == [1, 2]
    assert record["resumed_after_epoch"] == 1 and "resumed_from_source" not in record
    assert not list((out / "checkpoints").rglob("*.pt"))


def test_results_from_other_code_are_kept_but_flagged(write_spec, run_cli, tmp_path,
                                                      monkeypatch):
    path, out = write_spec(tiny_spec(arms=[tiny_spec()["arms"][1]])), tmp_path / "out"
    assert kill_after_epoch_1(run_cli, path, out, monkeypatch)[0] == 130
    [ckpt_path] = (out / "checkpoints").rglob("*.pt")
    state = torch.load(ckpt_path, weights_only=True)
    now = state["code_hash"]
    assert len(now) == 12
    torch.save({**state, "code_hash": "0ldc0de0ldc0"}, ckpt_path)  # as if the code changed since
    code, _, err = run_cli("run", path, "--out", out)
    assert code == 0
    assert f"written by other code (source 0ldc0de0ldc0, now {now})" in " ".join(err.split())
    [record] = stored(out).values()
    assert record["source_hash"] == now and record["resumed_from_source"] == "0ldc0de0ldc0"
    assert record["resumed_after_epoch"] == 1
    code, stdout, err = run_cli("run", path, "--out", out)
    assert "1 of the completed trials were trained by other code (source 0ldc0de0ldc0, now " \
        f"{now})" in " ".join(err.split())
    assert "Trials trained by 2 versions of the code are pooled here" in " ".join(stdout.split())
    assert run_cli("run", path, "--out", out, "--force")[0] == 0
    [record] = stored(out).values()
    assert "resumed_from_source" not in record
    code, stdout, err = run_cli("run", path, "--out", out)
    assert "other code" not in err and "versions of the code" not in stdout


def test_the_source_hash_covers_every_stage_of_the_package():
    from patchbench.run.records import source_files

    names = set(source_files([]))
    for module in ("patchbench/kinds.py", "patchbench/spec/models.py",
                   "patchbench/train/trainer.py", "patchbench/run/driver.py",
                   "patchbench/results/leaderboard.py", "patchbench/builtin/patches.py"):
        assert module in names, module


def test_source_hash_follows_plugin_code(tmp_path, monkeypatch):
    from patchbench.run.records import source_hash

    module = tmp_path / "my_patch_module.py"
    module.write_text("class MyPatch:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import my_patch_module

    core = source_hash([])
    with_plugin = source_hash([my_patch_module.MyPatch])
    assert core == source_hash([]) and with_plugin != core
    module.write_text("class MyPatch:\n    size = 3\n")
    assert source_hash([my_patch_module.MyPatch]) not in (core, with_plugin)


def _write_many(db: str, worker: int) -> None:
    store = Store(db)
    for i in range(40):
        store.put(record(f"w{worker}/t{i}", seed=i))
    store.close()


def test_two_processes_writing_one_store_lose_nothing(tmp_path):
    db = str(tmp_path / "results.sqlite")
    Store(db).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_many, args=(db, w)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    keys = {r["key"] for r in Store(db).records()}
    assert len(keys) == 80


def test_diverging_trial_is_recorded_and_the_grid_goes_on(write_spec, run_cli, tmp_path):
    arms = [{"name": "explode", "optimizer": {"lr": 1.0e6}}, tiny_spec()["arms"][1]]
    out = tmp_path / "out"
    code, _, err = run_cli("run", write_spec(tiny_spec(arms=arms, patch=None)), "--out", out)
    assert code == 1 and "1 of 2 trials did not complete" in err
    records = stored(out)
    bad = records["wrn-10-1/explode/none/seed0"]
    assert bad["status"] == "diverged" and bad["failed_epoch"] == len(bad["history"])
    assert bad["error"] == f"non-finite training loss in epoch {bad['failed_epoch']}"
    assert not math.isfinite(bad["history"][-1]["train_loss"])
    assert records["wrn-10-1/small_lr/none/seed0"]["status"] == "completed"


def test_failing_trial_is_recorded_with_its_message(write_spec, run_cli, tmp_path, fake_dist):
    fake_dist("boom-arch", "0.1", {"boom_arch": BOOM_PLUGIN})
    spec = tiny_spec(architectures=["boom", {"name": "wrn", "params": {"depth": 10, "width": 1}}],
                     arms=[tiny_spec()["arms"][1]])
    out = tmp_path / "out"
    code, _, err = run_cli("run", write_spec(spec), "--out", out)
    assert code == 1 and "Traceback" in err  # a bug in a plugin keeps its traceback
    records = stored(out)
    assert records["boom/small_lr/lwm/seed0"]["status"] == "failed"
    assert records["boom/small_lr/lwm/seed0"]["error"] == "RuntimeError: no memory for this model"
    assert records["wrn-10-1/small_lr/lwm/seed0"]["status"] == "completed"


def record(key: str, arm: str = "a", seed: int = 0, patch: str = "lwm", clean: float = 0.5,
           learned: int | None = 3, spec_hash: str = "h1", version: str = "1",
           status: str = "completed") -> dict:
    return {"key": key, "benchmark": "bench", "benchmark_version": version,
            "spec_hash": spec_hash, "architecture": "net", "arm": arm, "patch": patch,
            "seed": seed, "status": status,
            "history": [{"epoch": 1, "clean_acc": clean / 2, "patch_only_acc": 0.1},
                        {"epoch": 2, "clean_acc": clean, "patch_only_acc": 0.9}],
            "summary": {"final": {"clean_acc": clean, "patch_only_acc": 0.9},
                        "patch_learned_epoch": learned,
                        "anneals": {"2": {"before": {"clean_acc": clean / 2}, "after": None}}}}


HAND_MADE = [
    record("s0", seed=0, clean=0.60), record("s1", seed=1, clean=0.70),
    record("s2", seed=2, clean=0.80, learned=None),
    record("c0", seed=0, patch="none", clean=0.65), record("c1", seed=1, patch="none", clean=0.80),
    record("b0", arm="b", clean=0.9), record("b1", arm="b", seed=1, clean=0.1, status="diverged"),
]


def timed(key: str, seed: int, patch: str, clean: list[float], only: list[float],
          follow: list[float], arm: str = "a", peak: bool = False) -> dict:
    """A hand-made record with a three-epoch history and anneals at epochs 3 and 2 (the
    first: 2, so before it is epoch 1 and after it epoch 2); with
    ``peak``, its summary holds the peak as the trainer writes it, else (as an older
    store's) it does not."""
    names = ("clean_acc", "patch_only_acc", "patch_follow_rate")
    history = [{"epoch": e + 1, **dict(zip(names, values))}
               for e, values in enumerate(zip(clean, only, follow))]
    at = [{m: h[m] for m in names} for h in history]
    summary = {"final": at[-1], "patch_learned_epoch": None,
               "anneals": {"3": {"before": at[1], "after": at[2]},
                           "2": {"before": at[0], "after": at[1]}}}
    if peak:  # written by hand, as the trainer would: max, or min for the follow rate
        best = {"clean_acc": max(clean), "patch_only_acc": max(only),
                "patch_follow_rate": min(follow)}
        summary["peak"] = best
        summary["peak_epoch"] = {m: next(h["epoch"] for h in history if h[m] == best[m])
                                 for m in names}
    return {"key": key, "benchmark": "timed", "benchmark_version": "1", "spec_hash": "t1",
            "architecture": "net", "arm": arm, "patch": patch, "seed": seed,
            "status": "completed", "history": history, "summary": summary}


TIMED = [
    timed("s0", 0, "lwm", [0.50, 0.70, 0.60], [0.2, 0.9, 0.9], [0.5, 0.2, 0.3], peak=True),
    timed("s1", 1, "lwm", [0.40, 0.56, 0.66], [0.3, 0.6, 0.95], [0.4, 0.4, 0.1], peak=True),
    timed("c0", 0, "none", [0.55, 0.80, 0.75], [0.1, 0.1, 0.1], [0.1, 0.05, 0.2]),
    timed("c1", 1, "none", [0.61, 0.72, 0.71], [0.1, 0.1, 0.1], [0.1, 0.1, 0.1]),
    timed("b0", 0, "lwm", [0.30, 0.35, 0.33], [0.5, 0.5, 0.5], [0.5, 0.5, 0.5], arm="b"),
]
"""Arm a: two patched seeds whose summaries hold their peaks and two controls (an older
store's records: peaks from the history); arm b: a patched seed without a control."""


def timed_md(run_cli, tmp_path, *flags: str) -> str:
    db = tmp_path / "timed.sqlite"
    if not db.exists():
        Store(db).put(*TIMED)
    code, out, err = run_cli("leaderboard", db, "--format", "md", *flags)
    assert code == 0, err
    return out


def test_the_leaderboard_shows_each_metrics_peak_and_its_cost(tmp_path, run_cli):
    out = timed_md(run_cli, tmp_path, "--stat", "peak")
    # clean peaks 0.70, 0.66 (patched), 0.80, 0.72 (controls); the follow rate's is its min
    assert "| clean peak ↑ | patch-only peak ↑ | follow peak ↓ |" in out
    assert "| net | a | lwm | 2 | 0.680 ± 0.028 | 0.925 ± 0.035 | 0.150 ± 0.071 |" in out
    assert "| net | a | none | 2 | 0.760 ± 0.057 | 0.100 ± 0.000 | 0.075 ± 0.035 |" in out
    assert "| 0.080 ± 0.028 |" in out  # patch cost 0.80 - 0.70, 0.72 - 0.66
    assert ("mean ± std over seeds at each metric's peak (its best value over the evaluated "
            "epochs)") in out
    assert "patch cost = control peak clean − patched peak clean, paired by seed" in out
    out = timed_md(run_cli, tmp_path, "--stat", "peak_epoch")
    # the first epoch with the best value: s0's patch-only 0.9 at epochs 2 and 3 is epoch 2
    assert "| clean peak-epoch | patch-only peak-epoch | follow peak-epoch |" in out
    assert "| net | a | lwm | 2 | 2.5 ± 0.7 | 2.5 ± 0.7 | 2.5 ± 0.7 |" in out
    assert "| net | a | none | 2 | 2.0 ± 0.0 | 1.0 ± 0.0 | 1.5 ± 0.7 |" in out
    assert "| -0.5 ± 0.7 |" in out  # control peak epochs 2, 2 - patched 2, 3
    assert "| net | b | lwm | 1 | 2.0 | 1.0 | 1.0 |" in out


def test_the_leaderboard_shows_metrics_around_the_first_anneal(tmp_path, run_cli):
    # the first anneal is at epoch 2 (listed second): before it epoch 1, after it epoch 2
    out = timed_md(run_cli, tmp_path, "--stat", "before_anneal")
    assert "| net | a | lwm | 2 | 0.450 ± 0.071 | 0.250 ± 0.071 | 0.450 ± 0.071 |" in out
    assert "| 0.130 ± 0.113 |" in out  # 0.55 - 0.50, 0.61 - 0.40
    assert "mean ± std over seeds just before the first anneal" in out
    assert "patch cost = control before-anneal clean − patched before-anneal clean" in out
    out = timed_md(run_cli, tmp_path, "--stat", "after_anneal")
    assert "| net | a | lwm | 2 | 0.630 ± 0.099 | 0.750 ± 0.212 | 0.300 ± 0.141 |" in out
    assert "| 0.130 ± 0.042 |" in out  # 0.80 - 0.70, 0.72 - 0.56


def test_the_patch_cost_of_any_metric(tmp_path, run_cli):
    out = timed_md(run_cli, tmp_path, "--cost-metric", "patch_only_acc")
    assert "| -0.825 ± 0.035 |" in out  # 0.1 - 0.9, 0.1 - 0.95
    assert "patch cost = control final patch-only − patched final patch-only" in out
    out = timed_md(run_cli, tmp_path, "--cost-metric", "patch_follow_rate", "--stat", "peak")
    assert "| -0.075 ± 0.106 |" in out  # minima: 0.05 - 0.2, 0.1 - 0.1
    default = timed_md(run_cli, tmp_path)
    assert default == timed_md(run_cli, tmp_path, "--stat", "final", "--cost-metric",
                               "clean_acc")
    assert "| 0.100 ± 0.071 |" in default  # final clean: 0.75 - 0.60, 0.71 - 0.66
    assert "patch cost = control clean − patched clean, paired by seed" in default
    db = tmp_path / "timed.sqlite"
    code, _, err = run_cli("leaderboard", db, "--stat", "best")
    assert code == 2 and err == ("patchbench: error: --stat: unknown stat 'best'; allowed: "
                                 "final, peak, peak_epoch, before_anneal, after_anneal\n")
    code, _, err = run_cli("leaderboard", db, "--cost-metric", "speed")
    assert code == 2 and err == ("patchbench: error: --cost-metric: unknown metric 'speed'; "
                                 "allowed: clean_acc, patch_only_acc, patch_follow_rate\n")


def test_old_records_without_a_history_show_no_peak():
    old = record("s0")
    del old["history"]
    [board] = build_boards([old], stat="peak")
    assert board.rows[0].cells["clean_acc"].mean is None
    [board] = build_boards([record("s0", clean=0.6)], stat="peak")  # from its history
    assert board.rows[0].cells["clean_acc"].mean == 0.6


def test_the_patch_cost_at_every_epoch(tmp_path, run_cli):
    db = tmp_path / "timed.sqlite"
    Store(db).put(*TIMED)
    code, out, err = run_cli("leaderboard", db, "--epochs", "patch_cost", "--format", "md")
    assert code == 0, err
    # control - patched clean by seed: (0.05, 0.21), (0.10, 0.16), (0.15, 0.05)
    assert "| net | a | lwm | 2 | 0.13 ± 0.11 | 0.13 ± 0.04 | 0.10 ± 0.07 |" in out
    assert "| b |" not in out and "| none |" not in out  # no control; controls themselves
    assert "patch cost (clean) per epoch" in out
    assert "control clean − patched clean, paired by seed" in out
    code, out, err = run_cli("leaderboard", db, "--epochs", "patch_cost", "--cost-metric",
                             "patch_only_acc", "--format", "csv")
    assert code == 0, err
    cells = {r["epoch"]: (float(r["mean"]), r["n"]) for r in csv.DictReader(io.StringIO(out))}
    assert cells.keys() == {"1", "2", "3"}
    assert cells["1"][0] == pytest.approx(-0.15) and cells["2"][0] == pytest.approx(-0.65)
    assert cells["3"] == (pytest.approx(-0.825), "2")
    code, _, err = run_cli("leaderboard", db, "--epochs", "clean_acc", "--stat", "peak")
    assert code == 2 and "--stat peak is a leaderboard column's statistic" in err
    code, _, err = run_cli("leaderboard", db, "--epochs", "patch_cost", "--cost-metric", "x")
    assert code == 2 and err.startswith("patchbench: error: --cost-metric: 'x' is not a metric")
    only = tmp_path / "only.sqlite"
    Store(only).put(TIMED[0])
    code, _, err = run_cli("leaderboard", only, "--epochs", "patch_cost")
    assert code == 2 and "no patched trial has a completed control" in err


def test_leaderboard_numbers_from_hand_made_records():
    [board] = build_boards(HAND_MADE)
    rows = {(r.arm, r.patch): r for r in board.rows}
    a = rows[("a", "lwm")]
    assert (a.completed, a.failed) == (3, 0)
    assert a.cells["clean_acc"].mean == pytest.approx(0.70)
    assert a.cells["clean_acc"].std == pytest.approx(0.10)
    assert a.cells["clean_acc"].n == 3
    assert a.cells["clean_acc"].ci95 == pytest.approx(4.303 * 0.10 / 3 ** 0.5)
    assert a.cells["patch_learned_epoch"].values == [3, 3] and a.never_learned == 1
    assert a.cells["clean_at_anneal"].mean == pytest.approx(0.35)
    assert a.cells["patch_cost"].values == pytest.approx([0.05, 0.10])  # paired by seed
    b = rows[("b", "lwm")]
    assert (b.completed, b.failed) == (1, 1) and b.cells["clean_acc"].mean == 0.9


def test_rows_follow_the_spec_not_the_order_trials_were_stored():
    spec = {"arms": [{"name": "b"}, {"name": "a"}]}
    [board] = build_boards([{**r, "spec": spec} for r in reversed(HAND_MADE)])
    assert [(r.arm, r.patch) for r in board.rows] == [("b", "lwm"), ("a", "lwm"), ("a", "none")]


def test_the_note_on_other_specs_names_what_differs():
    spec = {"name": "bench", "seeds": [0, 1, 2], "training": {"epochs": 2}, "output": {"dir": "a"}}
    seeds_only = {**spec, "seeds": [0], "output": {"dir": "b"}}  # where results go: no matter
    longer = {**spec, "training": {"epochs": 4}}
    records = [{**record("s0"), "spec": spec}, {**record("s1", spec_hash="h2"), "spec": seeds_only}]
    notes = [b.note for b in build_boards(records)]
    assert notes[0] == ("bench v1 also has results from a different spec (h2, which differs in "
                        "seeds); they are shown apart. Seeds are part of the spec: to run a grid "
                        "seed by seed, keep its seeds and pick them with `--only '*/seed1'`.")
    records.append({**record("s2", spec_hash="h3"), "spec": longer})
    note = build_boards(records)[0].note
    assert "(h2, which differs in seeds; h3, which differs in training)" in note
    assert note.endswith("Bump `version` when a spec changes.")


def test_leaderboard_sorting_and_versions():
    [board] = build_boards(HAND_MADE, sort="clean_acc")
    assert [r.arm for r in board.rows][:2] == ["b", "a"]
    mixed = HAND_MADE + [record("x", spec_hash="h2", clean=0.1)]
    boards = build_boards(mixed)
    assert [b.spec_hash for b in boards] == ["h1", "h2"]
    assert "also has results from a different spec (h2)" in boards[0].note
    from patchbench.errors import PatchbenchError
    with pytest.raises(PatchbenchError, match="--sort: unknown metric 'speed'"):
        build_boards(HAND_MADE, sort="speed")


def test_every_output_format_parses(tmp_path, run_cli):
    db = tmp_path / "r.sqlite"
    Store(db).put(*HAND_MADE)
    rows = list(csv.DictReader(io.StringIO(RENDERERS["csv"](tables(build_boards(HAND_MADE)), ""))))
    a = next(r for r in rows if r["arm"] == "a" and r["patch"] == "lwm")
    assert float(a["clean_acc_mean"]) == pytest.approx(0.7) and a["clean_acc_n"] == "3"
    code, out, _ = run_cli("leaderboard", db, "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert data[0]["rows"][0]["clean_acc_std"] == pytest.approx(0.1)
    assert data[0]["columns"][4] == {"header": "clean ↑", "higher_is_better": True}
    code, out, _ = run_cli("leaderboard", db, "--format", "html", "--ci")
    assert code == 0 and out.startswith("<!DOCTYPE html>") and "<table>" in out
    assert "0.700 ± 0.248" in out  # 4.303 * 0.1 / sqrt(3)
    code, out, _ = run_cli("leaderboard", db, "--format", "md")
    assert code == 0 and "| net | a | lwm | 3 | 0.700 ± 0.100 |" in out
    code, out, _ = run_cli("leaderboard", db, "--format", "csv", "--out", tmp_path / "l.csv")
    assert code == 0 and list(csv.reader((tmp_path / "l.csv").open()))[0][0] == "benchmark"
    code, out, _ = run_cli("leaderboard", db)
    assert code == 0 and "bench v1" in out and "0.700 ± 0.100" in out
    assert "3.0 ± 0.0 (2/3)" in out


def test_export_import_roundtrip_and_bad_files(tmp_path, run_cli):
    db = tmp_path / "a.sqlite"
    Store(db).put(*HAND_MADE)
    code, out, _ = run_cli("export", db, "--out", tmp_path / "x.json")
    assert code == 0 and "wrote 7 records" in out
    target = tmp_path / "merged"
    target.mkdir()
    code, out, _ = run_cli("import", tmp_path / "x.json", "--into", target)
    assert code == 0 and "imported 7 records" in out
    assert sorted(r["key"] for r in load_records([target])) == sorted(r["key"] for r in HAND_MADE)
    (tmp_path / "bad.json").write_text('{"records": []}')
    code, _, err = run_cli("leaderboard", tmp_path / "bad.json")
    assert code == 2 and "format: expected 'patchbench-results/1'" in err
    code, _, err = run_cli("leaderboard", tmp_path / "nothing-here")
    assert code == 2 and "no such file or directory" in err


def test_plot_writes_a_png(tmp_path, run_cli):
    db = tmp_path / "a.sqlite"
    Store(db).put(*HAND_MADE)
    code, _, err = run_cli("plot", db, "--out", tmp_path / "curves.png")
    assert code == 0, err
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_pools_a_grid_run_seed_by_seed_once_per_trial_and_refuses_other_science(
        tmp_path, run_cli):
    from patchbench.results.curves import one_spec, panels

    spec = {"name": "bench", "seeds": [0, 1], "training": {"epochs": 2}}
    early = {**record("a/seed0", seed=0, spec_hash="h1", clean=0.2), "spec": {**spec, "seeds": [0]},
             "finished_at": "2026-01-01T00:00:00+00:00"}
    grid = [{**record(f"a/seed{s}", seed=s, spec_hash="h2", clean=c), "spec": spec,
             "finished_at": "2026-02-01T00:00:00+00:00"} for s, c in ((0, 0.6), (1, 0.8))]
    records, note = one_spec([early] + grid)
    assert note == ("pooled specs h1, h2 (they differ only in seeds); 1 trial run under "
                    "several drawn once, from the latest run")
    [(_, curves)] = panels(records)
    assert [r["summary"]["final"]["clean_acc"] for r in curves["a"]] == [0.6, 0.8]
    longer = {**record("a/seed0", spec_hash="h3", clean=0.9),
              "spec": {**spec, "training": {"epochs": 4}}}
    db = tmp_path / "a.sqlite"
    Store(db).put(*grid, longer)
    code, _, err = run_cli("plot", db, "--out", tmp_path / "c.png")
    assert code == 2 and err == ("patchbench: error: plot: results hold 2 specs (h2; h3, which "
                                 "differs in training); choose one with --spec HASH\n")
    code, out, err = run_cli("plot", db, "--spec", "h3", "--out", tmp_path / "c.png")
    assert code == 0 and out == f"wrote {tmp_path / 'c.png'}\n", err
    assert [r["key"] for r in one_spec(grid + [longer], "h3")[0]] == ["a/seed0"]
    code, _, err = run_cli("plot", db, "--spec", "h", "--out", tmp_path / "c.png")
    assert code == 2 and err == ("patchbench: error: --spec: 'h' matches 2 of these results' "
                                 "specs; allowed: h2, h3\n")


def test_epoch_tables_average_each_epoch_over_seeds(tmp_path, run_cli):
    db = tmp_path / "a.sqlite"
    Store(db).put(*HAND_MADE)
    code, out, err = run_cli("leaderboard", db, "--epochs", "clean_acc", "--format", "md")
    assert code == 0, err
    # arm a on lwm: seeds with final clean 0.6, 0.7, 0.8, and half of it at epoch 1
    assert "| net | a | lwm | 3 | 0.35 ± 0.05 | 0.70 ± 0.10 |" in out
    assert "| net | a | none | 2 | 0.36 ± 0.05 | 0.73 ± 0.11 |" in out
    assert "| net | b | lwm | 1 | 0.45 | 0.90 |" in out  # the diverged seed is left out
    code, out, _ = run_cli("leaderboard", db, "--epochs", "patch_only_acc", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    first = next(r for r in rows if (r["arm"], r["patch"], r["epoch"]) == ("a", "lwm", "2"))
    assert (float(first["mean"]), float(first["std"]), first["n"]) == (0.9, 0.0, "3")
    code, _, err = run_cli("leaderboard", db, "--epochs", "attack_success_rate")
    assert code == 2 and err == ("patchbench: error: --epochs: 'attack_success_rate' is not a "
                                 "metric in these results; allowed: clean_acc, patch_only_acc, "
                                 "patch_cost\n")
    code, _, err = run_cli("leaderboard", db, "--epochs", "clean_acc", "--pivot", "lr", "wd")
    assert code == 2 and "--pivot and --epochs are two different tables" in err


def test_several_patches_get_a_panel_each_with_the_controls_in_every_one():
    from patchbench.results.curves import panels

    one_patch = panels(HAND_MADE)
    assert [(t, sorted(c)) for t, c in one_patch] == [("net", ["a", "a (no patch)", "b"])]
    triggers = [record(f"{p}{s}", arm=arm, seed=s, patch=p) for p in ("badnets", "wanet")
                for arm in ("large", "small") for s in (0, 1)]
    controls = [record("c0", arm="large", patch="none"), record("c1", arm="large", patch="none")]
    found = panels(triggers + controls)
    assert [title for title, _ in found] == ["net / badnets", "net / wanet"]
    for title, curves in found:
        # the same order in every panel (colours go by position, one legend): "wanet" sorts
        # after "none", "badnets" before it
        assert list(curves) == ["large", "large (no patch)", "small"], title
        patch = title.split(" / ")[1]
        assert [r["patch"] for r in curves["small"]] == [patch, patch]  # its own trigger only
        assert [r["key"] for r in curves["large (no patch)"]] == ["c0", "c1"]


def test_components_that_do_not_fit_together_stop_before_training(write_spec, run_cli,
                                                                   tmp_path, fake_dist):
    fake_dist("linear-arch", "0.1", {"linear_arch": """
        from torch import nn
        from patchbench import hookimpl
        from patchbench.components import Architecture

        class Linear(Architecture):
            '''A linear model: nothing for activation noise to act on.'''
            name = "linear"
            def build(self, num_classes, image_shape):
                return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))

        @hookimpl
        def register_architectures(register):
            register(Linear)
    """})
    path, out = write_spec(tiny_spec()), tmp_path / "out"
    assert run_cli("run", path, "--out", out)[0] == 0
    before = stored(out)
    code, _, err = run_cli("run", path, "--out", out, "--set", "architectures[0]=linear")
    assert code == 2 and err == (
        f"patchbench: error: {path}: regularizer act_noise: the model has no nn.ReLU modules "
        "(it adds noise at the input of nn.ReLU)\n")
    assert stored(out) == before  # nothing computed is lost, nothing half-trained is added


def test_a_driver_killed_with_sigkill_loses_nothing(write_spec, run_cli, tmp_path):
    """kill -9 of `patchbench run`: the rerun skips what completed and resumes the rest."""
    import signal
    import subprocess
    import sys
    import time

    spec = tiny_spec(arms=[tiny_spec()["arms"][0]])
    spec["training"].update(epochs=6, threads=1)
    path, out = write_spec(spec), tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "patchbench", "run", str(path), "--out",
                             str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        db = out / "results.sqlite"
        if db.exists() and stored(out) and list((out / "checkpoints").rglob("*.pt")):
            break  # one trial stored, the next one checkpointed
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(stored(out)) == 1, "the driver finished before it could be killed"
    code, _, err = run_cli("run", path, "--out", out)
    assert code == 0
    assert "skipping 1 of 2 trials already completed" in err
    assert "resuming after epoch" in err
    records = stored(out)
    assert len(records) == 2 and all(r["status"] == "completed" for r in records.values())
    assert sum("resumed_after_epoch" in r for r in records.values()) == 1


def test_metric_metadata_comes_from_the_records():
    """Direction, short header and the learned metric as the records carry them: the
    backdoor table shows ASR lower-is-better, sorts the least-backdoored model first and
    takes its learned epoch from ASR; records from before metadata use the built-in table."""
    meta = {"clean_acc": {"name": "clean_acc", "higher_is_better": True, "range": [0, 1],
                          "short": "clean"},
            "attack_success_rate": {"name": "attack_success_rate", "higher_is_better": False,
                                    "range": [0, 1], "short": "ASR"}}

    def asr_record(key, arm, asr, learned):
        r = record(key, arm=arm, learned=learned)
        r["summary"]["final"] = {"clean_acc": 0.5, "attack_success_rate": asr}
        r["summary"]["learned_metric"] = "attack_success_rate"
        return {**r, "metrics": meta, "learned_metric": "attack_success_rate"}

    records = [asr_record("a", "a", 0.9, 2), asr_record("b", "b", 0.1, None)]
    [board] = build_boards(records, sort="attack_success_rate")
    asr = next(c for c in board.columns if c.id == "attack_success_rate")
    assert (asr.header, asr.higher_is_better) == ("ASR", False)
    assert [r.arm for r in board.rows] == ["b", "a"]  # the least backdoored first
    md = RENDERERS["md"](tables([board]), "")
    assert "ASR ↓" in md and "first epoch with ASR ≥ threshold" in md
    assert "| net | a | lwm | 1 | 0.500 | 0.900 | 2.0 |" in md
    [old] = build_boards(HAND_MADE)  # no metadata: the built-in table
    assert [c.header for c in old.columns][:2] == ["clean", "patch-only"]
    assert "first epoch with patch-only accuracy" in RENDERERS["md"](tables([old]), "")


def test_one_bad_record_is_reported_and_skipped(tmp_path, run_cli):
    db = tmp_path / "a.sqlite"
    bad = record("bad", seed=5)
    bad["summary"]["final"]["clean_acc"] = "0.5"  # what a string metric used to store
    Store(db).put(*HAND_MADE, bad)
    with Store(db).conn as conn:  # and a row that is not JSON at all
        conn.execute("INSERT INTO trials VALUES ('h1', 'junk', 'bench', '1', 'completed', "
                     "NULL, '{not json')")
    code, out, err = run_cli("leaderboard", db)
    assert code == 0 and "bench v1" in out
    assert err.splitlines() == [
        f"patchbench: warning: {db}: skipping junk: not valid JSON (Expecting property name "
        "enclosed in double quotes: line 1 column 2 (char 1))",
        f"patchbench: warning: {db}: skipping bad: summary.final.clean_acc: expected a number "
        "or null, got '0.5'"]


def test_a_failed_trial_keeps_its_checkpoint_resumes_and_force_restarts(
        write_spec, run_cli, tmp_path, monkeypatch):
    import patchbench.train.trainer as trainer

    spec = tiny_spec(arms=[tiny_spec()["arms"][1]], patch=None)
    path, out = write_spec(spec), tmp_path / "out"
    real = trainer.TrialRun.train_epoch

    def fails_in_epoch_2(self, *args, **kwargs):
        if self.epoch == 1:
            raise OSError("transient: the disk went away")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(trainer.TrialRun, "train_epoch", fails_in_epoch_2)
    code, _, err = run_cli("run", path, "--out", out)
    assert code == 1 and "transient" in err, err
    [ckpt] = (out / "checkpoints").rglob("*.pt")
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1  # kept
    monkeypatch.setattr(trainer.TrialRun, "train_epoch", real)
    code, _, err = run_cli("run", path, "--out", out)
    assert code == 0 and "resuming after epoch 1" in err
    record_ = stored(out)["wrn-10-1/small_lr/none/seed0"]
    assert record_["status"] == "completed" and record_["resumed_after_epoch"] == 1
    assert not ckpt.exists()
    # --force starts a failed trial afresh, even with its checkpoint there
    monkeypatch.setattr(trainer.TrialRun, "train_epoch", fails_in_epoch_2)
    run_cli("run", path, "--out", out, "--force")
    assert ckpt.exists()
    monkeypatch.setattr(trainer.TrialRun, "train_epoch", real)
    code, _, err = run_cli("run", path, "--out", out, "--force")
    assert code == 0 and "resuming" not in err
    assert "resumed_after_epoch" not in stored(out)["wrn-10-1/small_lr/none/seed0"]
