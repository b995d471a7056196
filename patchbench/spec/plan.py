"""The grid: every trial a spec asks for, in the order they run.

A trial is one cell of the grid (architecture, arm, seed, patch or its no-patch control);
its key names it in the store, in checkpoints and on the command line (``--only``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import PatchbenchError
from ..plugins import Registry
from .models import Arm, ComponentRef, Spec
from .sweep import base_arm, points, target_arm, variant_name


@dataclass(frozen=True)
class Trial:
    """One cell of the grid: an architecture, an arm, a seed, with or without the patch."""

    arch: ComponentRef
    arch_label: str
    arm: Arm
    seed: int
    patch: str  # the patch generator's name, or "none" for a control trial
    sweep: dict[str, Any] = field(default_factory=dict)
    """The swept paths that change this trial → their values (``spec.sweep``)."""

    @property
    def key(self) -> str:
        return f"{self.arch_label}/{self.arm.name}/{self.patch}/seed{self.seed}"


def plan_trials(spec: Spec, registry: Registry) -> list[Trial]:
    """Every trial of the grid, in the order they run (controls right after their arm)."""
    patches = [p.name for p in spec.patches] or ["none"]
    trials = []
    for ref in spec.architectures:
        label = registry.build("architectures", ref.name, ref.params).label()
        for seed in spec.seeds:
            for arm in spec.arms:
                trials += [Trial(ref, label, arm, seed, patch) for patch in patches]
                if arm.control and spec.patches:
                    trials.append(Trial(ref, label, arm, seed, "none"))
    return trials


def plan(spec: Spec, registry: Registry) -> list[tuple[Spec, Trial]]:
    """Every trial of the grid with the spec it trains with, in the order they run.

    Without a sweep, :func:`plan_trials` of the spec itself. With one, each combination's
    trials; an arm a combination changes is renamed to its variant, an arm no swept path
    changes is planned once (with the spec without the sweep). Trials run architecture by
    architecture, seed by seed, arm by arm as listed, an arm's variants in the sweep's
    order."""
    if not spec.sweep:
        return [(spec, t) for t in plan_trials(spec, registry)]
    grid = points(spec, registry)
    raw = spec.model_dump(mode="json")
    targets = {path: target_arm(path, raw) for path in spec.sweep}
    base = spec.model_copy(update={"sweep": {}})
    base._sweep_points = []
    planned: dict[str, tuple[Spec, Trial]] = {}
    for point in grid:
        for trial in plan_trials(point.spec, registry):
            values = {p: v for p, v in point.values.items()
                      if targets[p] in (None, trial.arm.name)}
            if not values:
                planned.setdefault(trial.key, (base, trial))
                continue
            arm = trial.arm.model_copy(update={"name": variant_name(trial.arm.name, values)})
            variant = replace(trial, arm=arm, sweep=values)
            if variant.key in planned and planned[variant.key][1].sweep != values:
                raise PatchbenchError(
                    f"sweep: {variant.arm.name} names two different points "
                    f"({planned[variant.key][1].sweep} and {values}); sweep values must "
                    "differ in how they are written")
            planned.setdefault(variant.key, (point.spec, variant))
    archs = list(dict.fromkeys(t.arch_label for _, t in planned.values()))
    arms = [a.name for a in spec.arms]
    seeds = list(spec.seeds)

    def order(item: tuple[Spec, Trial]) -> tuple[int, int, int]:
        t = item[1]
        return archs.index(t.arch_label), seeds.index(t.seed), arms.index(base_arm(t.arm.name))
    return sorted(planned.values(), key=order)
