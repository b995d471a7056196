"""Sweeps: a spec's ``sweep:`` maps field paths to lists of values; the grid runs every
combination of them.

A path has the ``--set`` syntax (``training.batch_size``, ``arms.small_lr.optimizer.lr``,
``arms[1].schedule.params.milestones``). A path under ``arms.<arm>.`` changes that arm only;
any other path changes every arm. Each combination is applied to the raw spec, as ``--set``
would, and validated and resolved like a spec of its own; each trial trains with the resolved
spec of its combination. An arm that a combination changes becomes a variant named by the
values that change it, ``small_lr[lr=0.01]`` (the last path segment, or as many trailing
segments as tell two swept paths apart); an arm that no swept path changes is planned once.

A trial's record carries ``sweep``: each swept path that changes the trial → its value.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from ..errors import PatchbenchError, SpecError, format_loc, render_errors
from ..plugins import Registry
from .models import NOT_SCIENCE, Spec
from .paths import parse_path, set_path
from .resolve import resolve

MAX_COMBINATIONS = 10_000
MAX_LINES = 10
NOT_SWEPT = {
    **NOT_SCIENCE,
    "name": "the benchmark's name", "version": "the benchmark's version",
    "description": "the description",
    "seeds": "the seeds (every trial runs every seed: list them in `seeds`)",
    "sweep": "the sweep itself",
}
"""Top-level fields a sweep may not change: they are not what a trial trains."""
NOT_SWEPT_PATHS = {
    ("evaluation", "metrics"): "the metrics (records of one spec share their columns)",
    ("evaluation", "learned_metric"): "the learned metric (records of one spec share it)",
    ("training", "threads"): "CPU threads (set once per run, for every trial)",
    ("training", "device"): "the device (chosen once per run, for every trial)",
    ("training", "deterministic"): "determinism (set once per run, for every trial)",
}
UNSAFE = re.compile(r"[^A-Za-z0-9_.+\-=,:\[\]{}]")
"""Characters a variant name may not hold (it is part of trial keys and file names)."""


@dataclass(frozen=True)
class Combination:
    """One combination: each swept path → its value, and the spec it resolves to."""

    values: dict[str, Any]
    spec: Spec


# ---------------------------------------------------------------- names

def segments(path: str) -> list[str]:
    """A path's segments as text: ``arms[1].optimizer.lr`` → ``arms``, ``1``, ``optimizer``,
    ``lr``."""
    return [str(p) for p in parse_path(path, f"sweep.{path}")]


def short_keys(paths: list[str]) -> dict[str, str]:
    """Each path's short key: its last segment, or as many trailing segments as tell it
    apart from the other paths (``optimizer.lr`` next to ``sam.lr``)."""
    split = {p: parse_path(p, f"sweep.{p}") for p in paths}
    out = {}
    for path, parts in split.items():
        for n in range(1, len(parts) + 1):
            tail = parts[-n:]
            if all(other[-n:] != tail for q, other in split.items() if q != path):
                break
        out[path] = _render_loc(tail)
    return out


def _render_loc(parts: list[str | int]) -> str:
    return format_loc(tuple(parts)).lstrip(".") if isinstance(parts[0], str) \
        else f"[{parts[0]}]" + format_loc(tuple(parts[1:]))


def value_text(value: Any) -> str:
    """A value as a variant name shows it: ``0.01``, ``[7,14]``, ``true``, ``cosine``;
    characters unfit for file names become ``_``."""
    text = value if isinstance(value, str) else \
        json.dumps(value, separators=(",", ":"), sort_keys=True).replace('"', "")
    return UNSAFE.sub("_", text)


def variant_name(arm: str, values: dict[str, Any]) -> str:
    """``small_lr[lr=0.01,milestones=[7]]``: the arm and the swept values that change it, in
    the sweep's order; the arm itself when none do."""
    if not values:
        return arm
    keys = short_keys(list(values))
    return f"{arm}[{','.join(f'{keys[p]}={value_text(v)}' for p, v in values.items())}]"


def base_arm(name: str) -> str:
    """The arm a variant name comes from (arm names cannot hold ``[``)."""
    return name.split("[", 1)[0]


# ---------------------------------------------------------------- expansion

def target_arm(path: str, raw: dict[str, Any]) -> str | None:
    """The arm a path changes, by name, or None for a path that changes every arm."""
    parts = parse_path(path, f"sweep.{path}")
    if parts[0] != "arms" or len(parts) < 2:
        return None
    arms = raw.get("arms") if isinstance(raw.get("arms"), list) else []
    if isinstance(parts[1], int):
        if 0 <= parts[1] < len(arms) and isinstance(arms[parts[1]], dict):
            return arms[parts[1]].get("name")
        return None  # set_path says what is wrong
    return parts[1]


def _refused(path: str) -> str | None:
    parts = parse_path(path, f"sweep.{path}")
    if parts[0] in NOT_SWEPT:
        return f"cannot be swept: {NOT_SWEPT[parts[0]]}"
    for prefix, what in NOT_SWEPT_PATHS.items():
        if tuple(parts[:len(prefix)]) == prefix:
            return f"cannot be swept: {what}"
    if parts[0] == "arms" and (len(parts) < 3 or parts[2] == "name"):
        return ("cannot be swept: an arm or its name; allowed: a field of an arm "
                "(arms.<arm>.optimizer.lr)")
    return None


