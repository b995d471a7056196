"""The Slurm executor against a real one-node Slurm, started once for the session by
``tests/slurm/start_slurm.sh`` (munged, slurmctld, slurmd; 2 CPUs here) and stopped after.

Where Slurm cannot run (not root, no packages and no apt, daemons that do not start) the
tests that need it are skipped and say why; under CI=true (``.ci/run``, which installs the
``slurm`` extra and Debian's packages) they fail instead. The grids are the tiniest that
train a few epochs: every job is a new Python process that imports torch, which is most of
what a trial costs here.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

if os.environ.get("CI"):
    __import__("submitit")  # CI installs the slurm extra: there its absence fails the tests
else:
    pytest.importorskip("submitit", reason="the slurm extra is not installed")

from patchbench.plugins import get_registry
from patchbench.run import run_spec
from patchbench.spec import load_spec

from .conftest import BOOM_PLUGIN, train_locally, without_times, REPO, tiny_spec
from .test_cli import stored

SCRIPTS = REPO / "tests" / "slurm"
VICTIM = "wrn-10-1/large_lr/lwm/seed0"


def unusable(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"Slurm must run under CI: {why}")
    pytest.skip(f"no Slurm here: {why}")


@pytest.fixture(scope="session")
def slurm():
    """This machine's one-node Slurm, started for the tests (and stopped after them) unless
    one was running already; the node's name."""
    if os.geteuid() != 0:
        unusable("starting slurmctld and slurmd needs root")
    try:
        done = subprocess.run(["bash", str(SCRIPTS / "start_slurm.sh")], capture_output=True,
                              text=True, timeout=600)
    except subprocess.TimeoutExpired:
        unusable("start_slurm.sh did not finish within 10 minutes")
    if done.returncode != 0:
        unusable(f"start_slurm.sh failed: {(done.stderr or done.stdout).strip()[-2000:]}")
    started_here = "already answers" not in done.stdout
    node = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True,
                          check=True).stdout.split()[0]
    yield node
    if started_here:
        subprocess.run(["bash", str(SCRIPTS / "stop_slurm.sh")], capture_output=True,
                       timeout=60)


@pytest.fixture(scope="module")
def boom_site(tmp_path_factory):
    """A third-party plugin distribution (``boom``) on PYTHONPATH, which sbatch exports to
    the jobs."""
    site = tmp_path_factory.mktemp("site")
    info = site / "boom_arch-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: boom-arch\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[patchbench]\nboom_arch = boom_arch\n")
    (site / "boom_arch.py").write_text(BOOM_PLUGIN)
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), old]))
    sys.path.insert(0, str(site))
    yield
    sys.path.remove(str(site))
    if old is None:
        os.environ.pop("PYTHONPATH")
    else:
        os.environ["PYTHONPATH"] = old


def grid(**overrides):
    """Two trials (an arm and its no-patch control), one thread each, 6 epochs: the
    requeue test's signal, sent when the driver sees epoch 1 (it polls every 0.5 s), must
    reach the job well before the trial ends, on a fast machine too."""
    spec = tiny_spec(**{"arms": [tiny_spec()["arms"][0]], **overrides})
    spec["dataset"]["params"]["n_train"] = 512
    spec["training"].update(epochs=6, threads=1)
    return spec


strip = without_times


@pytest.fixture(scope="module")
def local_records(tmp_path_factory):
    """The same grid through the local executor: what Slurm must reproduce."""
    return train_locally(tmp_path_factory, grid())


def jobs_file(out: Path) -> dict[str, dict]:
    (path,) = out.glob("slurm/*/jobs.json")
    return json.loads(path.read_text())


def queue_states(job_ids) -> dict[str, str]:
    from patchbench.run.slurm_queue import queue

    return {job_id: state.state for job_id, state in queue(job_ids).items()}


def settled(job_ids, timeout: float = 30) -> set[str]:
    """The jobs' states once none is still active."""
    from patchbench.run.slurm_queue import ACTIVE

    deadline = time.monotonic() + timeout
    while set(queue_states(job_ids).values()) & ACTIVE and time.monotonic() < deadline:
        time.sleep(0.2)
    return set(queue_states(job_ids).values())


