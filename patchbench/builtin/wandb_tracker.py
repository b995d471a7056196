"""The Weights & Biases tracker: one run per trial, grouped by spec hash.

Project, entity and mode come from the tracker's params, else W&B's own environment
(``WANDB_PROJECT``, ``WANDB_ENTITY``, ``WANDB_MODE``); the project defaults to the
benchmark's name. ``mode: offline`` writes runs under ``<output dir>/wandb`` with no network
(``wandb sync`` uploads them later). A run's id is the trial's ``run_id``, so a replay finds
it; its config is the trial's resolved spec flattened, its history one row per epoch with
``epoch`` as the step metric, its summary the final results, the curves an image.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from ..components import Params, TrackedTrial, Tracker, TrackingContext
from ..tracking import epoch_scalars, final_scalars


class WandbParams(Params):
    project: str | None = None
    """Default: $WANDB_PROJECT, else the benchmark's name."""
    entity: str | None = None
    """Default: $WANDB_ENTITY, else the account's default entity."""
    mode: Literal["online", "offline", "disabled"] | None = None
    """Default: $WANDB_MODE, else online. offline: no network; `wandb sync` uploads later."""
    dir: Path | None = None
    """Where W&B keeps its local run files (default: the output directory)."""


class Wandb(Tracker):
    """Weights & Biases runs grouped by spec hash: config, per-epoch history, summary, the
    curves image; works offline (mode: offline, no network)."""

    name = "wandb"
    Params = WandbParams
    extra = "wandb"
    requires = ("wandb",)

    def open(self, ctx: TrackingContext) -> None:
        import wandb

        self.wandb = wandb
        self.dir = Path(self.params.dir or ctx.out_dir).absolute()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.mode = self.params.mode or os.environ.get("WANDB_MODE") or "online"
        self.runs: dict[str, Any] = {}
        if self.mode != "disabled":  # its service starts now, before anything trains
            wandb.setup()

    def _project(self, trial: TrackedTrial) -> str:
        return self.params.project or os.environ.get("WANDB_PROJECT") or trial.benchmark

    def start_trial(self, trial: TrackedTrial) -> None:
        wandb = self.wandb
        run = wandb.init(
            project=self._project(trial), entity=self.params.entity, mode=self.mode,
            dir=str(self.dir), id=trial.run_id, name=trial.key, group=trial.spec_hash,
            job_type=f"{trial.benchmark} v{trial.version}",
            config={**trial.params, **trial.tags}, tags=[f"spec:{trial.spec_hash}",
                                                         f"source:{trial.source_hash}"],
            # Several trials may be open at once (the Ray executor); none takes over the
            # process's console, signals or global `wandb.run`.
            reinit="create_new",
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True))
        run.define_metric("epoch")
        run.define_metric("*", step_metric="epoch")
        self.runs[trial.run_id] = run

    def log_epoch(self, trial: TrackedTrial, row: dict[str, Any]) -> None:
        self.runs[trial.run_id].log({"epoch": int(row["epoch"]), **epoch_scalars(row)})

    def finish_trial(self, trial: TrackedTrial, record: dict[str, Any],
                     files: dict[str, Path]) -> None:
        run = self.runs.pop(trial.run_id)
        # Images go to the summary: a history row of their own would be a step without metrics.
        run.summary.update({**final_scalars(record), "status": record["status"],
                            **{name: self.wandb.Image(str(path)) for name, path in files.items()}})
        run.finish(exit_code=0 if record["status"] == "completed" else 1)

    def has_trial(self, trial: TrackedTrial) -> bool:
        if self.mode == "online":
            try:
                self.wandb.Api().run(f"{self.params.entity or self.wandb.Api().default_entity}"
                                     f"/{self._project(trial)}/{trial.run_id}")
            except Exception:  # noqa: BLE001 - not found (W&B raises its own kinds)
                return False
            return True
        # Offline: a run folder ends with its id; its .wandb file is complete once finished.
        return any(d.is_dir() for d in (self.dir / "wandb").glob(f"offline-run-*-{trial.run_id}"))

    def close(self) -> None:
        for run in getattr(self, "runs", {}).values():  # trials cut short (Ctrl-C)
            run.finish(exit_code=1)
