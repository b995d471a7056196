"""Trial records: results plus everything needed to know where they came from."""

from __future__ import annotations

import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .plugins import Registry
from .spec import Spec, resolved_dict, spec_hash
from .trainer import TrialResult


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def git_commit() -> str | None:
    """The commit of the patchbench checkout this code runs from, if it runs from one."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def provenance(spec: Spec, registry: Registry, device: torch.device) -> dict[str, Any]:
    """What every record of a run shares: the spec, its hash, versions, plugins, commit."""
    import timm

    plugins = {}
    for _, kind, ref in spec.component_refs():
        entry = registry.get(kind, ref.name)
        plugins[entry.plugin] = {"distribution": entry.distribution, "version": entry.version}
    return {
        "benchmark": spec.name, "benchmark_version": spec.version, "spec_hash": spec_hash(spec),
        "spec": resolved_dict(spec), "device": str(device),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "timm": timm.__version__, "patchbench": __version__},
        "plugins": plugins, "git_commit": git_commit(),
    }


def make_record(result: TrialResult, base: dict[str, Any], started_at: str) -> dict[str, Any]:
    t = result.trial
    return {
        "key": t.key, "architecture": t.arch_label, "arm": t.arm.name, "seed": t.seed,
        "patch": t.patch, "status": result.status, "error": result.error,
        "failed_epoch": result.failed_epoch, "history": result.history,
        "summary": result.summary, "wall_time_s": round(result.wall_time_s, 3),
        "train_images_per_s": round(result.train_images_per_s, 1),
        "started_at": started_at, "finished_at": now(), **base,
    }
