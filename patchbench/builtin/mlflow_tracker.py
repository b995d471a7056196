"""The MLflow tracker: one experiment per benchmark and version, one run per trial.

The tracking URI is the tracker's ``uri`` param (``--track-uri``), else
``MLFLOW_TRACKING_URI``, else a local SQLite store in the output directory. A run is named by
the trial key and tagged with the spec hash, trial key, source hash and status; its params
are the trial's resolved spec flattened; each epoch's numbers are metrics at step = epoch;
the summary comes as final metrics, the learning curves as an artifact.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from pydantic import Field

from ..components import Params, TrackedTrial, Tracker, TrackingContext
from ..tracking import epoch_scalars, final_scalars

BATCH = 100
"""Params per call: an MLflow server takes at most 100 in one batch."""
NOT_A_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")
"""What MLflow refuses in a param or metric name (``patch_only_acc(n=37)``)."""
STATUS = {"completed": "FINISHED", "diverged": "FAILED", "failed": "FAILED"}


class MlflowParams(Params):
    uri: str | None = None
    """Tracking URI (http://host:5000, sqlite:///path.db, databricks); default
    $MLFLOW_TRACKING_URI, else sqlite:///<output dir>/mlflow.db."""
    http_retries: int = Field(1, ge=0, le=10)
    """Retries of a failed request to a server (sets MLFLOW_HTTP_REQUEST_MAX_RETRIES unless
    it is set): MLflow's own default retries for minutes before a down server fails."""
    http_timeout_s: int = Field(20, ge=1, le=600)
    """Seconds before a request times out (MLFLOW_HTTP_REQUEST_TIMEOUT unless it is set)."""


def key_name(name: str) -> str:
    return NOT_A_KEY.sub("_", name)


class Mlflow(Tracker):
    """MLflow runs: params, per-epoch metrics, final metrics, tags, the curves PNG; one
    experiment per benchmark version (default store: sqlite in the output directory)."""

    name = "mlflow"
    Params = MlflowParams
    extra = "mlflow"
    requires = ("mlflow",)

    def open(self, ctx: TrackingContext) -> None:
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(self.params.http_retries))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(self.params.http_timeout_s))
        for name in ("mlflow", "alembic"):  # their INFO lines would cut through the progress
            logging.getLogger(name).setLevel(logging.WARNING)
        from mlflow import MlflowClient

        local = f"sqlite:///{(ctx.out_dir / 'mlflow.db').absolute()}"
        self.uri = self.params.uri or os.environ.get("MLFLOW_TRACKING_URI") or local
        # A local store keeps its artifacts next to it, not in ./mlruns of whatever
        # directory the run was started from; a server decides for itself.
        self.artifacts = (ctx.out_dir / "mlflow-artifacts").absolute().as_uri() \
            if self.uri.startswith(("sqlite:", "file:")) or "://" not in self.uri else None
        self.client = MlflowClient(tracking_uri=self.uri)
        self.experiments: dict[str, str] = {}
        if self.artifacts is not None:  # a local store: its schema is made now, not in a trial
            self.client.search_experiments(max_results=1)
        self.runs: dict[str, str] = {}

    def experiment(self, trial: TrackedTrial) -> str:
        name = f"{trial.benchmark} v{trial.version}"
        if name not in self.experiments:
            found = self.client.get_experiment_by_name(name)
            self.experiments[name] = found.experiment_id if found else \
                self.client.create_experiment(name, artifact_location=self.artifacts)
        return self.experiments[name]

    def start_trial(self, trial: TrackedTrial) -> None:
        from mlflow.entities import Param

        run = self.client.create_run(self.experiment(trial), run_name=trial.key,
                                     tags={**trial.tags, "patchbench.status": "running"})
        self.runs[trial.run_id] = run.info.run_id
        params = [Param(key_name(k), str(v)) for k, v in trial.params.items()]
        for i in range(0, len(params), BATCH):
            self.client.log_batch(run.info.run_id, params=params[i:i + BATCH])

    def log_epoch(self, trial: TrackedTrial, row: dict[str, Any]) -> None:
        self._metrics(trial, epoch_scalars(row), int(row["epoch"]))

    def _metrics(self, trial: TrackedTrial, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self.client.log_batch(self.runs[trial.run_id], metrics=[
            Metric(key_name(k), v, stamp, step) for k, v in values.items()])

    def finish_trial(self, trial: TrackedTrial, record: dict[str, Any],
                     files: dict[str, Path]) -> None:
        run_id = self.runs[trial.run_id]
        last = max((int(h["epoch"]) for h in record.get("history") or []), default=0)
        self._metrics(trial, final_scalars(record), last)
        for path in files.values():
            self.client.log_artifact(run_id, str(path))
        self.client.set_tag(run_id, "patchbench.status", record["status"])
        self.client.set_terminated(run_id, STATUS.get(record["status"], "FAILED"))
        del self.runs[trial.run_id]

    def has_trial(self, trial: TrackedTrial) -> bool:
        runs = self.client.search_runs(
            [self.experiment(trial)],
            filter_string=f"tags.`patchbench.run` = '{trial.run_id}'")
        finished = [r for r in runs if r.info.status != "RUNNING"]
        for r in runs:  # a run cut short (the process was killed) is replaced, not kept twice
            if r.info.status == "RUNNING":
                self.client.delete_run(r.info.run_id)
        return bool(finished)

    def close(self) -> None:
        for run_id in getattr(self, "runs", {}).values():  # trials cut short (Ctrl-C)
            self.client.set_terminated(run_id, "KILLED")
