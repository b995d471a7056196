"""Run a whole grid: load the data once, train each trial, store each record as it ends.

Trials already completed under the same spec hash are skipped; a trial that was killed
resumes from its last epoch checkpoint; a diverged or failing trial is recorded and the
grid goes on. Both skipping and resuming say so when the code has changed since.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import torch

from . import checkpoint as ckpt
from .components import DataBundle
from .display import console, epoch_info, make_progress, print_boards
from .errors import PatchbenchError
from .leaderboard import build_boards, sources_of
from .plugins import Registry
from .records import make_record, now, provenance
from .runtime import configure, pick_device
from .spec import Spec
from .store import Store
from .trainer import Trial, TrialResult, plan_trials, run_trial


def checkpoint_path(out: Path, spec_hash: str, trial: Trial) -> Path:
    name = trial.key.replace("/", "__").replace(":", "-")
    return out / "checkpoints" / spec_hash / f"{name}.pt"


def run_spec(spec: Spec, registry: Registry, out: Path | None = None, source: str = "spec",
             force: bool = False) -> int:
    """Train the grid; return the exit status (1 when a trial diverged or failed)."""
    out = out or spec.out_dir
    trials = plan_trials(spec, registry)
    try:
        device = pick_device(spec.training.device)
    except PatchbenchError as exc:
        raise PatchbenchError(f"{source}: {exc}") from None
    store = Store.in_dir(out)
    base = provenance(spec, registry, device)
    h = base["spec_hash"]
    previous = store.records(h)
    done = set() if force else {r["key"] for r in previous if r["status"] == "completed"}
    todo = [t for t in trials if t.key not in done]
    if not todo:
        console.print(f"{spec.name} v{spec.version}: all {len(trials)} trials already completed "
                      f"in {out} (spec {h}); nothing to train. Use --force to train again.")
        warn_other_code(previous, base["source_hash"])
        print_boards(build_boards(previous))
        return 0
    if done:
        console.print(f"skipping {len(done)} of {len(trials)} trials already completed "
                      f"in {out} (spec {h}); use --force to train them again")
        warn_other_code(previous, base["source_hash"])
    configure(spec.training.threads, spec.training.deterministic)
    data = registry.build("datasets", spec.dataset.name, spec.dataset.params).load().to(device)
    preflight(spec, data, device, registry, source)
    steps = -(-len(data.y_train) // spec.training.batch_size)
    console.print(f"[bold]{spec.name}[/] v{spec.version}: {len(todo)} trials on {device}, "
                  f"{spec.training.epochs} epochs x {steps} steps; results in {out}")
    failed = 0
    with make_progress() as progress:
        grid = progress.add_task("grid", total=len(todo), info="")
        for i, trial in enumerate(todo, 1):
            progress.update(grid, description=f"trial {i}/{len(todo)}", info=trial.key)
            epochs = progress.add_task("  epochs", total=spec.training.epochs * steps, info="")
            path = checkpoint_path(out, h, trial)
            if force:
                ckpt.remove(path)
            resumed = ckpt.load(path)
            extra = {}
            if resumed is not None:
                console.print(f"{trial.key}: resuming after epoch {resumed['epoch']}")
                progress.update(epochs, completed=resumed["epoch"] * steps)
                extra["resumed_after_epoch"] = resumed["epoch"]
                written_by = resumed.get("source") or "unrecorded"
                if written_by != base["source_hash"]:
                    extra["resumed_from_source"] = written_by
                    console.print(f"[yellow]{trial.key}: its checkpoint was written by other "
                                  f"code (source {written_by}, now "
                                  f"{base['source_hash']}); the record says so. Use --force "
                                  "to train it from scratch.[/]", soft_wrap=True)

            def on_step(epoch: int, step: int, loss: float | None, _t: int = epochs) -> None:
                progress.advance(_t)
                if loss is not None:
                    progress.update(_t, info=f"epoch {epoch} loss {loss:.3f}")

            def on_epoch(row: dict, _t: int = epochs, _key: str = trial.key) -> None:
                progress.update(_t, info=epoch_info(row))
                if not console.is_terminal:  # logs get one line per epoch instead of a bar
                    console.print(f"{_key}: {epoch_info(row)}", soft_wrap=True)

            started = now()
            try:
                result = run_trial(spec, trial, data, device, registry, on_step, on_epoch, path,
                                   base["source_hash"])
            except Exception as exc:  # one broken trial must not cost the rest of the grid
                if not isinstance(exc, PatchbenchError):
                    traceback.print_exc(file=sys.stderr)
                result = TrialResult(trial, "failed", error=f"{type(exc).__name__}: {exc}")
            store.put({**make_record(result, base, started), **extra})
            ckpt.remove(path)
            progress.remove_task(epochs)
            progress.advance(grid)
            if result.status != "completed":
                failed += 1
                console.print(f"[red]{trial.key}: {result.status}: {result.error}[/]",
                              soft_wrap=True)
            else:
                console.print(f"{trial.key}: done in {result.wall_time_s:.1f} s "
                              f"({result.train_images_per_s:.0f} training images/s)",
                              soft_wrap=True)
    print_boards(build_boards(store.records(h)))
    if failed:
        console.print(f"[red]{failed} of {len(todo)} trials did not complete[/]")
    return 1 if failed else 0


def warn_other_code(records: list[dict], source: str) -> None:
    """Completed trials are kept across code changes; say when some came from other code."""
    other = [r for r in records if r["status"] == "completed" and sources_of(r) != {source}]
    if other:
        found = ", ".join(sorted(set().union(*map(sources_of, other)) - {source}))
        console.print(f"[yellow]{len(other)} of the completed trials were trained by other code "
                      f"(source {found}, now {source}); they are kept. Use --force to train "
                      "them again with this code.[/]", soft_wrap=True)


def preflight(spec: Spec, data: DataBundle, device: torch.device, registry: Registry,
              source: str) -> None:
    """Set up each patch and attach each arm's regularizers to each architecture once, before
    any training, so components that do not fit together (a patch too large for the images,
    activation noise on a model without ReLUs) are bad input found in seconds, with exit 2,
    not failed trials found hours in. A bug is left to the trial that meets it, which records
    it with its traceback while the rest of the grid trains."""
    try:
        for ref in spec.patches:
            registry.build("patches", ref.name, ref.params).setup(data, device)
        for arch in spec.architectures:
            model = registry.build("architectures", arch.name, arch.params).build(
                data.num_classes, data.image_shape)
            for reg in (r for arm in spec.arms for r in arm.regularizers):
                registry.build("regularizers", reg.name, reg.params).attach(model)
    except PatchbenchError as exc:
        raise PatchbenchError(f"{source}: {exc}") from None
    except Exception:  # noqa: BLE001 - see the docstring
        pass
