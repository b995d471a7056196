"""Sweeps (``sweep:`` in a spec) and the phase diagrams drawn from them."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import yaml

import patchbench.plugins as plugins
from patchbench.errors import PatchbenchError
from patchbench.results.leaderboard import build_boards
from patchbench.results.phase import phases
from patchbench.results.report.sweeps import sweep_view
from patchbench.run import run_spec
from patchbench.run.driver import select
from patchbench.spec import load_spec, spec_hash
from patchbench.store import load_records
from patchbench.spec import plan
from patchbench.spec.sweep import variant_name

from .conftest import SHIPPED_PLUGINS, tiny_spec

LR = "arms.small_lr.optimizer.lr"
LR_A = "arms.a.optimizer.lr"


def swept_tiny(**sweep) -> dict:
    return tiny_spec(sweep=sweep or {LR: [0.01, 0.1]})


def test_expansion_names_variants_and_plans_unswept_arms_once(write_spec):
    spec = load_spec(write_spec(swept_tiny(**{
        LR: [0.01, 0.1], "arms.small_lr.schedule.params.milestones": [[2]],
        "arms.small_lr.schedule.name": ["multistep"]})))
    planned = plan(spec, plugins.get_registry())
    assert [t.key for _, t in planned] == [
        "wrn-10-1/large_lr/lwm/seed0", "wrn-10-1/large_lr/none/seed0",
        "wrn-10-1/small_lr[lr=0.01,milestones=[2],name=multistep]/lwm/seed0",
        "wrn-10-1/small_lr[lr=0.1,milestones=[2],name=multistep]/lwm/seed0"]
    # Each trial trains with its combination's resolved spec; the unswept arm with the spec
    # as written.
    (s0, t0), _, (s1, t1), (s2, t2) = planned
    assert s0.sweep == {} and t0.sweep == {} and t0.arm.optimizer.lr == 0.1
    assert [t.arm.optimizer.lr for t in (t1, t2)] == [0.01, 0.1]
    assert t2.arm.schedule.params == {"milestones": [2], "factor": 0.1}
    assert s2.arms[1].optimizer.lr == 0.1 and s2.arms[0].optimizer.lr == 0.1
    assert t1.sweep == {LR: 0.01, "arms.small_lr.schedule.params.milestones": [2],
                        "arms.small_lr.schedule.name": "multistep"}


def test_a_field_outside_the_arms_changes_every_arm(write_spec):
    spec = load_spec(write_spec(swept_tiny(**{"training.batch_size": [32, 64]})))
    planned = plan(spec, plugins.get_registry())
    assert [t.key for _, t in planned] == [
        "wrn-10-1/large_lr[batch_size=32]/lwm/seed0", "wrn-10-1/large_lr[batch_size=32]/none/seed0",
        "wrn-10-1/large_lr[batch_size=64]/lwm/seed0", "wrn-10-1/large_lr[batch_size=64]/none/seed0",
        "wrn-10-1/small_lr[batch_size=32]/lwm/seed0", "wrn-10-1/small_lr[batch_size=64]/lwm/seed0"]
    assert [s.training.batch_size for s, _ in planned] == [32, 32, 64, 64, 32, 64]


def test_short_keys_use_enough_of_the_path_to_tell_fields_apart():
    name = variant_name("a", {"arms.a.optimizer.lr": 0.01, "arms.a.sam.lr": 0.1,
                              "training.batch_size": 64})
    assert name == "a[optimizer.lr=0.01,sam.lr=0.1,batch_size=64]"
    assert variant_name("a", {"x.milestones": [7, 14], "x.flag": True, "x.s": "a/b c"}) \
        == "a[milestones=[7,14],flag=true,s=a_b_c]"


def test_only_patterns_match_variant_names_literally(write_spec):
    spec = load_spec(write_spec(swept_tiny()))
    trials = [t for _, t in plan(spec, plugins.get_registry())]
    chosen = select(trials, ["*/small_lr[lr=0.1]/*"], "spec")
    assert [t.key for t in chosen] == ["wrn-10-1/small_lr[lr=0.1]/lwm/seed0"]
    assert len(select(trials, ["*/small_lr*"], "spec")) == 2


def test_validate_prints_trials_and_the_sweep(write_spec, run_cli):
    path = write_spec(swept_tiny(**{LR: [0.01, 0.1, 0.2], "training.batch_size": [32, 64]}))
    code, out, err = run_cli("validate", path)
    assert code == 0, err
    assert out.splitlines() == [
        f"{path}: ok (tiny v1: 10 trials, 2 epochs each; sweep: 2 fields, 6 combinations)",
        "arms: large_lr[batch_size=32], large_lr[batch_size=64], "
        "small_lr[lr=0.01,batch_size=32], small_lr[lr=0.01,batch_size=64], "
        "small_lr[lr=0.1,batch_size=32], small_lr[lr=0.1,batch_size=64], "
        "small_lr[lr=0.2,batch_size=32], small_lr[lr=0.2,batch_size=64]"]


def test_set_adds_a_swept_path_whose_key_holds_dots(write_spec, run_cli):
    code, out, err = run_cli("validate", write_spec(tiny_spec()), "--set",
                             f"sweep.{LR}=[0.01,0.1]")
    assert code == 0, err
    assert "4 trials, 2 epochs each; sweep: 1 field, 2 combinations" in out


def test_the_hash_covers_the_sweep_and_no_sweep_keeps_it(write_spec):
    plain = spec_hash(load_spec(write_spec(tiny_spec(), "a.yaml")))
    assert plain == "c96244eec2f25b20"  # as before sweeps existed
    assert spec_hash(load_spec(write_spec(tiny_spec(sweep={}), "b.yaml"))) == plain
    swept = spec_hash(load_spec(write_spec(swept_tiny(), "c.yaml")))
    other = spec_hash(load_spec(write_spec(swept_tiny(**{LR: [0.01, 0.2]}), "d.yaml")))
    assert len({plain, swept, other}) == 3


@pytest.mark.parametrize("sweep, line", [
    ({LR: [0.01, -1]}, f"sweep.{LR}[1]: Input should be greater than 0 (got -1)"),
    ({"training.epoch": [1, 2]}, "sweep.training.epoch[0]: unknown key; allowed: epochs, "
     "batch_size, precision, channels_last, device, threads, deterministic"),
    ({"arms.nope.optimizer.lr": [0.1]},
     "sweep.arms.nope.optimizer.lr: no item named 'nope' at arms.nope"),
    ({"arms[1].optimizer.momentum": [0.5, 2]},
     "sweep.arms[1].optimizer.momentum[1]: Input should be less than 1 (got 2)"),
    ({LR: []}, f"sweep.{LR}: an empty list; allowed: a list of one value or more"),
    ({LR: 0.1}, f"sweep.{LR}: Input should be a valid list (got 0.1)"),
    ({"seeds": [[1]]}, "sweep.seeds: cannot be swept: the seeds (every trial runs every seed: "
     "list them in `seeds`)"),
    ({"patch.params.sep": [0.1, "x"]}, "sweep.patch.params.sep[1]: Input should be a valid "
     "number, unable to parse string as a number (got 'x')"),
    ({"arms.small_lr.schedule.params.milestones": [[1]],
      "arms.small_lr.schedule.name": ["multistep"]},
     "sweep: the combination arms.small_lr.schedule.params.milestones=[1], "
     "arms.small_lr.schedule.name=multistep: arms[1].schedule.params.milestones: milestones "
     "are 1-based epochs and must be >= 2 (got [1])"),
])
def test_bad_sweeps_are_one_line_naming_the_value(write_spec, run_cli, sweep, line):
    path = write_spec(tiny_spec(sweep=sweep))
    code, out, err = run_cli("validate", path)
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines() == [f"patchbench: error: {path}: {line}"]


# ---------------------------------------------------------------- a swept run

SWEPT_RUN = {
    "name": "swept", "version": 1,
    "dataset": {"name": "synthetic", "params": {"n_train": 64, "n_test": 50}},
    "patch": {"name": "lwm", "params": {"sep": 0.3}},
    "architectures": [{"name": "wrn", "params": {"depth": 10, "width": 1}}],
    "arms": [{"name": "a", "optimizer": {"lr": 0.05}, "control": True}],
    "training": {"epochs": 1, "batch_size": 32, "threads": 1},
    "evaluation": {"metrics": ["clean_acc", {"name": "patch_only_acc", "params": {"n": 50}}]},
    "seeds": [0, 1],
    "sweep": {"arms.a.optimizer.lr": [0.02, 0.1], "training.batch_size": [32, 64]},
}


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> tuple[Path, list[dict], dict[str, int]]:
    """The grid above, trained once: 2 LRs x 2 batch sizes x (patched, control) x 2 seeds;
    and, alone, the point lr 0.1, batch 64 of the same spec without the sweep."""
    tmp = tmp_path_factory.mktemp("swept")
    steps: dict[str, int] = {}

    def on_event(event: dict) -> None:
        if event["type"] == "steps":
            steps[event["key"]] = event["total"]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plugins, "_cached", None)
        mp.setenv(plugins.DISABLE_ENV, SHIPPED_PLUGINS)
        (tmp / "swept.yaml").write_text(yaml.safe_dump(SWEPT_RUN))
        registry = plugins.get_registry()
        spec = load_spec(tmp / "swept.yaml", registry=registry)
        assert run_spec(spec, registry, tmp / "out", on_event=on_event) == 0
        plain = {k: v for k, v in SWEPT_RUN.items() if k != "sweep"}
        plain["arms"] = [{**plain["arms"][0], "optimizer": {"lr": 0.1}}]
        plain["training"] = {**plain["training"], "batch_size": 64}
        (tmp / "plain.yaml").write_text(yaml.safe_dump(plain))
        assert run_spec(load_spec(tmp / "plain.yaml", registry=registry), registry,
                        tmp / "plain", only=["*/lwm/seed0"]) == 0
    return tmp, load_records([tmp / "out"]), steps


def test_records_carry_their_swept_values_and_trained_with_them(swept):
    tmp, records, steps = swept
    assert len(records) == 16 and all(r["status"] == "completed" for r in records)
    by_key = {r["key"]: r for r in records}
    r = by_key["wrn-10-1/a[lr=0.02,batch_size=64]/none/seed1"]
    assert r["arm"] == "a[lr=0.02,batch_size=64]"
    assert r["sweep"] == {"arms.a.optimizer.lr": 0.02, "training.batch_size": 64}
    for r in records:  # the LR the optimizer used is the swept one
        assert [h["lr"] for h in r["history"]] == [r["sweep"]["arms.a.optimizer.lr"]]
    # 64 training images: 2 steps at batch 32, 1 at batch 64.
    assert {k: v for k, v in steps.items() if k.endswith("lwm/seed0")} == {
        "wrn-10-1/a[lr=0.02,batch_size=32]/lwm/seed0": 2,
        "wrn-10-1/a[lr=0.02,batch_size=64]/lwm/seed0": 1,
        "wrn-10-1/a[lr=0.1,batch_size=32]/lwm/seed0": 2,
        "wrn-10-1/a[lr=0.1,batch_size=64]/lwm/seed0": 1}
    assert len({r["spec_hash"] for r in records}) == 1
    assert records[0]["spec"]["sweep"] == SWEPT_RUN["sweep"]
    ckpts = tmp / "out" / "checkpoints"
    assert not ckpts.exists() or not any(ckpts.rglob("*.pt"))


def test_a_point_of_a_sweep_trains_as_the_spec_without_the_sweep(swept):
    tmp, records, _ = swept
    point = next(r for r in records if r["key"] == "wrn-10-1/a[lr=0.1,batch_size=64]/lwm/seed0")
    [alone] = load_records([tmp / "plain"])
    assert "sweep" not in alone
    strip = [{k: v for k, v in h.items() if k != "time_s"} for h in alone["history"]]
    assert [{k: v for k, v in h.items() if k != "time_s"} for h in point["history"]] == strip


def test_the_leaderboard_keeps_each_swept_point_apart(swept):
    _, records, _ = swept
    [board] = build_boards(records)
    assert [(r.arm, r.patch, r.completed) for r in board.rows] == [
        (f"a[lr={lr},batch_size={bs}]", patch, 2)
        for lr in (0.02, 0.1) for bs in (32, 64) for patch in ("lwm", "none")]
    # Hand-made records without variant names are not pooled either.
    plain = [{**r, "arm": "a"} for r in records]
    assert len(build_boards(plain)[0].rows) == 8


def _by_hand(records: list[dict], lr: float, bs: int, value) -> tuple[float, float]:
    vals = [value(r, records) for r in records
            if r["sweep"] == {"arms.a.optimizer.lr": lr, "training.batch_size": bs}
            and r["patch"] == "lwm"]
    return statistics.fmean(vals), statistics.stdev(vals)


def _cost(r: dict, records: list[dict]) -> float:
    control = next(c for c in records if c["patch"] == "none" and c["seed"] == r["seed"]
                   and c["sweep"] == r["sweep"])
    return control["summary"]["final"]["clean_acc"] - r["summary"]["final"]["clean_acc"]


@pytest.mark.parametrize("metric, value", [
    ("clean_acc", lambda r, _: r["summary"]["final"]["clean_acc"]),
    ("patch_cost", _cost),
])
def test_pivot_cells_are_means_over_seeds(swept, run_cli, metric, value):
    tmp, records, _ = swept
    code, out, err = run_cli("leaderboard", tmp / "out", "--pivot", "lr", "batch_size",
                             "--metric", metric, "--format", "json")
    assert code == 0, err
    cells = {(c["x"], c["y"]): c for table in json.loads(out) for c in table["rows"]
             if c["patch"] == "lwm"}
    assert sorted(cells) == [(0.02, 32), (0.02, 64), (0.1, 32), (0.1, 64)]
    for (lr, bs), cell in cells.items():
        mean, std = _by_hand(records, lr, bs, value)
        assert cell["mean"] == pytest.approx(mean, abs=1e-12)
        assert cell["std"] == pytest.approx(std, abs=1e-12)
        assert cell["n"] == 2 and cell["x_field"] == "arms.a.optimizer.lr"


def test_pivot_table_rows_are_x_and_columns_y(swept, run_cli):
    tmp, records, _ = swept
    code, out, err = run_cli("leaderboard", tmp / "out", "--pivot", "batch_size", "lr",
                             "--metric", "clean_acc", "--format", "md")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "### swept v1 / wrn-10-1 / a / lwm: clean ↑"
    assert lines[2] == "| training.batch_size \\ arms.a.optimizer.lr | 0.02 | 0.1 |"
    mean, std = _by_hand(records, 0.1, 32, lambda r, _: r["summary"]["final"]["clean_acc"])
    assert lines[4].startswith("| 32 | ")
    assert lines[4].endswith(f" | {mean:.3f} ± {std:.3f} (n=2) |")


def test_learned_epochs_that_never_came_are_counted_not_averaged(swept, run_cli, tmp_path):
    from patchbench.store import write_export

    _, records, _ = swept
    edited = json.loads(json.dumps(records))
    for r in edited:
        learned = {(0.1, 32, 0): 1, (0.1, 32, 1): None, (0.1, 64, 0): 1, (0.1, 64, 1): 1}
        r["summary"]["patch_learned_epoch"] = learned.get(
            (r["sweep"]["arms.a.optimizer.lr"], r["sweep"]["training.batch_size"], r["seed"]))
    write_export(edited, tmp_path / "edited.json")
    code, out, err = run_cli("leaderboard", tmp_path / "edited.json", "--pivot", "lr",
                             "batch_size", "--metric", "learned_epoch", "--format", "md")
    assert code == 0, err
    rows = [line for line in out.splitlines() if line.startswith("| 0.")]
    assert rows == ["| 0.02 | never | never |", "| 0.1 | 1.0 (1/2) | 1.0 ± 0.0 (n=2) |"]


def test_heatmap_writes_a_png(swept, run_cli, tmp_path):
    tmp, _, _ = swept
    out = tmp_path / "phase.png"
    code, stdout, err = run_cli("plot", tmp / "out", "--heatmap", "arms.a.optimizer.lr",
                                "batch_size", "--metric", "patch_cost", "--out", out)
    assert code == 0, err
    assert stdout.strip() == f"wrote {out} (1 heatmap: wrn-10-1 / a / lwm)"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000


@pytest.mark.parametrize("args, line", [
    (["--pivot", "lr", "momentum"], "--pivot: no arm is swept over both 'lr' and 'momentum'; "
     "swept fields: arms.a.optimizer.lr, training.batch_size"),
    (["--pivot", "lr", "batch_size", "--metric", "loss"], "--metric: unknown metric 'loss'; "
     "allowed: clean_acc, patch_only_acc, patch_cost, learned_epoch"),
    (["--pivot", "lr", "optimizer.lr"], "--pivot: 'lr' and 'optimizer.lr' are the same field "
     "(arms.a.optimizer.lr)"),
    (["--pivot", "lr", "batch_size", "--arm", "b"], "--arm: no swept arm 'b'; allowed: a"),
])
def test_bad_pivot_fields_and_metrics_are_one_line(swept, run_cli, args, line):
    tmp, _, _ = swept
    code, out, err = run_cli("leaderboard", tmp / "out", *args)
    assert code == 2
    assert err.strip().splitlines() == [f"patchbench: error: {line}"]


def test_report_heatmaps_have_one_grid_per_arm_and_metric(swept):
    _, records, _ = swept
    view = sweep_view(records)
    assert view.fields == ["arms.a.optimizer.lr", "training.batch_size"]
    assert [(m.row, m.metric, len([c for c in m.cells if c.value is not None]))
            for m in view.maps] == [("wrn-10-1 / a / lwm", "clean_acc", 4),
                                    ("wrn-10-1 / a / none", "clean_acc", 4),
                                    ("wrn-10-1 / a / lwm", "patch_only_acc", 4),
                                    ("wrn-10-1 / a / lwm", "patch_cost", 4)]


def test_a_report_heatmap_cell_is_the_pivot_cell_of_its_metric(swept):
    _, records, _ = swept
    view = sweep_view(records)
    [board] = build_boards(records)
    seen = 0
    for m in view.maps:
        [phase] = [p for p in phases(records, "lr", "batch_size", m.metric)
                   if f"{p.architecture} / {p.arm} / {p.patch}" == m.row]
        assert (m.x_field, m.y_field) == (phase.x_field, phase.y_field)
        for c in m.cells:
            pivot = phase.cells[(c.x_value, c.y_value)].cell.mean
            # and the leaderboard's own row of that point
            [row] = [r for r in board.rows if r.sweep == {
                phase.x_field: phase.values[c.x_value], phase.y_field: phase.values[c.y_value]}
                and f"/ {r.patch}" in m.row]
            assert c.value == pivot == row.cells[m.metric].mean and c.text == f"{pivot:.3f}"
            seen += 1
    assert seen == 4 * 4


def test_a_sweep_over_one_field_gives_one_column():
    from .test_report import SWEEP_RECORDS

    wd = "arms.a.optimizer.weight_decay"
    one = [{**r, "sweep": {LR_A: r["sweep"][LR_A]}} for r in SWEEP_RECORDS
           if r["sweep"][wd] == 0.0]
    found = phases(one, "lr", None, "clean_acc", flag="--pivot")
    assert [(p.patch, p.x_field, p.y_field, p.xs, p.ys) for p in found] == [
        (patch, LR_A, None, ["0.01", "0.1"], [""]) for patch in ("lwm", "none")]
    [board] = build_boards(one)
    for p in found:
        for (x, y), c in p.cells.items():
            assert y == "" and c.row.sweep == {LR_A: p.values[x]} and c.row.patch == p.patch
            [row] = [r for r in board.rows if (r.arm, r.patch) == (c.row.arm, p.patch)]
            assert c.cell.mean == row.cells["clean_acc"].mean is not None
    [cost] = phases(one, "lr", None, "patch_cost")
    assert cost.patch == "lwm" and len(cost.cells) == 2
    # a two-field sweep has no one-field diagram; the report draws one column
    with pytest.raises(PatchbenchError, match="a is also swept over " + wd):
        phases(SWEEP_RECORDS, "lr", None, "clean_acc")
    view = sweep_view(one)
    assert view.fields == [LR_A] and len(view.maps) == 4
    assert all(m.y_field is None and not m.y_ticks and len(m.cells) == 2 for m in view.maps)


def test_arms_swept_over_other_fields_get_a_note_not_a_crash():
    from .test_report import SWEEP_RECORDS

    b = [{**r, "arm": "b", "key": "b/" + r["key"], "sweep": {"arms.b.optimizer.lr": 0.1}}
         for r in SWEEP_RECORDS[:4]]
    view = sweep_view(SWEEP_RECORDS + b)  # 3 fields in all
    assert view.maps == [] and "heatmaps are drawn for sweeps over one or two" in view.note
    view = sweep_view([{**r, "sweep": {LR_A: r["sweep"][LR_A]}} for r in SWEEP_RECORDS] + b)
    assert {m.row for m in view.maps} == {"net / a / lwm", "net / a / none"}
    assert "b (over arms.b.optimizer.lr)" in view.note


def test_a_killed_swept_trial_resumes_from_its_checkpoint(write_spec, run_cli, tmp_path,
                                                          monkeypatch):
    from .test_store import kill_after_epoch_1

    small = {**tiny_spec()["arms"][1], "regularizers": []}
    spec = tiny_spec(arms=[small], sweep={LR: [0.02]}, evaluation=SWEPT_RUN["evaluation"],
                     training={"epochs": 2, "batch_size": 32, "threads": 1},
                     dataset={"name": "synthetic", "params": {"n_train": 64, "n_test": 50}})
    path, out = write_spec(spec), tmp_path / "out"
    code, err = kill_after_epoch_1(run_cli, path, out, monkeypatch)
    assert code == 130
    [ckpt] = (out / "checkpoints").rglob("*.pt")
    assert ckpt.name == "wrn-10-1__small_lr[lr=0.02]__lwm__seed0.pt"
    code, _, err = run_cli("run", path, "--out", out, "--only", "*/small_lr[lr=0.02]/*")
    assert code == 0 and "small_lr[lr=0.02]/lwm/seed0: resuming after epoch 1" in err
    [record] = load_records([out])
    assert record["resumed_after_epoch"] == 1 and [h["lr"] for h in record["history"]] == [
        0.02, 0.02]
