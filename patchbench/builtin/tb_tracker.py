"""The TensorBoard tracker: one run per trial under the output directory.

A trial's run is ``<dir>/<spec hash>/<trial key>`` (the key's slashes make folders, so
TensorBoard lists runs as ``<hash>/wrn-16-10/large_lr/badnets/seed0``): every epoch's
numbers as scalars at step = epoch, the final results as scalars at the last epoch, and the
trial's resolved params with its final metrics through the HParams plugin. The patch
previews go once per grid into the run ``<spec hash>/preview``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


from ..components import Params, TrackedTrial, Tracker, TrackingContext
from ..tracking import epoch_scalars, final_scalars

MARKER = "patchbench-run.json"
"""Written in a trial's run folder once its run is complete: which training it holds."""


class TensorBoardParams(Params):
    dir: Path | None = None
    """Log directory, the one to give `tensorboard --logdir` (default: <output dir>/tensorboard)."""


class TensorBoard(Tracker):
    """TensorBoard event files: per-epoch scalars, final results and params (HParams), the
    patch preview; one run per trial under <output dir>/tensorboard."""

    name = "tensorboard"
    Params = TensorBoardParams
    extra = "tensorboard"
    requires = ("tensorboard",)

    def open(self, ctx: TrackingContext) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer_class = SummaryWriter
        self.root = Path(self.params.dir or ctx.out_dir / "tensorboard").absolute()
        self.writers: dict[str, Any] = {}
        self.last_epoch: dict[str, int] = {}
        if ctx.spec_hash and ctx.previews:
            import matplotlib.image

            writer = SummaryWriter(str(self.root / ctx.spec_hash / "preview"))
            for patch, png in ctx.previews.items():
                image = matplotlib.image.imread(str(png))[..., :3]
                writer.add_image(f"preview/{patch}", image, 0, dataformats="HWC")
            writer.close()

    def run_dir(self, trial: TrackedTrial) -> Path:
        return self.root / trial.spec_hash / trial.key

    def start_trial(self, trial: TrackedTrial) -> None:
        folder = self.run_dir(trial)
        if self._marker(folder) != trial.run_id:  # another training, or an unfinished one:
            for old in folder.glob("events.out.tfevents.*"):  # replaced, never mixed
                old.unlink()
            (folder / MARKER).unlink(missing_ok=True)
        self.writers[trial.run_id] = self.writer_class(str(folder))
        self.last_epoch[trial.run_id] = 0

    def log_epoch(self, trial: TrackedTrial, row: dict[str, Any]) -> None:
        writer = self.writers[trial.run_id]
        for tag, value in epoch_scalars(row).items():
            writer.add_scalar(tag, value, int(row["epoch"]))
        self.last_epoch[trial.run_id] = max(self.last_epoch[trial.run_id], int(row["epoch"]))

    def finish_trial(self, trial: TrackedTrial, record: dict[str, Any],
                     files: dict[str, Path]) -> None:
        from torch.utils.tensorboard.summary import hparams

        writer = self.writers.pop(trial.run_id)
        step = self.last_epoch.pop(trial.run_id)
        finals = final_scalars(record)
        for tag, value in finals.items():
            writer.add_scalar(tag, value, step)
        params = {**trial.params, "status": record["status"]}
        # The HParams plugin ties params to metrics by scalar tag, in the trial's own run
        # (SummaryWriter.add_hparams would write them into a second run per trial).
        for summary in hparams(params, {t: v for t, v in finals.items()
                                        if t.startswith(("final/", "learned_epoch"))}):
            writer.file_writer.add_summary(summary)
        writer.close()
        (self.run_dir(trial) / MARKER).write_text(json.dumps(
            {"run": trial.run_id, "key": trial.key, "status": record["status"]}))

    def has_trial(self, trial: TrackedTrial) -> bool:
        return self._marker(self.run_dir(trial)) == trial.run_id

    @staticmethod
    def _marker(folder: Path) -> str | None:
        try:
            return json.loads((folder / MARKER).read_text()).get("run")
        except (OSError, ValueError, AttributeError):
            return None

    def close(self) -> None:
        for writer in getattr(self, "writers", {}).values():  # trials cut short
            writer.close()
