"""Feed trackers (:mod:`patchbench.tracking`) from the driver: the trials' progress events and
the records it stores, in a process of their own.

The driver only puts events on a queue, so a tracker costs the training loop nothing, under
the local executor as under Ray, whose events reach the driver the same way. A tracker that
raises is warned about once, by name, and fed nothing more: the grid goes on, and the store,
written before any tracker sees a record, is complete whatever trackers do. ``replay`` sends
stored records after the fact (``patchbench track``), skipping the trials a tracker holds.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import queue
import signal
import time
from pathlib import Path
from typing import Any, Callable

import torch
from pydantic import ValidationError

from .. import errors
from ..components import DataBundle, TrackedTrial, Tracker, TrackingContext
from ..crafting import use_crafted
from ..errors import PatchbenchError, render_errors
from ..plugins import Registry
from ..results.plot import plot_records
from ..results.preview import save_preview
from ..results.record_check import completed
from ..spec import ComponentRef, Spec
from ..spec.paths import parse_path
from ..spec.sweep import base_arm
from ..tracking import ParamValue

TRACKING_DIR = "tracking"
"""Under the output directory: the files trackers are given (curves, previews)."""
CLOSE_TIMEOUT_S = 300.0
"""How long the end of a grid waits for trackers to send what is queued (a slow server)."""
INTERRUPTED_CLOSE_S = 10.0
"""The same after Ctrl-C or an error: the user is waiting."""
OPEN_WAIT_S = 60.0
"""How long the grid waits for the trackers to open (imports, a W&B service) before it trains."""
TRACKING_NICENESS = 19
"""The tracking process's niceness (Linux): what it and the processes it starts (W&B's
service) do takes the CPU the training loop leaves, not the loop's own."""
Named = list[tuple[str, Tracker]]


# ---------------------------------------------------------------- which trackers

def add_tracking(spec: Spec, names: list[str], uri: str | None, registry: Registry) -> None:
    """``--track NAME`` (repeatable) and ``--track-uri URI`` onto the spec's ``tracking``
    (outside the spec hash): a named tracker the spec lacks is added with default params;
    the URI goes to the named trackers that take one (all of the spec's when none is named)."""
    for name in names:
        try:
            registry.get("trackers", name)
        except PatchbenchError as exc:
            raise PatchbenchError(f"--track {name}: {exc}") from None
        if all(ref.name != name for ref in spec.tracking):
            spec.tracking.append(ComponentRef(name=name))
    if uri is None:
        return
    chosen = [ref for ref in spec.tracking if ref.name in names or not names]
    taking = [ref for ref in chosen
              if "uri" in registry.get("trackers", ref.name).cls.Params.model_fields]
    if not taking:
        able = [n for n in registry.names("trackers")
                if "uri" in registry.get("trackers", n).cls.Params.model_fields]
        raise PatchbenchError(f"--track-uri: {'none of the trackers' if chosen else 'no tracker'}"
                              f" takes a URI; allowed with --track {', '.join(able)}")
    for ref in taking:
        ref.params = {**ref.params, "uri": uri}


def build_trackers(refs: list[ComponentRef], registry: Registry, where: str = "tracking"
                   ) -> Named:
    """The trackers ``refs`` name, built and checked (their packages are installed), before
    anything trains: a missing extra is one line naming it."""
    trackers: Named = []
    for i, ref in enumerate(refs):
        path = f"{where}[{i}]" if where == "tracking" else where
        try:
            tracker = registry.build("trackers", ref.name, ref.params)
        except ValidationError as exc:
            entry = registry.get("trackers", ref.name)
            raise PatchbenchError("; ".join(render_errors(exc, entry.cls.Params,
                                                          f"{path}.params"))) from None
        except PatchbenchError as exc:
            raise PatchbenchError(f"{path}.name: {exc}") from None
        try:
            tracker.check()
        except PatchbenchError as exc:
            raise PatchbenchError(f"{path}: {exc}") from None
        try:  # trackers run in a process of their own (TrackerFeed)
            pickle.dumps(tracker)
        except Exception as exc:  # noqa: BLE001 - plugin code: named, one line
            raise PatchbenchError(
                f"{path}: {tracker.origin or f'tracker {ref.name!r}'} cannot be pickled "
                f"({type(exc).__name__}: {exc}); a tracker is sent to the tracking process "
                "before it opens, so its class must be importable and its state "
                "picklable") from None
        trackers.append((ref.name, tracker))
    return trackers


