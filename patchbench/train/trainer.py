"""The training loop: the whole dataset on the device, batched tensor ops, no DataLoader.

Every 32 steps the next 32 batches are gathered by index from the uint8 dataset, normalized
with one fused op, patched with the generator's tensor ops (fresh random draws per load, as
the authors' per-sample pipeline) and augmented, before or after the patch as the arm says.
Per step: set the LR from the schedule (a pure function of the step), then the optimizer
component's step (forward/backward/update; SAM does two passes) on a slice. The loss and the
number of correct first-pass predictions are accumulated on the device and read once per
epoch, so the loop never waits on the device except for the progress callback.

A trial is built once (:class:`TrialRun`), may restore a checkpoint, then trains and evaluates
epoch by epoch; :func:`train_trial` drives those parts. Where a trial runs is the executors'
business (:mod:`patchbench.run`), not this module's.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..boundary import (check_apply, check_images, check_input_kept, check_logits, check_lrs,
                        check_metric_value, check_mixed, check_model, check_optimizer,
                        check_perturbed, check_step_loss)
from ..components import (Augmentation, DataBundle, LabelMixing, Metric, Optimizer,
                          PatchGenerator, Perturbation, Regularizer, Schedule)
from ..crafting import use_crafted
from ..evaluation import EvalContext, peak
from ..plugins import Registry
from ..spec import Spec, Trial
from ..spec.models import DEFAULT_LEARNED_METRIC
from . import checkpoint as ckpt
from .runtime import autocast_factory, plugin_rng

CHUNK_STEPS = 32
"""Batches whose inputs are prepared together: the data ops run once per 32 steps, which
matters on a GPU, where the training loop is bound by how fast Python launches kernels."""

StepCallback = Callable[[int, int, float | None], None]
"""(epoch, step within epoch, loss or None) after each step; loss is given every 25 steps."""
EpochCallback = Callable[[dict[str, Any]], None]
StartCallback = Callable[[int | None, str | None], None]
"""(resumed after epoch or None, the checkpoint's code hash when it is not this code's)."""


@dataclass
class TrialResult:
    trial: Trial
    status: str  # completed | diverged | failed
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    wall_time_s: float = 0.0
    train_images_per_s: float = 0.0
    error: str | None = None
    traceback: str | None = None
    failed_epoch: int | None = None
    resumed_after_epoch: int | None = None
    resumed_from_code: str | None = None
    """The code hash of the checkpoint it resumed from, when that differs from this code's."""
    where: dict[str, Any] = field(default_factory=dict)
    """Which executor, host, device and threads trained it (filled in by the executor)."""


def summarize(history: list[dict[str, Any]], anneals: list[int], metrics: list[str],
              threshold: float, learned_metric: str = DEFAULT_LEARNED_METRIC,
              higher_is_better: dict[str, bool] | None = None) -> dict[str, Any]:
    """Final metrics, the first epoch ``learned_metric`` reached ``threshold`` (the pattern
    was learned), metrics around each anneal, and each metric's peak over the evaluated
    epochs (the max, or the min where ``higher_is_better`` says lower is; default higher)
    with the first epoch that reached it."""
    evaluated = [h for h in history if any(h.get(m) is not None for m in metrics)]
    by_epoch = {h["epoch"]: h for h in evaluated}
    final = {m: evaluated[-1].get(m) for m in metrics} if evaluated else {}
    learned = next((h["epoch"] for h in evaluated
                    if (h.get(learned_metric) or 0.0) >= threshold), None)
    around = {}
    for a in sorted(set(anneals)):
        before, after = by_epoch.get(a - 1), by_epoch.get(a)
        around[str(a)] = {
            "before": {m: before.get(m) for m in metrics} if before else None,
            "after": {m: after.get(m) for m in metrics} if after else None,
        }
    higher = higher_is_better or {}
    peaks = {m: peak(evaluated, m, higher.get(m, True)) for m in metrics} if evaluated else {}
    return {"final": final, "patch_learned_epoch": learned,
            "patch_learned_threshold": threshold, "learned_metric": learned_metric,
            "anneals": around, "peak": {m: v for m, (v, _) in peaks.items()},
            "peak_epoch": {m: e for m, (_, e) in peaks.items()}}


