"""Trial records: results plus everything needed to know where they came from."""

from __future__ import annotations

import hashlib
import inspect
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..plugins import Registry
from ..spec import Spec, Trial, resolved_dict, spec_hash
from ..train.trainer import TrialResult


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


def source_hash(component_classes: list[type]) -> str:
    """A digest of the Python source that trains: the patchbench package and the modules that
    define the spec's components, third-party plugins included.

    A spec hash says what was asked, not which code answered; results from edited,
    uncommitted or reinstalled code would otherwise pool silently with older ones."""
    files = source_files(component_classes)
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name].read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def source_files(component_classes: list[type]) -> dict[str, Path]:
    """What :func:`source_hash` digests: every module of the patchbench package (all its
    stages), by name, and the files defining the components that are not part of it."""
    package = Path(__file__).resolve().parents[1]  # patchbench/, above this stage's folder
    files = {f"patchbench/{p.relative_to(package).as_posix()}": p
             for p in package.rglob("*.py")}
    for cls in component_classes:
        try:
            path = inspect.getsourcefile(cls)
        except TypeError:  # defined where no file backs it (an interactive session)
            continue
        if path is not None and Path(path).is_file() \
                and not Path(path).resolve().is_relative_to(package):
            files[cls.__module__] = Path(path)
    return files


def provenance(spec: Spec, registry: Registry) -> dict[str, Any]:
    """What every record of a run shares: the spec, its hash, versions, plugins, code. Where
    each trial ran (executor, host, device, threads) comes with its result."""
    import timm

    plugins, classes = {}, []
    for _, kind, ref in spec.component_refs():
        entry = registry.get(kind, ref.name)
        plugins[entry.plugin] = {"distribution": entry.distribution, "version": entry.version}
        classes.append(entry.cls)
    return {
        **metric_metadata(spec, registry),
        "benchmark": spec.name, "benchmark_version": spec.version, "spec_hash": spec_hash(spec),
        "spec": resolved_dict(spec),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "timm": timm.__version__, "patchbench": __version__},
        "plugins": plugins, "git_commit": git_commit(), "source_hash": source_hash(classes),
    }


def metric_metadata(spec: Spec, registry: Registry) -> dict[str, Any]:
    """Each metric's direction, range and short label by the key its values are stored
    under, and which metric defines "learned": tables and plots read these from the records,
    so they do not need the plugin that computed them."""
    ev = spec.evaluation
    metrics = {key: registry.get("metrics", ref.name).cls.metadata()
               for key, ref in zip(ev.metric_keys(), ev.metrics)}
    for key, meta in metrics.items():
        if key != meta["name"]:  # listed twice: the header says which one
            meta["short"] = meta["short"] + key[len(meta["name"]):]
    return {"metrics": metrics, "learned_metric": ev.learned_key}


def trial_head(trial: Trial) -> dict[str, Any]:
    """A trial's record fields known before it trains: its key, its cell of the grid and
    its swept values (trackers name and describe its run by them)."""
    head = {"key": trial.key, "architecture": trial.arch_label, "arm": trial.arm.name,
            "seed": trial.seed, "patch": trial.patch}
    if trial.sweep:
        head["sweep"] = dict(trial.sweep)
    return head


def make_record(result: TrialResult, base: dict[str, Any], started_at: str) -> dict[str, Any]:
    """One trial's record: its results, where it ran (executor, host, device, threads) and
    the run's provenance; resume fields only when it resumed."""
    record = {
        **trial_head(result.trial), "status": result.status, "error": result.error,
        "traceback": result.traceback,
        "failed_epoch": result.failed_epoch, "history": result.history,
        "summary": result.summary, "wall_time_s": round(result.wall_time_s, 3),
        "train_images_per_s": round(result.train_images_per_s, 1),
        "started_at": started_at, "finished_at": now(), **base, **result.where,
    }
    if result.resumed_after_epoch is not None:
        record["resumed_after_epoch"] = result.resumed_after_epoch
    if result.resumed_from_code is not None:
        record["resumed_from_source"] = result.resumed_from_code
    return record