# ---------------------------------------------------------------- what a tracker is given

def trial_params(record: dict[str, Any]) -> dict[str, ParamValue]:
    """The trial's resolved spec flattened, from its record alone (so that a replay gives
    what the live run gave): the trial's cell, dataset, its architecture, arm and patch
    with their params, training, evaluation; each swept path at the trial's value."""
    spec = record.get("spec") or {}
    out: dict[str, ParamValue] = {}
    for name in ("architecture", "arm", "patch", "seed"):
        out[name] = record[name]
    flatten("dataset", spec.get("dataset"), out)
    archs = spec.get("architectures") or []
    arch = next((a for a in archs if record["architecture"] in (a["name"], a["name"].split(":")[0])),
                archs[0] if len(archs) == 1 else None)
    if arch is not None:
        flatten("architecture", {"name": arch["name"], "params": arch.get("params", {})}, out)
        out["architecture"] = record["architecture"]
    arm = next((a for a in spec.get("arms") or [] if a["name"] == base_arm(record["arm"])), None)
    if arm is not None:
        flatten("arm", {k: v for k, v in arm.items() if k != "name"}, out)
    patches = spec.get("patch") or []
    patch = next((p for p in (patches if isinstance(patches, list) else [patches])
                  if p["name"] == record["patch"]), None)
    if patch is not None:
        flatten("patch.params", patch.get("params", {}), out)
    flatten("training", spec.get("training"), out)
    ev = dict(spec.get("evaluation") or {})
    ev["metrics"] = [m["name"] for m in ev.get("metrics", [])]
    flatten("evaluation", ev, out)
    for path, value in (record.get("sweep") or {}).items():
        parts = [str(p) for p in parse_path(path, f"sweep.{path}")]
        flatten("arm." + ".".join(parts[2:]) if parts[0] == "arms" else ".".join(parts),
                value, out)
    return out


def flatten(prefix: str, value: Any, out: dict[str, ParamValue]) -> None:
    """``value`` into ``out`` under dotted keys: mappings by key, lists and null as JSON text
    (trackers take scalars only)."""
    if isinstance(value, dict):
        for k, v in value.items():
            flatten(f"{prefix}.{k}", v, out)
    elif isinstance(value, (str, bool, int, float)):
        out[prefix] = value
    else:
        out[prefix] = json.dumps(value, sort_keys=True, default=str)


def tracked_trial(record: dict[str, Any], started_at: str | None = None) -> TrackedTrial:
    return TrackedTrial(record["key"], record["benchmark"], str(record["benchmark_version"]),
                        record["spec_hash"], record.get("source_hash") or "unrecorded",
                        started_at or record.get("started_at") or "", trial_params(record))


