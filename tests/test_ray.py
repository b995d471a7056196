"""The Ray executor against a real local Ray (2 CPUs), started once for this module.

CI installs the ``ray`` extra and sets CI=true: there these tests must run, not skip."""

from __future__ import annotations

import os
import signal
import sys

import pytest

if os.environ.get("CI"):
    import ray
else:
    ray = pytest.importorskip("ray", reason="the ray extra is not installed")

from patchbench.plugins import get_registry
from patchbench.run import run_spec
from patchbench.spec import load_spec

from .conftest import BOOM_PLUGIN, train_locally, without_times, tiny_spec
from .test_cli import stored



@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local Ray whose workers see a third-party plugin distribution (``boom``)."""
    site = tmp_path_factory.mktemp("site")
    info = site / "boom_arch-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: boom-arch\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[patchbench]\nboom_arch = boom_arch\n")
    (site / "boom_arch.py").write_text(BOOM_PLUGIN)
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), old]))
    sys.path.insert(0, str(site))
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    yield
    ray.shutdown()
    sys.path.remove(str(site))
    if old is None:
        os.environ.pop("PYTHONPATH")
    else:
        os.environ["PYTHONPATH"] = old


def grid(**overrides):
    """Two trials (an arm and its no-patch control), one thread each, 4 epochs."""
    spec = tiny_spec(arms=[tiny_spec()["arms"][0]], **overrides)
    spec["dataset"]["params"]["n_train"] = 512
    spec["training"].update(epochs=4, threads=1)
    return spec


strip = without_times


@pytest.fixture(scope="module")
def local_records(tmp_path_factory):
    """The same grid through the local executor: what Ray must reproduce."""
    return train_locally(tmp_path_factory, grid())


def test_ray_gives_the_local_records(cluster, local_records, write_spec, run_cli, tmp_path):
    out = tmp_path / "out"
    code, _, err = run_cli("run", write_spec(grid()), "--out", out, "--executor", "ray",
                           "--cpus-per-trial", "1")
    assert code == 0, err
    assert "2 trials on cpu (ray executor)" in " ".join(err.split())
    records = stored(out)
    assert sorted(records) == sorted(local_records)
    for key, record in records.items():
        assert strip(record) == strip(local_records[key])
        assert record["summary"] == local_records[key]["summary"]
        assert record["spec_hash"] == local_records[key]["spec_hash"]
        assert record["executor"] == "ray" and local_records[key]["executor"] == "local"
        assert record["host"] and record["threads"] == 1 and record["device"] == "cpu"


def test_a_failing_trial_is_recorded_and_the_rest_finish(cluster, write_spec, run_cli,
                                                         tmp_path):
    spec = grid(architectures=["boom", {"name": "wrn", "params": {"depth": 10, "width": 1}}])
    spec["training"]["epochs"] = 1
    out = tmp_path / "out"
    code, _, err = run_cli("run", write_spec(spec), "--out", out, "--executor", "ray")
    assert code == 1 and "2 of 4 trials did not complete" in err
    records = stored(out)
    for key in ("boom/large_lr/lwm/seed0", "boom/large_lr/none/seed0"):
        assert records[key]["status"] == "failed"
        assert records[key]["error"] == "RuntimeError: no memory for this model"
        assert "Traceback" in records[key]["traceback"] and "boom_arch.py" in \
            records[key]["traceback"]
    assert "Traceback" in err  # a plugin's bug keeps its traceback on the driver's terminal
    assert all(records[k]["status"] == "completed" for k in records if k.startswith("wrn"))


def test_a_killed_worker_is_retried_and_resumes_from_its_checkpoint(
        cluster, local_records, write_spec, tmp_path):
    registry = get_registry()
    spec = load_spec(write_spec(grid()), ["execution.executor=ray"], registry)
    victim, pids, killed = "wrn-10-1/large_lr/lwm/seed0", {}, []

    def kill_after_epoch_1(event):
        if event["type"] == "start":
            pids[event["key"]] = event["pid"]
        if event["type"] == "epoch" and event["key"] == victim and not killed:
            killed.append(pids[victim])
            os.kill(pids[victim], signal.SIGKILL)

    assert run_spec(spec, registry, tmp_path / "out", on_event=kill_after_epoch_1) == 0
    assert killed
    record = stored(tmp_path / "out")[victim]
    assert record["status"] == "completed" and record["resumed_after_epoch"] >= 1
    assert strip(record) == strip(local_records[victim])  # the uninterrupted numbers
    assert record["summary"] == local_records[victim]["summary"]
    assert not list((tmp_path / "out" / "checkpoints").rglob("*.pt"))


def test_ctrl_c_cancels_ray_tasks_and_a_local_rerun_resumes_them(
        cluster, local_records, write_spec, run_cli, tmp_path):
    registry = get_registry()
    path, out = write_spec(grid()), tmp_path / "out"
    spec = load_spec(path, ["execution.executor=ray"], registry)

    def ctrl_c_after_epoch_1(event):
        if event["type"] == "epoch":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_spec(spec, registry, out, on_event=ctrl_c_after_epoch_1)
    assert list((out / "checkpoints").rglob("*.pt"))  # the cancelled trials keep them
    code, _, err = run_cli("run", path, "--out", out)  # the local executor takes over
    assert code == 0 and "resuming after epoch" in err
    records = stored(out)
    assert sorted(records) == sorted(local_records)
    for key, record in records.items():
        assert strip(record) == strip(local_records[key])


def test_a_cluster_that_is_down_is_one_line_within_30_s(write_spec, tmp_path):
    import subprocess
    import time

    env = {**os.environ, "PYTHONPATH": str(__import__("pathlib").Path(__file__).parents[1])}
    env.pop("RAY_ADDRESS", None)
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "patchbench", "run", write_spec(grid()),
                           "--out", tmp_path / "out", "--executor", "ray", "--address",
                           "127.0.0.1:1"], capture_output=True, text=True, env=env,
                          timeout=60)
    assert time.monotonic() - start < 30
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("patchbench: error:") and "127.0.0.1:1" in lines[0]


def test_sigterm_stops_a_ray_run_like_ctrl_c_and_a_rerun_resumes(write_spec, run_cli,
                                                                 tmp_path):
    from .test_faults import (assert_interrupted_then_resumed,
                              run_until_a_checkpoint_then_sigterm, sigterm_grid)

    path, out = write_spec(sigterm_grid()), tmp_path / "out"
    code, err = run_until_a_checkpoint_then_sigterm(path, out, "--executor", "ray",
                                                    "--cpus-per-trial", "1")
    assert_interrupted_then_resumed(code, err, path, out, run_cli)
