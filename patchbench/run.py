"""Run a whole grid: load the data once, train each trial, write each result as it ends."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from .display import console, epoch_info, make_progress, result_table
from .plugins import Registry
from .results import aggregate, provenance, read_trials, write_trial
from .runtime import configure, pick_device
from .spec import Spec, resolved_dict, spec_hash
from .trainer import plan_trials, run_trial


def run_spec(spec: Spec, registry: Registry, out: Path | None = None) -> int:
    """Train the grid; return the exit status (1 when a trial diverged)."""
    out = out or spec.out_dir
    trials = plan_trials(spec, registry)
    device = pick_device(spec.training.device)
    configure(spec.training.threads, spec.training.deterministic)
    data = registry.build("datasets", spec.dataset.name, spec.dataset.params).load().to(device)
    resolved = resolved_dict(spec)
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.json").write_text(json.dumps(resolved, indent=1))
    prov = provenance(spec.name, spec.version, spec_hash(spec), resolved, device)
    steps = -(-len(data.y_train) // spec.training.batch_size)
    console.print(f"[bold]{spec.name}[/] v{spec.version}: {len(trials)} trials on {device}, "
                  f"{spec.training.epochs} epochs x {steps} steps; results in {out}")
    failed = 0
    with make_progress() as progress:
        grid = progress.add_task("grid", total=len(trials), info="")
        for i, trial in enumerate(trials, 1):
            progress.update(grid, description=f"trial {i}/{len(trials)}", info=trial.key)
            epochs = progress.add_task("  epochs", total=spec.training.epochs * steps, info="")

            def on_step(epoch: int, step: int, loss: float | None, _t: int = epochs) -> None:
                progress.advance(_t)
                if loss is not None:
                    progress.update(_t, info=f"epoch {epoch} loss {loss:.3f}")

            def on_epoch(row: dict, _t: int = epochs, _key: str = trial.key) -> None:
                progress.update(_t, info=epoch_info(row))
                if not console.is_terminal:  # logs get one line per epoch instead of a bar
                    console.print(f"{_key}: {epoch_info(row)}", soft_wrap=True)

            result = run_trial(spec, trial, data, device, registry, on_step, on_epoch)
            write_trial(out, result, prov)
            progress.remove_task(epochs)
            progress.advance(grid)
            if result.status != "completed":
                failed += 1
                console.print(f"[red]{trial.key}: {result.status}: {result.error}[/]")
            else:
                console.print(f"{trial.key}: done in {result.wall_time_s:.1f} s "
                              f"({result.train_images_per_s:.0f} training images/s)",
                              soft_wrap=True)
    print_results(spec, registry, read_trials(out))
    return 1 if failed else 0


def print_results(spec: Spec, registry: Registry, records: list[dict]) -> None:
    metrics = [m.name for m in spec.evaluation.metrics]
    better = {m: registry.get("metrics", m).cls.higher_is_better for m in metrics}
    rows = aggregate([r for r in records if r.get("benchmark") == spec.name], metrics)
    Console(width=max(Console().width, 140)).print(
        result_table(f"{spec.name} v{spec.version} (final epoch, mean ± std over seeds)",
                     rows, metrics, better))
