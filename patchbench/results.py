"""Trial results on disk (one JSON per trial) and their aggregation over seeds."""

from __future__ import annotations

import json
import os
import platform
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .trainer import TrialResult


def trial_filename(key: str) -> str:
    return key.replace("/", "__").replace(":", "-") + ".json"


def write_trial(out_dir: Path, result: TrialResult, provenance: dict[str, Any]) -> Path:
    """Write one trial's record atomically (a crash never leaves half a file)."""
    t = result.trial
    record = {
        "key": t.key, "architecture": t.arch_label, "arm": t.arm.name, "seed": t.seed,
        "patch": t.patch, "status": result.status, "error": result.error,
        "history": result.history, "summary": result.summary,
        "wall_time_s": round(result.wall_time_s, 3),
        "train_images_per_s": round(result.train_images_per_s, 1),
        **provenance,
    }
    path = out_dir / "trials" / trial_filename(t.key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)
    return path


def provenance(spec_name: str, version: str, spec_hash: str, resolved: dict[str, Any],
               device: torch.device) -> dict[str, Any]:
    import timm

    return {"benchmark": spec_name, "benchmark_version": version, "spec_hash": spec_hash,
            "spec": resolved, "device": str(device),
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "timm": timm.__version__, "patchbench": __version__}}


def read_trials(out_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((out_dir / "trials").glob("*.json"))]


@dataclass
class Cell:
    mean: float | None
    std: float | None
    n: int

    def text(self, digits: int = 3) -> str:
        if self.mean is None:
            return "-"
        if self.n < 2:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


def cell(values: list[float | None]) -> Cell:
    vals = [v for v in values if v is not None]
    if not vals:
        return Cell(None, None, 0)
    return Cell(statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0,
                len(vals))


def aggregate(records: list[dict[str, Any]], metrics: list[str]) -> list[dict[str, Any]]:
    """One row per (architecture, arm, patch): final metrics over seeds, the epoch the patch
    was learned, and the patch cost (control clean_acc - patched clean_acc, paired by seed)."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["architecture"], r["arm"], r["patch"]), []).append(r)
    rows = []
    for (arch, arm, patch), recs in groups.items():
        done = [r for r in recs if r["status"] == "completed"]
        row: dict[str, Any] = {"architecture": arch, "arm": arm, "patch": patch,
                               "n": len(done), "failed": len(recs) - len(done)}
        for m in metrics:
            row[m] = cell([r["summary"]["final"].get(m) for r in done])
        learned = [r["summary"].get("patch_learned_epoch") for r in done]
        row["patch_learned_epoch"] = cell(learned) if any(v is not None for v in learned) \
            else None
        controls = {r["seed"]: r for r in groups.get((arch, arm, "none"), [])
                    if r["status"] == "completed"}
        if patch != "none" and controls:
            pairs = [(controls[r["seed"]]["summary"]["final"].get("clean_acc"),
                      r["summary"]["final"].get("clean_acc"))
                     for r in done if r["seed"] in controls]
            row["patch_cost"] = cell([c - p for c, p in pairs
                                      if c is not None and p is not None])
        rows.append(row)
    return rows
