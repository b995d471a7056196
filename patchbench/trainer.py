"""The training loop: the whole dataset on the device, batched tensor ops, no DataLoader.

Every 32 steps the next 32 batches are gathered by index from the uint8 dataset, normalized
with one fused op and patched with the generator's tensor ops (fresh random draws per load,
as the authors' per-sample pipeline). Per step: set the LR from the schedule (a pure function
of the step), forward/backward/SGD on a slice. The loss is accumulated on the device and read
once per epoch, so the loop never waits on the device except for the progress callback.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from . import checkpoint as ckpt
from .components import DataBundle, Metric, PatchGenerator, Regularizer, Schedule
from .evaluation import EvalContext
from .plugins import Registry
from .runtime import autocast_factory
from .spec import Arm, ComponentRef, Spec

CHUNK_STEPS = 32
"""Batches whose inputs are prepared together: the data ops run once per 32 steps, which
matters on a GPU, where the training loop is bound by how fast Python launches kernels."""

StepCallback = Callable[[int, int, float | None], None]
"""(epoch, step within epoch, loss or None) after each step; loss is given every 25 steps."""
EpochCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Trial:
    """One cell of the grid: an architecture, an arm, a seed, with or without the patch."""

    arch: ComponentRef
    arch_label: str
    arm: Arm
    seed: int
    patch: str  # the patch generator's name, or "none" for a control trial

    @property
    def key(self) -> str:
        return f"{self.arch_label}/{self.arm.name}/{self.patch}/seed{self.seed}"


def plan_trials(spec: Spec, registry: Registry) -> list[Trial]:
    """Every trial of the grid, in the order they run (controls right after their arm)."""
    patches = [p.name for p in spec.patches] or ["none"]
    trials = []
    for ref in spec.architectures:
        label = registry.build("architectures", ref.name, ref.params).label()
        for seed in spec.seeds:
            for arm in spec.arms:
                trials += [Trial(ref, label, arm, seed, patch) for patch in patches]
                if arm.control and spec.patches:
                    trials.append(Trial(ref, label, arm, seed, "none"))
    return trials


@dataclass
class TrialResult:
    trial: Trial
    status: str  # completed | diverged
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    wall_time_s: float = 0.0
    train_images_per_s: float = 0.0
    error: str | None = None
    failed_epoch: int | None = None


def summarize(history: list[dict[str, Any]], anneals: list[int], metrics: list[str],
              threshold: float) -> dict[str, Any]:
    """Final metrics, the epoch the patch was learned, and metrics around each anneal."""
    evaluated = [h for h in history if any(h.get(m) is not None for m in metrics)]
    by_epoch = {h["epoch"]: h for h in evaluated}
    final = {m: evaluated[-1].get(m) for m in metrics} if evaluated else {}
    learned = next((h["epoch"] for h in evaluated
                    if (h.get("patch_only_acc") or 0.0) >= threshold), None)
    around = {}
    for a in sorted(set(anneals)):
        before, after = by_epoch.get(a - 1), by_epoch.get(a)
        around[str(a)] = {
            "before": {m: before.get(m) for m in metrics} if before else None,
            "after": {m: after.get(m) for m in metrics} if after else None,
        }
    return {"final": final, "patch_learned_epoch": learned,
            "patch_learned_threshold": threshold, "anneals": around}


def run_trial(spec: Spec, trial: Trial, data: DataBundle, device: torch.device,
              registry: Registry, on_step: StepCallback | None = None,
              on_epoch: EpochCallback | None = None, checkpoint: Path | None = None,
              source: str | None = None) -> TrialResult:
    """Train one trial; ``data`` must already be on ``device``.

    With ``checkpoint``, the state after each epoch is saved there, and a trial that finds a
    checkpoint resumes from it: model, optimizer, RNG states and history are restored, so
    the result equals an uninterrupted run in deterministic mode. ``source`` (the code's
    source hash) is saved with each checkpoint, so a resume can tell when the code changed."""
    t, arm = spec.training, trial.arm
    torch.manual_seed(trial.seed)
    gen = torch.Generator(device).manual_seed(trial.seed)

    patch: PatchGenerator | None = None
    if trial.patch != "none":
        ref = spec.patch_ref(trial.patch)
        patch = registry.build("patches", ref.name, ref.params)
        patch.setup(data, device)
    schedule: Schedule = registry.build("schedules", arm.schedule.name, arm.schedule.params)
    regs: list[Regularizer] = [registry.build("regularizers", r.name, r.params)
                               for r in arm.regularizers]
    metrics: list[Metric] = [registry.build("metrics", m.name, m.params)
                             for m in spec.evaluation.metrics]
    model = registry.build("architectures", trial.arch.name, trial.arch.params).build(
        data.num_classes, data.image_shape).to(device)
    channels_last = t.channels_last and len(data.image_shape) == 3  # images only
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    for reg in regs:
        reg.attach(model)
    opt = arm.optimizer
    optimizer = torch.optim.SGD(model.parameters(), lr=opt.lr, momentum=opt.momentum,
                                nesterov=opt.nesterov, weight_decay=opt.weight_decay)
    autocast = autocast_factory(device, t.precision)
    normalize = data.normalizer(device)
    n = len(data.y_train)
    steps_per_epoch = math.ceil(n / t.batch_size)
    total_steps = steps_per_epoch * t.epochs

    result = TrialResult(trial, "completed")
    train_time, step, seen, elapsed, first_epoch = 0.0, 0, 0, 0.0, 1
    state = ckpt.load(checkpoint)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        gen.set_state(state["gen_rng"])
        if device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        result.history = json.loads(state["history"])
        step, seen, train_time, elapsed = (state["step"], state["seen"], state["train_time"],
                                           state["elapsed"])
        first_epoch = state["epoch"] + 1
    start = time.perf_counter() - elapsed
    for epoch in range(first_epoch, t.epochs + 1):
        for reg in regs:
            reg.set_epoch(epoch)
        model.train()
        epoch_start = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        perm = torch.randperm(n, generator=gen, device=device)
        for first in range(0, steps_per_epoch, CHUNK_STEPS):
            # One gather/normalize/patch for many batches: per step only the model runs.
            chunk = perm[first * t.batch_size:(first + CHUNK_STEPS) * t.batch_size]
            xs, ys = normalize(data.x_train[chunk]), data.y_train[chunk]
            if patch is not None:
                xs, ys = patch.apply(xs, ys, chunk, "train", gen)
            if channels_last:
                xs = xs.contiguous(memory_format=torch.channels_last)
            for i in range(first, min(first + CHUNK_STEPS, steps_per_epoch)):
                rows = slice((i - first) * t.batch_size, (i - first + 1) * t.batch_size)
                x, y = xs[rows], ys[rows]
                lr = schedule.lr(step, steps_per_epoch, total_steps, opt.lr)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                with autocast():
                    logits = model(x)
                loss = F.cross_entropy(logits.float(), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum.add_(loss.detach(), alpha=len(y))
                step += 1
                seen += len(y)
                if on_step is not None:
                    on_step(epoch, i + 1, loss.item() if (i + 1) % 25 == 0 else None)
        train_loss = loss_sum.item() / n  # the one sync point per epoch
        train_time += time.perf_counter() - epoch_start
        row: dict[str, Any] = {"epoch": epoch, "lr": lr, "train_loss": train_loss}
        if not math.isfinite(train_loss):
            result.status = "diverged"
            result.error = f"non-finite training loss in epoch {epoch}"
            result.failed_epoch = epoch
            result.history.append(row)
            break
        if epoch % spec.evaluation.every == 0 or epoch == t.epochs:
            model.eval()
            ctx = EvalContext(model, data, patch, device, spec.evaluation.batch_size,
                              spec.evaluation.seed, autocast, channels_last)
            for metric in metrics:
                row[metric.name] = None if (metric.needs_patch and patch is None) \
                    else metric.compute(ctx)
        row["time_s"] = round(time.perf_counter() - start, 3)
        result.history.append(row)
        if checkpoint is not None and epoch < t.epochs:
            ckpt.save(checkpoint, {
                "epoch": epoch, "step": step, "seen": seen, "train_time": train_time,
                "elapsed": time.perf_counter() - start, "history": json.dumps(result.history),
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "torch_rng": torch.get_rng_state(), "gen_rng": gen.get_state(),
                "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "source": source,
            })
        if on_epoch is not None:
            on_epoch(row)

    anneals = schedule.anneal_epochs(t.epochs) + [e for r in regs
                                                   for e in r.anneal_epochs(t.epochs)]
    result.summary = summarize(result.history, anneals, [m.name for m in metrics],
                               spec.evaluation.patch_learned_threshold)
    result.wall_time_s = time.perf_counter() - start
    result.train_images_per_s = seen / train_time if train_time else 0.0
    return result