def driver(spec_path, out, *flags) -> subprocess.Popen:
    """``patchbench run`` in a subprocess, with SIGINT as a terminal's Ctrl-C delivers it
    (a shell may have started the tests with SIGINT ignored)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen(
        [sys.executable, "-m", "patchbench", "run", str(spec_path), "--out", str(out),
         "--executor", "slurm", *flags], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"ended before {what}: {proc.communicate()[1]}"
        assert time.monotonic() < deadline, f"no {what} within {timeout:g} s"
        time.sleep(0.1)


def test_slurm_gives_the_local_records_and_each_carries_its_job(slurm, local_records,
                                                                 write_spec, run_cli,
                                                                 tmp_path):
    out = tmp_path / "out"
    code, _, err = run_cli("run", write_spec(grid()), "--out", out, "--executor", "slurm")
    assert code == 0, err
    text = " ".join(err.split())
    assert "2 trials on cpu (slurm executor)" in text
    assert re.search(r"Slurm: 2 trials submitted as job \d+ \(an array\), 1 CPUs and 0 GPUs "
                     r"each", text), text
    records = stored(out)
    assert sorted(records) == sorted(local_records)
    for key, record in records.items():
        assert strip(record) == strip(local_records[key])  # the same numbers, bit for bit
        assert record["summary"] == local_records[key]["summary"]
        assert record["spec_hash"] == local_records[key]["spec_hash"]
        assert record["executor"] == "slurm" and record["threads"] == 1
        assert record["device"] == "cpu" and record["slurm_node"] == slurm
    ids = {r["slurm_job_id"] for r in records.values()}
    arrays = {i.split("_")[0] for i in ids}
    assert len(ids) == 2 and len(arrays) == 1 and all(re.fullmatch(r"\d+_[01]", i) for i in ids)
    assert settled(ids) == {"COMPLETED"}  # (a job may still be exiting after its result)
    assert jobs_file(out) == {}  # every job collected
    assert not list((out / "checkpoints").rglob("*.pt"))


def release_when_requeued(job_id: str, released: list[str]) -> None:
    """Slurm holds a requeued job for about two minutes (BeginTime) before it may start
    again; start it at once instead (the test is of the requeue, not of that wait)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = subprocess.run(["squeue", "-h", "-r", "-j", job_id, "-o", "%T|%r"],
                              capture_output=True, text=True).stdout.strip()
        if line == "PENDING|BeginTime":
            subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"],
                           check=True, capture_output=True)
            released.append(job_id)
            return
        time.sleep(0.2)


def test_a_job_signalled_mid_trial_is_requeued_and_ends_with_the_uninterrupted_numbers(
        slurm, local_records, write_spec, tmp_path):
    registry = get_registry()
    # A 1-minute limit: submitit takes the signal for the time limit's (not a preemption),
    # which only a Checkpointable job survives, and counts it against max_retries.
    spec = load_spec(write_spec(grid()), ["execution.executor=slurm", "execution.time=1"],
                     registry)
    job_ids, signalled, released, starts = {}, [], [], []

    def usr2_after_epoch_1(event):
        if event["type"] == "start":
            job_ids[event["key"]] = event["slurm_job_id"]
            starts.append(event)
        if event["type"] == "epoch" and event["row"]["epoch"] == 1 and not signalled:
            job_id = job_ids[event["key"]]
            signalled.append(job_id)
            # What Slurm sends before a job's time limit (submitit's --signal=USR2@90).
            subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
            threading.Thread(target=release_when_requeued, args=(job_id, released),
                             daemon=True).start()

    out = tmp_path / "out"
    assert run_spec(spec, registry, out, on_event=usr2_after_epoch_1, only=[VICTIM]) == 0
    assert signalled and released == signalled
    record, local = stored(out)[VICTIM], local_records[VICTIM]
    assert record["status"] == "completed" and 1 <= record["resumed_after_epoch"] < 6
    assert record["slurm_job_id"] == signalled[0]  # requeued, not submitted again
    assert len(starts) == 2 and starts[0]["resumed_after_epoch"] is None
    assert strip(record) == strip(local)  # the uninterrupted numbers
    assert record["summary"] == local["summary"]
    log = next(out.glob(f"slurm/*/{signalled[0]}/*_log.out")).read_text()
    assert "this job is timed-out" in log
    assert f"Requeued job {signalled[0]} (2 remaining timeouts)" in log  # not resubmitted


