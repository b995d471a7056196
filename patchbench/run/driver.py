"""Drive a grid: plan it, decide what to skip or resume, hand trials to an executor, store
each record as it arrives, show progress and the leaderboard.

Trials already completed under the same spec hash are skipped; a trial that was killed or
failed resumes from its last epoch checkpoint; a diverged or failing trial is recorded and
the grid goes on. Both skipping and resuming say so when the code has changed since. The
driver is the only writer of the store, whichever executor trains.
"""

from __future__ import annotations

import fnmatch
import json
import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from rich.markup import escape

from ..boundary import load_dataset
from ..components import DataBundle, TrackingContext
from ..errors import PatchbenchError
from ..plugins import Registry
from ..results.leaderboard import build_boards, sources_of, tables
from ..results.store import Store
from ..results.table import print_tables
from ..spec import Spec, Trial, plan
from ..train import checkpoint as ckpt
from ..train import estimate as est
from ..train.preflight import check_inputs, preflight
from ..train.runtime import configure
from .artifacts import attach_artifacts
from .executors import make_executor
from .jobs import TrialJob
from .progress import GridProgress, console
from .records import make_record, now, provenance, trial_head
from .tracking import INTERRUPTED_CLOSE_S, TrackerFeed, build_trackers, previews


def checkpoint_path(out: Path, spec_hash: str, trial: Trial) -> Path:
    name = trial.key.replace("/", "__").replace(":", "-")
    return (out / "checkpoints" / spec_hash / f"{name}.pt").absolute()


def run_spec(spec: Spec, registry: Registry, out: Path | None = None,
             spec_path: str = "spec", force: bool = False,
             on_event: Callable[[dict[str, Any]], None] | None = None,
             only: list[str] = ()) -> int:
    """Train the grid; return the exit status (1 when a trial diverged or failed).

    ``only`` keeps the trials whose key matches one of its shell patterns (the spec hash, and
    so the store, stay those of the whole grid). ``on_event`` sees every progress event the
    trials send (:mod:`patchbench.run.jobs`)."""
    out = out or spec.out_dir
    trackers = build_trackers(spec.tracking, registry)  # a missing extra costs no training
    planned = plan(spec, registry)
    spec_of = {t.key: s for s, t in planned}
    trials = select([t for _, t in planned], only, spec_path)
    executor = make_executor(spec, spec_path, registry)
    store = Store.in_dir(out)
    base = provenance(spec, registry)
    h = base["spec_hash"]
    previous = store.records(h)
    done = set() if force else {r["key"] for r in previous if r["status"] == "completed"}
    todo = [t for t in trials if t.key not in done]
    if not todo:
        console.print(f"{spec.name} v{spec.version}: all {len(trials)} trials already completed "
                      f"in {out} (spec {h}); nothing to train. Use --force to train again.")
        warn_other_code(previous, base["source_hash"])
        print_tables(tables(build_boards(previous)))
        return 0
    if len(todo) < len(trials):
        console.print(f"skipping {len(trials) - len(todo)} of {len(trials)} trials already "
                      f"completed in {out} (spec {h}); use --force to train them again")
        warn_other_code(previous, base["source_hash"])
    configure(spec.training.threads, spec.training.deterministic)
    settings = executor.job_settings()
    jobs = [TrialJob(spec_of[t.key], t, checkpoint_path(out, h, t), base["source_hash"],
                     executor.name, **settings, fresh=force) for t in todo]
    # One dataset per group of jobs: a sweep may change the dataset; most specs have one.
    groups: dict[str, list[TrialJob]] = {}
    for job in jobs:
        groups.setdefault(json.dumps(job.spec.dataset.model_dump(mode="json"), sort_keys=True),
                          []).append(job)
    datasets: dict[str, DataBundle] = {}
    for ref, group in groups.items():
        first = group[0].spec
        data = datasets[ref] = load_dataset(registry.build("datasets", first.dataset.name,
                                                           first.dataset.params))
        checked: set[str] = set()
        for job in group:
            if job.spec is spec or not spec.sweep:
                fits = ""
            else:
                fits = json.dumps([job.spec.model_dump(mode="json")[k] for k in
                                   ("patch", "architectures", "arms")], sort_keys=True)
            if fits not in checked:
                checked.add(fits)
                check_inputs(job.spec, data.image_shape, data.num_classes, registry, spec_path)
                preflight(job.spec, data, registry, spec_path)
    if force:
        for job in jobs:
            ckpt.remove(job.checkpoint)
    crafted: dict[str, dict[str, Any]] = {}
    for ref, group in groups.items():  # crafted poisons first: every trial of theirs needs them
        groups[ref], found = attach_artifacts(group, datasets[ref], executor, registry, out,
                                              on_event or (lambda event: None))
        crafted.update(found)
    jobs = [job for group in groups.values() for job in group]
    data, first = datasets[next(iter(groups))], jobs[0].spec
    epochs = sorted({j.spec.training.epochs for j in jobs})
    steps = sorted({j.spec.training.steps_per_epoch(len(datasets[ref].y_train))
                    for ref, group in groups.items() for j in group})
    console.print(f"[bold]{spec.name}[/] v{spec.version}: {len(todo)} trials on "
                  f"{settings['device']} ({executor.name} executor), {_span(epochs)} "
                  f"epochs x {_span(steps)} steps; results in {out}")
    if executor.name == "local":
        say_how_long(first, todo, data, executor.device, registry, jobs[0].artifacts)
    feed = None
    if trackers:
        heads = {j.key: {**base, **trial_head(j.trial)} for j in jobs}
        feed = TrackerFeed(trackers, TrackingContext(
            out, h, previews(spec, data, registry, out, jobs[0].artifacts)), heads)
        feed.wait_open()
    failed = 0
    with GridProgress(len(todo), base["source_hash"]) as progress, tracking(feed):
        def report(event: dict[str, Any]) -> None:
            progress.event(event)
            if feed is not None:  # queued only: trackers never hold up the training loop
                feed.event(event, progress.started_at(event.get("key", "")))
            if on_event is not None:
                on_event(event)

        for job, result in (done for ref, group in groups.items()
                            for done in executor.execute(group, datasets[ref], report)):
            started = progress.started_at(job.key) or now()
            record = make_record(result, base, started)
            if job.key in crafted:
                record["artifact"] = crafted[job.key]
            store.put(record)
            if feed is not None:  # after the store: nothing stored depends on a tracker
                feed.finished(record)
            if result.status != "failed":  # a failed trial resumes on the next run
                ckpt.remove(job.checkpoint)
            progress.finish(job.key)
            if result.traceback:
                print(result.traceback, file=sys.stderr, end="")
            if result.status != "completed":
                failed += 1
                console.print(f"[red]{escape(job.key)}: {result.status}: "
                              f"{escape(result.error or '')}[/]", soft_wrap=True)
            else:
                console.print(f"{escape(job.key)}: done in {result.wall_time_s:.1f} s "
                              f"({result.train_images_per_s:.0f} training images/s)",
                              soft_wrap=True)
    print_tables(tables(build_boards(store.records(h))))
    if failed:
        console.print(f"[red]{failed} of {len(todo)} trials did not complete[/]")
    return 1 if failed else 0