class TrialRun:
    """One trial's components and state: built once, then trained epoch by epoch.

    ``data`` must already be on ``device``. The state after an epoch (:meth:`snapshot`) is
    all a resume needs (:meth:`restore`): model, optimizer, RNG states, counters and
    history, so a resumed trial equals an uninterrupted one in deterministic mode."""

    def __init__(self, spec: Spec, trial: Trial, data: DataBundle, device: torch.device,
                 registry: Registry, artifacts: dict[str, str] | None = None):
        self.spec, self.trial, self.data, self.device = spec, trial, data, device
        t, arm = spec.training, trial.arm
        torch.manual_seed(trial.seed)
        self.gen = torch.Generator(device).manual_seed(trial.seed)
        self.patch: PatchGenerator | None = None
        if trial.patch != "none":
            ref = spec.patch_ref(trial.patch)
            self.patch = registry.build("patches", ref.name, ref.params)
            use_crafted(self.patch, artifacts or {}, device)
            with plugin_rng(device):
                self.patch.setup(data, device)
        self.schedule: Schedule = registry.build("schedules", arm.schedule.name,
                                                 arm.schedule.params)
        self.regs: list[Regularizer] = [registry.build("regularizers", r.name, r.params)
                                        for r in arm.regularizers]
        self.metrics: list[Metric] = [registry.build("metrics", m.name, m.params)
                                      for m in spec.evaluation.metrics]
        self.metric_keys = spec.evaluation.metric_keys()
        self.arch = registry.build("architectures", trial.arch.name, trial.arch.params)
        model = check_model(self.arch, self.arch.build(data.num_classes, data.image_shape))
        model = model.to(device)
        self.channels_last = t.channels_last and len(data.image_shape) == 3  # images only
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        for reg in self.regs:
            reg.attach(model)
        self.model = model
        self.optim: Optimizer = registry.build("optimizers", arm.optimizer.name,
                                               arm.optimizer.params)
        self.optimizer = check_optimizer(self.optim, self.optim.build(model.parameters(),
                                                                       arm.optimizer.lr))
        augs: list[Augmentation] = [registry.build("augmentations", a.name, a.params)
                                    for a in arm.augmentations]
        for aug in augs:
            with plugin_rng(device):
                aug.setup(data, device)
        # Label mixing runs per training batch, after the image augmentations (the
        # references mix within a minibatch); the others run on a whole chunk.
        self.augs = [a for a in augs if not a.mixes_labels]
        self.mixers: list[LabelMixing] = [a for a in augs if a.mixes_labels]
        self.perturbation: Perturbation | None = None
        if arm.perturbation is not None:
            self.perturbation = registry.build("perturbations", arm.perturbation.name,
                                               arm.perturbation.params)
            with plugin_rng(device):
                self.perturbation.setup(data, device)
        self.augment_first = arm.augment_order == "before_patch"
        # Running statistics follow the first forward pass of a step only (SAM's second pass
        # at the perturbed weights must not move them; Foret et al. keep the first's state).
        self.norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.autocast = autocast_factory(device, t.precision)
        self.label_smoothing = arm.label_smoothing
        self.normalize = data.normalizer(device)
        self.steps_per_epoch = t.steps_per_epoch(len(data.y_train))
        self.total_steps = self.steps_per_epoch * t.epochs
        self.history: list[dict[str, Any]] = []
        self.epoch = 0  # the last completed epoch
        self.step = self.seen = 0
        self.train_time = 0.0
        self.train_acc: float | None = None  # of the last epoch trained in this process
        self.count_correct = any(m.needs_train_acc for m in self.metrics)

    def snapshot(self, elapsed: float, code_hash: str | None) -> dict[str, Any]:
        """The state after :attr:`epoch`, as a checkpoint holds it (tensors and plain data)."""
        cuda = self.device.type == "cuda"
        return {
            "epoch": self.epoch, "step": self.step, "seen": self.seen,
            "train_time": self.train_time, "elapsed": elapsed,
            "history": json.dumps(self.history),
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(), "gen_rng": self.gen.get_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if cuda else None,
            "code_hash": code_hash,
        }

    def restore(self, state: dict[str, Any]) -> float:
        """Continue from a :meth:`snapshot`; return the wall time the trial had used."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        self.gen.set_state(state["gen_rng"])
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.history = json.loads(state["history"])
        self.epoch, self.step, self.seen = state["epoch"], state["step"], state["seen"]
        self.train_time = state["train_time"]
        return state["elapsed"]

    def train_epoch(self, on_step: StepCallback | None = None) -> dict[str, Any]:
        """Train the next epoch; return its row (epoch, the LR the optimizer used, loss)."""
        t, data, gen = self.spec.training, self.data, self.gen
        epoch = self.epoch + 1
        for reg in self.regs:
            reg.set_epoch(epoch)
        self.model.train()
        epoch_start = time.perf_counter()
        loss_sum = torch.zeros((), device=self.device)
        # float64: exact for counts, and for the fractional credit of mixed targets.
        correct = torch.zeros((), dtype=torch.float64, device=self.device)
        n, base_lr = len(data.y_train), self.trial.arm.optimizer.lr
        # The schedule is a pure function of the step: the epoch's LRs are computed and
        # checked here, once, so the step loop neither calls nor checks plugin code.
        lrs = check_lrs(self.schedule, [
            self.schedule.lr(s, self.steps_per_epoch, self.total_steps, base_lr)
            for s in range(self.step, self.step + self.steps_per_epoch)], self.step)
        perm = torch.randperm(n, generator=gen, device=self.device)
        for first in range(0, self.steps_per_epoch, CHUNK_STEPS):
            # One gather/normalize/patch/augment for many batches: per step only the model runs.
            chunk = perm[first * t.batch_size:(first + CHUNK_STEPS) * t.batch_size]
            xs, ys = self.normalize(data.x_train[chunk]), data.y_train[chunk]
            if self.augment_first:
                xs = self.augment(xs)
            if self.patch is not None:
                # Shapes every chunk (no sync); label values once per epoch (one sync).
                xs, ys = check_apply(self.patch, xs, ys,
                                     self.patch.apply(xs, ys, chunk, "train", gen),
                                     data.num_classes, labels_in_range=first == 0)
            if not self.augment_first:
                xs = self.augment(xs)
            if self.channels_last:
                xs = xs.contiguous(memory_format=torch.channels_last)
            for i in range(first, min(first + CHUNK_STEPS, self.steps_per_epoch)):
                rows = slice((i - first) * t.batch_size, (i - first + 1) * t.batch_size)
                x, y = xs[rows], ys[rows]
                for group in self.optimizer.param_groups:
                    group["lr"] = lrs[i]
                loss = self.train_step(x, y, check=i == 0,
                                       correct=correct if self.count_correct else None)
                loss_sum.add_(loss.detach(), alpha=len(y))
                self.step += 1
                self.seen += len(y)
                if on_step is not None:
                    on_step(epoch, i + 1, loss.item() if (i + 1) % 25 == 0 else None)
        # The one sync point per epoch (float64: the count stays exact, the loss unchanged).
        loss_total, n_correct = torch.stack([loss_sum.double(), correct.double()]).tolist()
        train_loss = loss_total / n
        self.train_acc = n_correct / n if self.count_correct else None
        self.train_time += time.perf_counter() - epoch_start
        self.epoch = epoch
        # The LR as the optimizer last used it, not as the schedule said: what trained.
        return {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"],
                "train_loss": train_loss}

    inputs_kept_checked = False
    """Whether :meth:`augment` has checked, on this trial's first batch, that no augmentation
    writes into its input (a copy and a comparison: once per trial, off the hot path)."""

    def augment(self, xs: torch.Tensor) -> torch.Tensor:
        """The arm's augmentations in order, each output checked (shape only: no sync)."""
        check, self.inputs_kept_checked = not self.inputs_kept_checked, True
        for aug in self.augs:
            before = xs.clone() if check else None
            out = aug.apply(xs, self.gen)
            if before is not None:
                check_input_kept(aug, "apply", before, xs)
            xs = check_images(aug, "apply", xs, out)
        return xs

    def train_step(self, x: torch.Tensor, y: torch.Tensor, check: bool = False,
                   correct: torch.Tensor | None = None) -> torch.Tensor:
        """One optimizer step on a batch at the optimizer's current LR; return the loss.
        ``check``: also check the model's output and the step's loss (the first step of an
        epoch). ``correct``: add to it, on the device, how many of the first forward pass's
        predictions are the labels (under label mixing, the target weight of each predicted
        class: lambda for the image's own label, 1 - lambda for its partner's)."""
        passes = 0
        target: torch.Tensor = y
        if self.mixers:
            target = F.one_hot(y, self.data.num_classes).float()
            for mixer in self.mixers:
                out = mixer.mix(x, target, self.gen)
                x, target = check_mixed(mixer, x, target, out, check)
        if self.perturbation is not None:
            with self.autocast():
                adv = self.perturbation.perturb(self.model, x, target, self.gen)
            x = check_perturbed(self.perturbation, self.model, x, adv)

        def loss_fn() -> torch.Tensor:
            nonlocal passes
            passes += 1
            with self.autocast(), frozen_norm_stats(self.norms, passes > 1):
                logits = self.model(x)
            if passes == 1:
                if check:
                    check_logits(self.arch, logits, len(y), self.data.num_classes)
                if correct is not None:
                    pred = logits.argmax(1)
                    correct.add_((pred == y).sum() if target is y else
                                 target.gather(1, pred[:, None]).sum())
            return F.cross_entropy(logits.float(), target, label_smoothing=self.label_smoothing)

        loss = self.optim.step(self.optimizer, loss_fn)
        return check_step_loss(self.optim, loss) if check else loss

    def evaluate(self) -> dict[str, float | None]:
        """Every metric, in eval mode; metrics that need a patch are None without one."""
        self.model.eval()
        ctx = EvalContext(self.model, self.data, self.patch, self.device,
                          self.spec.evaluation.batch_size, self.spec.evaluation.seed,
                          self.autocast, self.channels_last, self.train_acc,
                          epoch=self.epoch or None)
        return {key: None if (m.needs_patch and self.patch is None)
                else check_metric_value(m, m.compute(ctx))
                for key, m in zip(self.metric_keys, self.metrics)}

    def summary(self) -> dict[str, Any]:
        epochs = self.spec.training.epochs
        anneals = self.schedule.anneal_epochs(epochs) + [e for r in self.regs
                                                         for e in r.anneal_epochs(epochs)]
        ev = self.spec.evaluation
        return summarize(self.history, anneals, self.metric_keys,
                         ev.patch_learned_threshold, ev.learned_key,
                         {key: bool(m.higher_is_better)
                          for key, m in zip(self.metric_keys, self.metrics)})