def _resolve_point(raw: dict[str, Any], values: dict[str, Any], source: str,
                   registry: Registry) -> Spec:
    data = copy.deepcopy(raw)
    for path, value in values.items():
        set_path(data, path, copy.deepcopy(value), f"sweep.{path}")
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(source, render_errors(exc, Spec)) from None
    resolve(spec, source, registry)
    return spec


def _normal(path: str, raw: dict[str, Any]) -> str:
    """A path with its arm by index, as validation errors name it (``arms[1].optimizer.lr``)."""
    parts = parse_path(path, f"sweep.{path}")
    arms = raw.get("arms") if isinstance(raw.get("arms"), list) else []
    if parts[0] == "arms" and len(parts) > 1 and isinstance(parts[1], str):
        names = [a.get("name") if isinstance(a, dict) else None for a in arms]
        if parts[1] in names:
            parts[1] = names.index(parts[1])
    return format_loc(tuple(parts))


def _problems(path: str, raw: dict[str, Any], exc: PatchbenchError) -> list[str]:
    """A point's problems without the swept path when they are about that very field."""
    normal = _normal(path, raw)
    lines = exc.problems if isinstance(exc, SpecError) else [str(exc)]
    out = []
    for line in lines:
        line = line.removeprefix(f"sweep.{path}: ")
        out.append(line[len(normal) + 2:] if line.startswith(f"{normal}: ") else line)
    return out


def expand(data: dict[str, Any], spec: Spec, source: str, registry: Registry) -> list[Combination]:
    """Every combination of the spec's sweep, validated and resolved, in the sweep's order
    (the last path varies fastest). ``data`` is the raw spec the sweep is applied to.

    When a combination fails, a value that fails alone is named (``sweep.<path>[i]``: one
    line per path and problem); values valid alone that clash are named together."""
    raw = {k: v for k, v in data.items() if k != "sweep"}
    problems: list[str] = []
    for path, values in spec.sweep.items():
        try:
            refused = _refused(path)
        except PatchbenchError as exc:
            problems.append(str(exc))
            continue
        if refused:
            problems.append(f"sweep.{path}: {refused}")
        elif not values:
            problems.append(f"sweep.{path}: an empty list; allowed: a list of one value or more")
        else:
            try:  # a path that leads nowhere (an arm that does not exist), whatever the value
                set_path(copy.deepcopy(raw), path, None, f"sweep.{path}")
            except PatchbenchError as exc:
                problems.append(str(exc))
    if problems:
        raise SpecError(source, problems)
    size = 1
    for values in spec.sweep.values():
        size *= len(values)
    if size > MAX_COMBINATIONS:
        raise SpecError(source, [f"sweep: {size:,} combinations; at most "
                                 f"{MAX_COMBINATIONS:,} are allowed"])
    paths = list(spec.sweep)
    alone: dict[tuple[str, int], list[str]] = {}

    def fails_alone(path: str, i: int) -> list[str]:
        if (path, i) not in alone:
            try:
                _resolve_point(raw, {path: spec.sweep[path][i]}, source, registry)
                alone[(path, i)] = []
            except PatchbenchError as exc:
                alone[(path, i)] = _problems(path, raw, exc)
        return alone[(path, i)]

    points = []
    found: dict[tuple[str, str], str] = {}  # (what, problem) -> the line that says it
    for combo in itertools.product(*(range(len(v)) for v in spec.sweep.values())):
        values = {p: spec.sweep[p][i] for p, i in zip(paths, combo)}
        try:
            points.append(Combination(values, _resolve_point(raw, values, source, registry)))
        except PatchbenchError as exc:
            # Name the value that is bad by itself (sweep.<path>[i]) when there is one;
            # otherwise the values are valid alone and clash together. Each problem is said
            # once (a path that does not exist fails every value alike).
            culprits = [(p, i) for p, i in zip(paths, combo) if fails_alone(p, i)
                        and set(alone[(p, i)]) <= set(_problems(p, raw, exc))]
            for p, i in culprits:
                for line in alone[(p, i)]:
                    found.setdefault((p, line), f"sweep.{p}[{i}]: {line}")
            if not culprits:
                where = ", ".join(f"{p}={value_text(v)}" for p, v in values.items())
                for line in exc.problems if isinstance(exc, SpecError) else [str(exc)]:
                    found.setdefault(("", line), f"sweep: the combination {where}: {line}")
    if found:
        lines = list(found.values())
        if len(lines) > MAX_LINES:
            lines = lines[:MAX_LINES] + [f"sweep: and {len(lines) - MAX_LINES} more problems"]
        raise SpecError(source, lines)
    return points


def points(spec: Spec, registry: Registry, source: str = "spec") -> list[Combination]:
    """The spec's combinations: those ``load_spec`` made, else made from the resolved spec."""
    if not spec.sweep:
        return []
    if not spec._sweep_points:
        data = spec.model_dump(mode="json")
        spec._sweep_points = expand(data, spec, source, registry)
    return spec._sweep_points


def sweep_size(spec: Spec) -> int:
    size = 1
    for values in spec.sweep.values():
        size *= len(values)
    return size if spec.sweep else 0
