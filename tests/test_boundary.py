"""Plugin mistakes become one line naming the plugin, its distribution and the component:
at registration (``validate``, ``list``, ``plugins``) or where the core receives a value."""

from __future__ import annotations

import pytest

from patchbench.plugins import build_registry

from .conftest import tiny_spec
from .test_cli import stored

ORIGIN = "(plugin 'bad_plugin', bad-dist 0.1)"


def tiny(**overrides):
    """One trial of one epoch on 8x8 images: seconds."""
    spec = tiny_spec(dataset={"name": "synthetic",
                              "params": {"n_train": 64, "n_test": 20, "image_size": 8}},
                     patch={"name": "lwm", "params": {"size": 3}},
                     arms=[{"name": "a", "optimizer": {"lr": 0.05}}],
                     training={"epochs": 1, "batch_size": 32})
    spec.update(overrides)
    return spec


PATCH = '''
import torch
from patchbench import hookimpl
from patchbench.builtin.patches import LWMPatch

class Bad(LWMPatch):
    """A patch generator with a mistake."""
    name = "badpatch"
    def apply(self, x, y, idx, split, gen):
        x, y = super().apply(x, y, idx, split, gen)
        return {out}, y

@hookimpl
def register_patches(register):
    register(Bad)
'''


@pytest.mark.parametrize("out, says", [
    ("x[:, :, 1:, 1:]", "apply returned images (64, 3, 7, 7) float32 on cpu for input "
                        "(64, 3, 8, 8) float32 on cpu; allowed: the same shape, dtype and device"),
    ("x.double()", "apply returned images (64, 3, 8, 8) float64"),
    ("x.half()", "apply returned images (64, 3, 8, 8) float16"),
])
def test_a_patch_that_changes_images_fails_its_trial_in_one_line(out, says, fake_dist,
                                                                  write_spec, run_cli, tmp_path):
    fake_dist("bad-dist", "0.1", {"bad_plugin": PATCH.replace("{out}", out)})
    spec = tiny(patch={"name": "badpatch", "params": {"size": 3}})
    code, _, err = run_cli("run", write_spec(spec), "--out", tmp_path / "o")
    assert code == 1 and "Traceback" not in err
    record = stored(tmp_path / "o")["wrn-10-1/a/badpatch/seed0"]
    assert record["status"] == "failed" and record["traceback"] is None
    assert record["error"].startswith(f"PluginError: patch generator 'badpatch' {ORIGIN}: ")
    assert says in record["error"]


SCHEDULE = '''
import torch
from patchbench import hookimpl
from patchbench.components import Schedule

class Bad(Schedule):
    """A schedule with a mistake."""
    name = "badlr"
    def lr(self, step, steps_per_epoch, total_steps, base_lr):
        return {lr}

@hookimpl
def register_schedules(register):
    register(Bad)
'''


@pytest.mark.parametrize("lr, says", [
    ("-base_lr", "lr(step=0) returned -0.05; allowed: a finite float >= 0"),
    ("float('nan')", "lr(step=0) returned nan; allowed: a finite float >= 0"),
    ("torch.tensor(base_lr)", "lr(step=0) returned Tensor tensor(0.0500); allowed"),
])
def test_a_bad_learning_rate_is_the_schedules_fault(lr, says, fake_dist, write_spec, run_cli,
                                                    tmp_path):
    fake_dist("bad-dist", "0.1", {"bad_plugin": SCHEDULE.replace("{lr}", lr)})
    spec = tiny(arms=[{"name": "a", "optimizer": {"lr": 0.05}, "schedule": "badlr"}])
    code, _, err = run_cli("run", write_spec(spec), "--out", tmp_path / "o")
    assert code == 1 and "Traceback" not in err
    record = stored(tmp_path / "o")["wrn-10-1/a/lwm/seed0"]
    assert record["status"] == "failed"  # not "completed", not "diverged"
    assert record["error"].startswith(f"PluginError: schedule 'badlr' {ORIGIN}: {says}")


METRIC = '''
import torch
from patchbench import hookimpl
from patchbench.components import Metric

class Bad(Metric):
    """A metric with a mistake."""
    name = "badmetric"
    def compute(self, ctx):
        return {value}

@hookimpl
def register_metrics(register):
    register(Bad)
'''