@contextmanager
def frozen_norm_stats(norms: list[nn.Module], frozen: bool) -> Iterator[None]:
    """While ``frozen``, batch norms normalize with the batch's statistics as in training but
    leave their running statistics (and batch counts) untouched."""
    if not frozen:
        yield
        return
    tracking = [m.track_running_stats for m in norms]
    for m in norms:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m, t in zip(norms, tracking):
            m.track_running_stats = t


def train_trial(spec: Spec, trial: Trial, data: DataBundle, device: torch.device,
              registry: Registry, on_step: StepCallback | None = None,
              on_epoch: EpochCallback | None = None, checkpoint: Path | None = None,
              code_hash: str | None = None, on_start: StartCallback | None = None,
              artifacts: dict[str, str] | None = None) -> TrialResult:
    """Train one trial; ``data`` must already be on ``device``.

    With ``checkpoint``, the state after each epoch is saved there, and a trial that finds a
    checkpoint resumes from it (loaded once, here). ``code_hash`` is saved with each
    checkpoint, so a resume can tell when the code changed."""
    run = TrialRun(spec, trial, data, device, registry, artifacts)
    result = TrialResult(trial, "completed")
    elapsed = 0.0
    state = ckpt.load(checkpoint)
    if state is not None:
        try:
            elapsed = run.restore(state)
        except (KeyError, RuntimeError, ValueError, TypeError, IndexError) as exc:
            # Another model's or a damaged state: start over rather than resume wrongly.
            first = (str(exc).strip().splitlines() or [""])[0]
            ckpt.unusable(checkpoint, f"does not fit this trial ({type(exc).__name__}: "
                          f"{first})")
            state, run = None, TrialRun(spec, trial, data, device, registry, artifacts)
    if state is not None:
        result.resumed_after_epoch = run.epoch
        written_by = state.get("code_hash") or state.get("source") or "unrecorded"
        if written_by != code_hash:
            result.resumed_from_code = written_by
    if on_start is not None:
        on_start(result.resumed_after_epoch, result.resumed_from_code)
    start = time.perf_counter() - elapsed
    epochs, every = spec.training.epochs, spec.evaluation.every
    while run.epoch < epochs:
        row = run.train_epoch(on_step)
        if not math.isfinite(row["train_loss"]):
            result.status = "diverged"
            result.error = f"non-finite training loss in epoch {run.epoch}"
            result.failed_epoch = run.epoch
            run.history.append(row)
            break
        if run.epoch % every == 0 or run.epoch == epochs:
            row.update(run.evaluate())
        row["time_s"] = round(time.perf_counter() - start, 3)
        run.history.append(row)
        if checkpoint is not None and run.epoch < epochs:
            ckpt.save(checkpoint, run.snapshot(time.perf_counter() - start, code_hash))
        if on_epoch is not None:
            on_epoch(row)
    result.history = run.history
    result.summary = run.summary()
    result.wall_time_s = time.perf_counter() - start
    result.train_images_per_s = run.seen / run.train_time if run.train_time else 0.0
    return result
