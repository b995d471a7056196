"""How long a grid will take, timed on its first steps before anything trains.

A newcomer who starts the paper's protocol on a laptop should learn in the first minute that
it needs days there, not from an ETA an hour in. The estimate trains a throwaway copy of the
first trial for a few steps (its results are discarded; the real trial starts afresh from
its seed) and times a forward pass for evaluation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..components import DataBundle
from ..plugins import Registry
from ..spec import Spec, Trial
from .trainer import TrialRun

LONG_GRID_S = 24 * 3600.0
"""Past this, run says so and points to a reduced spec and a GPU."""
TIMED_S = 3.0
TIMED_STEPS = 10
"""After one warm-up step, time up to 10 steps or 3 s, whichever comes first."""
CPU_BATCH = 16


@dataclass
class Estimate:
    step_s: float
    trial_s: float
    grid_s: float


def estimate(spec: Spec, trial: Trial, trials: int, data: DataBundle, device: torch.device,
             registry: Registry, artifacts: dict[str, str] | None = None) -> Estimate:
    """Wall time of one trial and of ``trials`` run one after another on ``device``."""
    run = TrialRun(spec, trial, data, device, registry, artifacts)
    full = min(spec.training.batch_size, len(data.y_train))
    # A CPU's time per step grows linearly with the batch, so a small batch times it in
    # seconds even for a model that takes a minute per full step there.
    bs = min(full, CPU_BATCH) if device.type == "cpu" else full
    idx = torch.arange(bs, device=device)
    x, y = run.normalize(data.x_train[:bs]), data.y_train[:bs]
    if run.patch is not None:
        x, y = run.patch.apply(x, y, idx, "train", run.gen)
    if run.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        run.train_step(x, y)

    start = time.perf_counter()
    step()  # warm-up: allocations, kernel selection
    _sync(device)
    warm = time.perf_counter() - start
    steps, start = 0, time.perf_counter()
    while steps == 0 or (steps < TIMED_STEPS and time.perf_counter() - start < TIMED_S
                         and warm < TIMED_S):
        step()
        steps += 1
        _sync(device)
    step_s = (time.perf_counter() - start) / steps * full / bs
    run.model.eval()
    start = time.perf_counter()
    with torch.no_grad(), run.autocast():
        run.model(x)
    _sync(device)
    forward_per_image = (time.perf_counter() - start) / bs
    t, every = spec.training, spec.evaluation.every
    evaluations = len({e for e in range(every, t.epochs + 1, every)} | {t.epochs})
    # The built-in metrics look at about three test sets (clean, patched, conflict).
    eval_images = 3 * len(data.y_test) + 1000
    trial_s = (t.epochs * t.steps_per_epoch(len(data.y_train)) * step_s
               + evaluations * eval_images * forward_per_image)
    return Estimate(step_s, trial_s, trial_s * trials)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def bf16_is_slow(device: torch.device, precision: str) -> bool:
    """bf16 autocast on a CPU without native bf16 (AVX2 only) runs many times slower."""
    if device.type != "cpu" or precision != "bf16":
        return False
    try:
        return not torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):
        return False