@contextmanager
def tracking(feed: TrackerFeed | None) -> Iterator[None]:
    """Trackers get what is queued when the grid ends; after Ctrl-C or an error, what they
    can send in a few seconds (a rerun resumes, ``patchbench track`` sends the rest)."""
    if feed is None:
        yield
        return
    try:
        yield
    except BaseException:
        feed.close(INTERRUPTED_CLOSE_S)
        raise
    feed.close()


def _span(values: list[int]) -> str:
    """``4``, or ``4 to 8`` where a sweep makes trials differ."""
    return str(values[0]) if len(values) == 1 else f"{values[0]} to {values[-1]}"


def select(trials: list[Trial], only: list[str], spec_path: str) -> list[Trial]:
    """The trials whose key matches one of the ``only`` patterns, in the patterns' order."""
    if not only:
        return trials
    chosen: list[Trial] = []
    for pattern in only:
        # Brackets also match themselves: swept arms are named `small_lr[lr=0.01]`.
        literal = re.sub(r"([\[\]])", r"[\1]", pattern)
        chosen += [t for t in trials if (fnmatch.fnmatchcase(t.key, pattern)
                                         or fnmatch.fnmatchcase(t.key, literal))
                   and t not in chosen]
    if not chosen:
        raise PatchbenchError(f"{spec_path}: --only {' '.join(only)}: no trial key matches; "
                              f"keys look like {trials[0].key}")
    return chosen


def say_how_long(spec: Spec, todo: list[Trial], data: DataBundle, device: torch.device,
                 registry: Registry, artifacts: dict[str, str] | None = None) -> None:
    """Time the first steps and say what the grid costs here; never prompt."""
    if est.bf16_is_slow(device, spec.training.precision):
        console.print("[yellow]training.precision: bf16 on a CPU without native bf16 runs "
                      "many times slower than fp32 here; consider --set "
                      "training.precision=fp32[/]", soft_wrap=True)
    try:
        e = est.estimate(spec, todo[0], len(todo), data.to(device), device, registry,
                         artifacts)
    except Exception:  # noqa: BLE001 - a trial that cannot even step fails as itself below
        return
    console.print(f"estimate on {device}: {e.step_s:.3g} s per step, about "
                  f"{est.duration(e.trial_s)} per trial, {est.duration(e.grid_s)} for the "
                  f"{len(todo)} trials", soft_wrap=True)
    if e.grid_s > est.LONG_GRID_S:
        cheaper = f"for a look in minutes, run {spec.reduced_spec}; " if spec.reduced_spec \
            else ""
        console.print(f"[yellow]this grid needs more than a day on {device}: {cheaper}for the "
                      "full protocol, a GPU (training.device: cuda; several with --executor "
                      "ray). Training starts anyway.[/]", soft_wrap=True)


def warn_other_code(records: list[dict], source: str) -> None:
    """Completed trials are kept across code changes; say when some came from other code."""
    other = [r for r in records if r["status"] == "completed" and sources_of(r) != {source}]
    if other:
        found = ", ".join(sorted(set().union(*map(sources_of, other)) - {source}))
        console.print(f"[yellow]{len(other)} of the completed trials were trained by other code "
                      f"(source {found}, now {source}); they are kept. Use --force to train "
                      "them again with this code.[/]", soft_wrap=True)
