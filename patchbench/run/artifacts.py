"""Crafted poisons as artifacts of a grid: crafted once per crafting configuration, reused by
every trial and every rerun.

An artifact is keyed by a hash of what made it: the poison's resolved params (its surrogate
included), the dataset's, and the source of the code (patchbench and the poison's plugin).
It lives at ``<output dir>/artifacts/<patch>-<key>.pt``; a crafting run that was killed
resumes from ``<patch>-<key>.partial`` next time.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.markup import escape

from ..components import DataBundle
from ..crafting import load_crafted
from ..plugins import Registry
from ..spec import ComponentRef
from .jobs import CraftJob, Executor, Report, TrialJob
from .progress import console
from .records import source_hash


def artifact_key(patch: ComponentRef, dataset: ComponentRef, registry: Registry) -> str:
    code = source_hash([registry.get("patches", patch.name).cls])
    blob = json.dumps({"patch": patch.model_dump(mode="json"),
                       "dataset": dataset.model_dump(mode="json"), "code": code},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def artifact_path(out: Path, patch: str, key: str) -> Path:
    return (out / "artifacts" / f"{patch}-{key}.pt").absolute()


def attach_artifacts(jobs: list[TrialJob], data: DataBundle, executor: Executor,
                     registry: Registry, out: Path, report: Report
                     ) -> tuple[list[TrialJob], dict[str, dict[str, Any]]]:
    """The jobs with the artifacts of their crafted poisons (crafting those that are not
    there yet, each once, on the executor), and each job's artifact metadata by trial key.
    The jobs share ``data`` (one dataset group)."""
    found: dict[str, dict[str, Any]] = {}
    out_jobs, metas = [], {}
    for job in jobs:
        if job.trial.patch == "none":
            out_jobs.append(job)
            continue
        ref = job.spec.patch_ref(job.trial.patch)
        if not registry.get("patches", ref.name).cls.crafts:
            out_jobs.append(job)
            continue
        key = artifact_key(ref, job.spec.dataset, registry)
        if key not in found:
            path = artifact_path(out, ref.name, key)
            if path.exists():
                meta = load_crafted(path)[1]
                console.print(f"{escape(ref.name)}: reusing its crafted poison {path} (crafted "
                              f"in {meta.get('seconds', 0):.1f} s)", soft_wrap=True)
            else:
                again = " (resuming a killed crafting run)" \
                    if path.with_suffix(".partial").exists() else ""
                console.print(f"{escape(ref.name)}: crafting its poison on the {executor.name} "
                              f"executor{again}; it goes to {path}", soft_wrap=True)
                craft = CraftJob(ref, path, job.device, job.threads, job.spec.dataset)
                meta = executor.craft(craft, data, report)
                console.print(f"{escape(ref.name)}: crafted in {meta['seconds']:.1f} s",
                              soft_wrap=True)
            found[key] = {**meta, "key": key, "path": str(path)}
        meta = found[key]
        out_jobs.append(replace(job, artifacts={ref.name: meta["path"]}))
        metas[job.key] = meta
    return out_jobs, metas