def test_ctrl_c_cancels_the_jobs_keeps_their_checkpoints_and_a_local_rerun_resumes(
        slurm, local_records, write_spec, run_cli, tmp_path):
    import torch

    path, out = write_spec(grid()), tmp_path / "out"
    proc = driver(path, out)
    try:
        wait_for(lambda: list(out.glob("checkpoints/*/*.pt")), proc, "a checkpoint")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=150)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "patchbench: interrupted" and "Traceback" not in err
    assert "Slurm: cancelling 2 jobs still queued or running" in " ".join(err.split())
    ids = [e["job_id"] for e in jobs_file(out).values()]
    assert len(ids) == 2
    assert set(queue_states(ids).values()) == {"CANCELLED"}
    # ... and their processes are gone (Slurm says CANCELLED while they still get SIGKILL
    # only KillWait seconds later): nothing writes a checkpoint while the rerun trains.
    alive = subprocess.run(["pgrep", "-f", f"submitit.core._submit {out}"],
                           capture_output=True, text=True).stdout.split()
    assert not alive
    kept = list(out.glob("checkpoints/*/*.pt"))
    assert kept and all(torch.load(p, weights_only=True)["epoch"] >= 1 for p in kept)
    assert stored(out) == {}
    code, _, err = run_cli("run", path, "--out", out)  # the local executor takes over
    assert code == 0, err
    assert "resuming after epoch" in err
    records = stored(out)
    assert sorted(records) == sorted(local_records)
    for key, record in records.items():
        assert strip(record) == strip(local_records[key])


def test_a_killed_driver_is_rerun_and_collects_its_jobs_without_training_them_again(
        slurm, local_records, write_spec, run_cli, tmp_path):
    path, out = write_spec(grid()), tmp_path / "out"
    proc = driver(path, out)
    try:
        wait_for(lambda: list(out.glob("checkpoints/*/*.pt")), proc, "a checkpoint")
        proc.kill()  # kill -9: no scancel, the jobs train on
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    submitted = {k: e["job_id"] for k, e in jobs_file(out).items()}
    assert len(submitted) == 2
    code, _, err = run_cli("run", path, "--out", out, "--executor", "slurm")
    assert code == 0, err
    assert "Slurm: collecting 2 trials from jobs an earlier run submitted" in " ".join(
        err.split())
    assert "submitted as job" not in err  # nothing submitted again
    records = stored(out)
    assert sorted(records) == sorted(local_records)
    for key, record in records.items():
        assert record["slurm_job_id"] == submitted[key]
        assert "resumed_after_epoch" not in record  # each trained once, start to end
        assert strip(record) == strip(local_records[key])


def test_a_failing_trial_is_recorded_with_its_traceback_and_the_rest_finish(
        slurm, boom_site, write_spec, run_cli, tmp_path):
    arm = {**tiny_spec()["arms"][0], "control": False}
    spec = grid(architectures=["boom", {"name": "wrn", "params": {"depth": 10, "width": 1}}],
                arms=[arm])
    spec["training"]["epochs"] = 1
    out = tmp_path / "out"
    code, _, err = run_cli("run", write_spec(spec), "--out", out, "--executor", "slurm")
    assert code == 1 and "1 of 2 trials did not complete" in err
    records = stored(out)
    failed, done = records["boom/large_lr/lwm/seed0"], records["wrn-10-1/large_lr/lwm/seed0"]
    assert failed["status"] == "failed"
    assert failed["error"] == "RuntimeError: no memory for this model"
    assert "Traceback" in failed["traceback"] and "boom_arch.py" in failed["traceback"]
    assert failed["slurm_job_id"] and failed["slurm_node"] == slurm
    assert "Traceback" in err  # a plugin's bug keeps its traceback on the driver's terminal
    assert done["status"] == "completed" and len(done["history"]) == 1


def test_without_slurm_commands_it_is_one_line(write_spec, run_cli, tmp_path, monkeypatch):
    path = write_spec(grid())
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no sbatch, srun, squeue, scancel
    code, out, err = run_cli("run", path, "--out", tmp_path / "out", "--executor", "slurm")
    assert code == 2 and out == ""
    assert err == (f"patchbench: error: {path}: execution.executor: 'slurm' needs Slurm's "
                   "commands; sbatch, srun, squeue, scancel not found on PATH: run it on a "
                   "machine of the cluster (a login node) or install Slurm's client (Debian: "
                   "apt-get install slurm-client)\n")
    assert not (tmp_path / "out").exists()


def test_sbatch_refusing_the_jobs_is_one_line(slurm, write_spec, run_cli, tmp_path):
    path = write_spec(grid())
    code, _, err = run_cli("run", path, "--out", tmp_path / "out", "--executor", "slurm",
                           "--partition", "nosuchpartition")
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0] == (f"patchbench: error: {path}: execution: Slurm refuses these jobs: "
                        "invalid partition specified: nosuchpartition")
    assert not list((tmp_path / "out").glob("slurm/*/*"))  # nothing submitted