def with_epoch_times(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row with ``epoch_time_s``: its ``time_s`` less the row before's."""
    rows, before = [], None
    for row in history:
        row = dict(row)
        if before is not None and isinstance(row.get("time_s"), (int, float)):
            row["epoch_time_s"] = round(row["time_s"] - before, 3)
        before = row.get("time_s") if isinstance(row.get("time_s"), (int, float)) else None
        rows.append(row)
    return rows


def curves_png(record: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """``{"curves": PNG}`` of a completed trial's learning curves; empty for others."""
    if not completed([record]):
        return {}
    path = out_dir / TRACKING_DIR / record["spec_hash"] / record["key"] / "curves.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    plot_records([record], path, title=record["key"])
    return {"curves": path}


def previews(spec: Spec, data: DataBundle, registry: Registry, out_dir: Path,
             artifacts: dict[str, str]) -> dict[str, Path]:
    """One preview PNG per patch generator (``patchbench preview``'s first rows), for the
    trackers to show once; none for vectors. A preview that fails is a warning."""
    if len(data.image_shape) != 3:
        return {}
    found = {}
    for ref in spec.patches:
        path = out_dir / TRACKING_DIR / f"preview-{ref.name}.png"
        try:
            patch = registry.build("patches", ref.name, ref.params)
            use_crafted(patch, artifacts, torch.device("cpu"))
            patch.setup(data, torch.device("cpu"))
            save_preview(data, patch, path, 8, title=f"{spec.name}: {ref.name}")
        except Exception as exc:  # noqa: BLE001 - a preview is a courtesy, the grid goes on
            errors.warn(f"tracking: no preview of {ref.name}: {type(exc).__name__}: {exc}")
            continue
        found[ref.name] = path
    return found


# ---------------------------------------------------------------- feeding them

class TrackerFeed:
    """The trackers of one grid, fed in a process of their own from the driver's events and
    records. ``heads`` gives a trial's record fields known before it trains (key, cell,
    spec, hashes) for its params.

    A process, not a thread: a tracker's Python (SQLAlchemy, protobuf, a W&B client) holding
    the driver's GIL stalls the local executor's training loop at every GIL hand-off (about
    10% of a smoke grid's throughput, measured); the process also runs at a lower priority
    (``TRACKING_NICENESS``), so it takes the CPU the training loop leaves. Its warnings come
    back to the driver, which prints them."""

    def __init__(self, trackers: Named, ctx: TrackingContext,
                 heads: dict[str, dict[str, Any]]):
        self.ctx, self.heads = ctx, heads
        self.trials: dict[str, TrackedTrial] = {}
        self.logged: dict[str, set[int]] = {}
        self.last_time: dict[str, float] = {}
        mp = multiprocessing.get_context("spawn")  # a fork would copy Ray's and torch's threads
        self.inbox: Any = mp.Queue()
        self.outbox: Any = mp.Queue()
        self.opened = self.closed = False
        self.process = mp.Process(target=serve, args=(trackers, ctx, self.inbox, self.outbox,
                                                      os.getpid()),
                                  name="patchbench-tracking", daemon=True)
        self.process.start()

    def wait_open(self, timeout: float = OPEN_WAIT_S) -> None:
        """Block until the trackers have opened: their imports and services cost the CPU
        before the first trial trains, not during it."""
        self._drain(until="opened", timeout=timeout)
        if not self.opened and not self.process.is_alive():
            errors.warn(f"tracking: the trackers' process ended (exit code "
                        f"{self.process.exitcode}) before they opened; they get nothing from "
                        f"this run (the store is complete: `patchbench track "
                        f"{self.ctx.out_dir}` sends it later)")

    # The driver's side: each call only queues work (and prints what came back).

    def event(self, event: dict[str, Any], started_at: str | None) -> None:
        self._drain()
        key = event.get("key")
        if key is None or key not in self.heads:
            return
        if event["type"] == "start" and key not in self.trials:
            trial = self.trials[key] = tracked_trial(self.heads[key], started_at)
            self.logged[key] = set()
            self.inbox.put(("start_trial", (trial,)))
        elif event["type"] == "epoch" and key in self.trials:
            row, trial = dict(event["row"]), self.trials[key]
            if key in self.last_time and isinstance(row.get("time_s"), (int, float)):
                row["epoch_time_s"] = round(row["time_s"] - self.last_time[key], 3)
            if isinstance(row.get("time_s"), (int, float)):
                self.last_time[key] = row["time_s"]
            self.logged[key].add(row["epoch"])
            self.inbox.put(("log_epoch", (trial, row)))

    def finished(self, record: dict[str, Any]) -> None:
        """The record is stored: the epochs the tracker has not seen (a resumed trial's
        first ones), then the trial's end."""
        key = record["key"]
        if key not in self.trials:  # it failed before it started
            self.event({"type": "start", "key": key}, record.get("started_at"))
        trial, seen = self.trials.pop(key), self.logged.pop(key, set())
        self.last_time.pop(key, None)
        for row in with_epoch_times(record.get("history") or []):
            if row.get("epoch") not in seen:
                self.inbox.put(("log_epoch", (trial, row)))
        self.inbox.put(("finish", (trial, record)))

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        self.inbox.put(("close", ()))
        self.inbox.put(None)
        self._drain(until="closed", timeout=timeout)
        self.process.join(5.0 if self.closed else 0.0)
        if self.process.is_alive():
            errors.warn(f"tracking: trackers still sending after {timeout:.0f} s; left "
                        "behind (the store is complete: `patchbench track` sends it again)")
            self.process.terminate()
        self.inbox.cancel_join_thread()  # what a stopped process never read is dropped

    def _drain(self, until: str | None = None, timeout: float = 0.0) -> None:
        """Print the warnings the process sent; with ``until``, wait (at most ``timeout``
        seconds) for that word from it."""
        deadline = time.monotonic() + timeout
        while True:
            wait = deadline - time.monotonic() if until else 0.0
            try:
                kind, text = self.outbox.get(timeout=wait) if wait > 0 else \
                    self.outbox.get_nowait()
            except queue.Empty:
                if until and self.process.is_alive() and time.monotonic() < deadline:
                    continue
                return
            if kind == "warn":
                errors.warn(text)
                continue
            setattr(self, kind, True)
            if kind == until:
                return


# The tracking process's side.

def serve(trackers: Named, ctx: TrackingContext, inbox: Any, outbox: Any,
          parent: int) -> None:
    """The tracking process: the trackers' calls, one after another, until told to stop or
    the driver is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's: it closes us
    try:
        os.setpriority(os.PRIO_PROCESS, 0, max(TRACKING_NICENESS,
                                               os.getpriority(os.PRIO_PROCESS, 0)))
    except (AttributeError, OSError):  # not on Linux: trackers run at the driver's priority
        pass
    feeder = Served(trackers, ctx, lambda text: outbox.put(("warn", text)))
    feeder.each("open", ctx)
    outbox.put(("opened", ""))
    while True:
        try:
            job = inbox.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent:  # the driver was killed: nobody will close us
                return
            continue
        if job is None:
            break
        method, args = job
        if method == "finish":
            feeder.finish(*args)
        else:
            feeder.each(method, *args)
            if method == "close":
                outbox.put(("closed", ""))


class Served:
    """The trackers in the tracking process: a tracker that raises is warned about once, by
    name, and called no more."""

    def __init__(self, trackers: Named, ctx: TrackingContext, warn: Callable[[str], None]):
        self.trackers, self.ctx, self.warn = trackers, ctx, warn
        self.dead: set[str] = set()

    def finish(self, trial: TrackedTrial, record: dict[str, Any]) -> None:
        if len(self.dead) == len(self.trackers):
            return
        try:
            files = curves_png(record, self.ctx.out_dir)
        except Exception as exc:  # noqa: BLE001 - the curves are one file among the results
            self.warn(f"tracking: no curves for {trial.key}: {type(exc).__name__}: {exc}")
            files = {}
        self.each("finish_trial", trial, record, files)

    def each(self, method: str, *args: Any) -> None:
        for name, tracker in self.trackers:
            if name in self.dead:
                continue
            try:
                getattr(tracker, method)(*args)
            except Exception as exc:  # noqa: BLE001 - a tracker is plugin code: any failure
                self.dead.add(name)
                self.warn(failure(name, tracker, method, exc)
                          + f"; it gets nothing more from this run (the store is complete: "
                          f"`patchbench track {self.ctx.out_dir} --to {name}` sends it later)")


def failure(name: str, tracker: Tracker, method: str, exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return (f"{tracker.origin or f'tracker {name!r}'} failed in {method}: "
            f"{type(exc).__name__}: {first}")


# ---------------------------------------------------------------- after the fact

def replay(records: list[dict[str, Any]], ref: ComponentRef, registry: Registry,
           out_dir: Path) -> tuple[int, int]:
    """Send stored records to one tracker, skipping the trials it already holds; (sent,
    skipped). A failure is one line naming the tracker (nothing else runs here)."""
    [(name, tracker)] = build_trackers([ref], registry, f"--to {ref.name}")
    sent = skipped = 0
    method = "open"
    try:
        tracker.open(TrackingContext(out_dir))
        for record in records:
            trial = tracked_trial(record)
            method = "has_trial"
            held = tracker.has_trial(trial)
            if not isinstance(held, bool):
                raise TypeError(f"has_trial returned {held!r}, not True or False")
            if held:
                skipped += 1
                continue
            method = "start_trial"
            tracker.start_trial(trial)
            method = "log_epoch"
            for row in with_epoch_times(record.get("history") or []):
                tracker.log_epoch(trial, row)
            method = "finish_trial"
            tracker.finish_trial(trial, record, curves_png(record, out_dir))
            sent += 1
        method = "close"
        tracker.close()
    except Exception as exc:  # noqa: BLE001 - plugin code: named, one line
        raise PatchbenchError(failure(name, tracker, method, exc)) from None
    return sent, skipped
