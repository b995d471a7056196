"""What a component class must be before it is used: checked when the registry is built.

These are the contract's static parts: a ``name``, every abstract method implemented,
``Params`` defaults that satisfy their own constraints, a component that can be built from
them, and a metric's declared range and direction. They are checked once per class, so a
plugin's mistake is reported by ``validate`` and ``list``, naming the plugin, instead of as
a traceback from inside a trial hours later.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ValidationError

from .components import Component, Metric, Optimizer, Params, PatchGenerator
from .errors import render_errors


def component_problems(cls: type[Component], kind: str) -> list[str]:
    """Every way ``cls`` breaks the interface of ``kind``; empty when it conforms."""
    problems: list[str] = []
    name = cls.__dict__.get("name", getattr(cls, "name", None))
    if not (isinstance(name, str) and name):
        problems.append("it has no `name` (a class attribute: the name specs use)")
    missing = sorted(getattr(cls, "__abstractmethods__", ()))
    if missing:
        problems.append(f"it does not implement the abstract method(s) {', '.join(missing)}")
    params = getattr(cls, "Params", None)
    if not (isinstance(params, type) and issubclass(params, Params)):
        problems.append("its `Params` is not a subclass of patchbench.components.Params")
        return problems
    broken = broken_defaults(params)
    problems += [f"its Params default breaks its own constraint: {b}" for b in broken]
    if issubclass(cls, Metric):
        problems += metric_problems(cls)
    if issubclass(cls, PatchGenerator) and cls.crafts:
        lacking = [m for m in ("craft", "use_crafted")
                   if getattr(cls, m) is getattr(PatchGenerator, m)]
        if lacking:
            problems.append(f"it sets crafts = True but does not implement {', '.join(lacking)}")
    if issubclass(cls, Optimizer):
        taken = sorted({"name", "lr"} & set(params.model_fields))
        if taken:
            problems.append(f"its Params define {', '.join(taken)}, which the spec's optimizer "
                            "mapping holds itself (the LR comes from the schedule)")
    if not (missing or broken or required_fields(params)):
        try:  # the component as a spec naming it without params would build it
            cls(params())
        except Exception as exc:  # noqa: BLE001 - any failure is the plugin's
            problems.append(f"it cannot be built with its default params: "
                            f"{type(exc).__name__}: {exc}")
    return problems


def required_fields(params: type[BaseModel]) -> list[str]:
    return [n for n, f in params.model_fields.items() if f.is_required()]


def broken_defaults(params: type[BaseModel]) -> list[str]:
    """``field: message`` for each default that its own field would refuse (pydantic does
    not validate defaults)."""
    defaults = {n: f.get_default(call_default_factory=True)
                for n, f in params.model_fields.items() if not f.is_required()}
    try:
        params.model_validate(defaults)
    except ValidationError as exc:
        missing = {n for n in required_fields(params)}
        return [line for line in render_errors(exc, params)
                if line.split(":", 1)[0] not in missing]
    return []


def metric_problems(cls: type[Metric]) -> list[str]:
    problems = []
    low_high = cls.value_range
    if not (isinstance(low_high, tuple) and len(low_high) == 2
            and all(isinstance(v, (int, float)) and math.isfinite(v) for v in low_high)
            and low_high[0] <= low_high[1]):
        problems.append(f"its value_range must be (low, high), finite, low <= high; got "
                        f"{low_high!r}")
    if not isinstance(cls.higher_is_better, bool):
        problems.append(f"its higher_is_better must be True or False; got "
                        f"{cls.higher_is_better!r}")
    return problems
