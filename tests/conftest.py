from __future__ import annotations

import os
import sys


def _pin_xdist_worker() -> None:
    """Under pytest-xdist (``-n``), each worker keeps to its own share of the cores: two
    workers whose torch each spins on every core are many times slower than one (OpenMP),
    and the trials, subprocesses and Ray workers a test starts size their threads from the
    affinity they inherit (``available_cores``)."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not worker or not count or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    n, i = int(count), int(worker.removeprefix("gw"))
    if len(cores) >= n:
        os.sched_setaffinity(0, cores[i::n])


_pin_xdist_worker()  # before torch is imported: OpenMP sizes its pool from the affinity
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from patchbench import cli

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def tiny_spec(**overrides: Any) -> dict[str, Any]:
    """A grid that trains in a couple of seconds on synthetic images."""
    spec = {
        "name": "tiny", "version": 1,
        "dataset": {"name": "synthetic", "params": {"n_train": 256, "n_test": 100}},
        "patch": {"name": "lwm", "params": {"sep": 0.3}},
        "architectures": [{"name": "wrn", "params": {"depth": 10, "width": 1}}],
        "arms": [
            {"name": "large_lr", "optimizer": {"lr": 0.1},
             "schedule": {"name": "multistep", "params": {"milestones": [2], "factor": 0.04}},
             "control": True},
            {"name": "small_lr", "optimizer": {"lr": 0.004},
             "regularizers": [{"name": "act_noise", "params": {"anneal_epoch": 2}}]},
        ],
        "training": {"epochs": 2, "batch_size": 64},
        "evaluation": {"metrics": ["clean_acc", "mixed_acc", "patch_only_acc",
                                   "patch_follow_rate", "conflict_clean_acc"],
                       "batch_size": 100},
        "seeds": [0],
    }
    spec.update(overrides)
    return spec


@pytest.fixture
def write_spec(tmp_path: Path):
    def write(data: dict[str, Any] | str, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
        return path
    return write


@pytest.fixture
def run_cli(capsys):
    """Run the CLI in-process; return (exit status, stdout, stderr)."""
    def run(*args: str) -> tuple[int, str, str]:
        try:
            code = cli.main([str(a) for a in args])
        except SystemExit as exc:  # argparse usage errors
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err
    return run


SHIPPED_PLUGINS = "backdoors,example,availability"

BOOM_PLUGIN = '''
from patchbench import hookimpl
from patchbench.components import Architecture


class Boom(Architecture):
    """Fails to build, as a buggy third-party model would."""

    name = "boom"

    def build(self, num_classes, image_shape):
        raise RuntimeError("no memory for this model")


@hookimpl
def register_architectures(register):
    register(Boom)
'''
"""A third-party plugin module whose architecture raises: a bug, not bad input."""


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch):
    """Every test builds its own registry, of the core alone: the plugin distributions
    shipped in plugins/ have their own tests, and the core must work without them."""
    import patchbench.plugins as plugins

    monkeypatch.setattr(plugins, "_cached", None)
    monkeypatch.setenv(plugins.DISABLE_ENV, SHIPPED_PLUGINS)


@pytest.fixture
def fake_dist(tmp_path: Path, monkeypatch):
    """Install a third-party plugin distribution on sys.path, as pip would lay it out."""
    def make(dist: str, version: str, modules: dict[str, str]) -> None:
        for module in modules:  # a module of this name imported by an earlier test
            monkeypatch.delitem(sys.modules, module, raising=False)
        site = tmp_path / "site"
        site.mkdir(exist_ok=True)
        info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(
            "[patchbench]\n" + "".join(f"{m} = {m}\n" for m in modules))
        for module, source in modules.items():
            (site / f"{module}.py").write_text(textwrap.dedent(source))
        monkeypatch.syspath_prepend(str(site))
    return make


def without_times(record: dict[str, Any]) -> list[dict[str, Any]]:
    """A record's history without its wall times: what another executor must reproduce."""
    return [{k: v for k, v in row.items() if k != "time_s"} for row in record["history"]]


def train_locally(tmp_path_factory, spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``spec`` trained by the local executor in a fresh directory: records by trial key."""
    from patchbench.plugins import build_registry
    from patchbench.run import run_spec
    from patchbench.spec import load_spec

    from .test_cli import stored

    tmp = tmp_path_factory.mktemp("local")
    (tmp / "spec.yaml").write_text(yaml.safe_dump(spec))
    registry = build_registry()
    assert run_spec(load_spec(tmp / "spec.yaml", [], registry), registry, tmp / "out") == 0
    return stored(tmp / "out")