@pytest.mark.parametrize("value, says", [
    ("1.9", "compute returned 1.9; allowed: a finite float in [0, 1]"),
    ("float('nan')", "compute returned nan; allowed"),
    ("None", "compute returned None; allowed: a finite float in [0, 1] (set may_be_undefined"),
    ("1", "compute returned int 1; allowed"),
    ("torch.tensor(0.5)", "compute returned Tensor tensor(0.5000); allowed"),
    ("'0.5'", "compute returned str '0.5'; allowed"),
])
def test_a_bad_metric_value_is_the_metrics_fault(value, says, fake_dist, write_spec, run_cli,
                                                 tmp_path):
    fake_dist("bad-dist", "0.1", {"bad_plugin": METRIC.replace("{value}", value)})
    spec = tiny(evaluation={"metrics": ["clean_acc", "badmetric"]})
    code, _, err = run_cli("run", write_spec(spec), "--out", tmp_path / "o")
    assert code == 1 and "Traceback" not in err
    record = stored(tmp_path / "o")["wrn-10-1/a/lwm/seed0"]
    assert record["status"] == "failed"
    assert record["error"].startswith(f"PluginError: metric 'badmetric' {ORIGIN}: {says}")
    # the store stays readable: the leaderboard shows the failed trial
    code, out, err = run_cli("leaderboard", tmp_path / "o")
    assert code == 0 and "1 failed" in out


BROKEN = {
    "default": ('''
from pydantic import Field
from patchbench.components import Params, Schedule

class P(Params):
    factor: float = Field(2.0, le=1)

class Broken(Schedule):
    """Its default breaks its own constraint."""
    name = "broken"
    Params = P
    def lr(self, step, steps_per_epoch, total_steps, base_lr):
        return base_lr
''', "schedules", "its Params default breaks its own constraint: factor: Input should be "
                    "less than or equal to 1 (got 2.0)"),
    "abstract": ('''
from patchbench.components import Schedule

class Broken(Schedule):
    """It forgot lr."""
    name = "broken"
''', "schedules", "it does not implement the abstract method(s) lr"),
    "noname": ('''
from patchbench.components import Schedule

class Broken(Schedule):
    """It has no name."""
    def lr(self, step, steps_per_epoch, total_steps, base_lr):
        return base_lr
''', "schedules", "it has no `name`"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_component_that_breaks_its_interface_is_reported_by_validate_and_list(
        case, fake_dist, write_spec, run_cli):
    source, kind, says = BROKEN[case]
    fake_dist("bad-dist", "0.1", {"bad_plugin": source + '''
from patchbench import hookimpl

@hookimpl
def register_schedules(register):
    register(Broken)
'''})
    name = "Broken" if case == "noname" else "broken"
    code, out, err = run_cli("list", kind)
    assert code == 0 and "Traceback" not in err
    assert err.count("\n") == 1, err
    assert err.startswith(f"patchbench: warning: schedule {name!r} {ORIGIN}: {says}"), err
    assert "unusable" in out
    spec = tiny(arms=[{"name": "a", "optimizer": {"lr": 0.05}, "schedule": name}])
    code, _, err = run_cli("validate", write_spec(spec))
    assert code == 2 and "Traceback" not in err
    assert f"arms[0].schedule.name: schedule {name!r} {ORIGIN} cannot be used: {says}" \
        in err.splitlines()[-1]


def test_a_misspelled_hook_is_reported(fake_dist, run_cli):
    fake_dist("bad-dist", "0.1", {"bad_plugin": '''
from patchbench import hookimpl
from patchbench.builtin.patches import LWMPatch

class Mine(LWMPatch):
    """Mine."""
    name = "mine"

@hookimpl
def register_patchs(register):
    register(Mine)
'''})
    warnings = []
    registry = build_registry(warn=warnings.append)
    assert registry.plugins["bad_plugin"].unknown_hooks == ("register_patchs",)
    assert warnings == ["plugin 'bad_plugin' (bad-dist): register_patchs is not a patchbench "
                        "hook (did you mean register_patches?); it is never called. The "
                        "hooks: register_datasets, register_patches, register_architectures, "
                        "register_schedules, register_metrics, register_regularizers, "
                        "register_optimizers, register_augmentations, register_perturbations, "
                        "register_trackers"]
    code, out, _ = run_cli("plugins")
    assert code == 0 and "register_patchs" in out and "never called" in out


def test_a_failing_builtin_plugin_is_an_error(monkeypatch, tmp_path):
    import patchbench.plugins as plugins

    (tmp_path / "pb_broken_builtin.py").write_text("raise ImportError('half-installed')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugins, "DEFAULT_PLUGINS",
                        plugins.DEFAULT_PLUGINS + ("pb_broken_builtin",))
    with pytest.raises(ImportError, match="half-installed"):
        build_registry(warn=lambda m: None)
