"""Resolution: every component a spec names exists, its params validate, and the validated
params (defaults filled in) replace the given ones: the resolved spec is what is hashed."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from ..crafting import SurrogateSpec
from ..errors import PatchbenchError, SpecError, render_errors
from ..plugins import Registry
from .models import AUGMENT_ORDERS, Evaluation, OptimizerRef, Spec


def resolve(spec: Spec, source: str, registry: Registry) -> None:
    """Check every component name exists and its params validate; store the validated params."""
    problems: list[str] = []
    for where, kind, ref in spec.component_refs():
        try:
            entry = registry.get(kind, ref.name)
        except PatchbenchError as exc:
            problems.append(f"{where}.name: {exc}")
            continue
        flat = isinstance(ref, OptimizerRef)
        try:
            params = entry.cls.Params(**ref.params)
        except ValidationError as exc:
            lines = render_errors(exc, entry.cls.Params,
                                  prefix=where if flat else f"{where}.params")
            problems += [line.replace("unknown key; allowed: ", "unknown key; allowed: name, lr, ")
                         for line in lines] if flat else lines
            continue
        resolved = params.model_dump(mode="json")  # defaults filled in: the resolved spec
        for name in type(params).model_fields:
            value = getattr(params, name)
            if isinstance(value, SurrogateSpec) and name in resolved:
                found, lines = _surrogate(value, f"{where}.params.{name}", registry)
                problems += lines
                resolved[name] = found
        ref.params = resolved
    problems += _tracking_problems(spec, registry)
    if not problems:
        problems += _metric_problems(spec.evaluation)
        problems += _augment_order_problems(spec)
    if not problems:
        seen: dict[str, int] = {}
        for i, ref in enumerate(spec.architectures):
            label = registry.build("architectures", ref.name, ref.params).label()
            if label in seen:
                problems.append(f"architectures[{i}]: the same model as "
                                f"architectures[{seen[label]}] ({label})")
            seen.setdefault(label, i)
    if problems:
        raise SpecError(source, problems)


def _tracking_problems(spec: Spec, registry: Registry) -> list[str]:
    """Each tracker exists and its params validate (resolved in place). Trackers are not
    among ``component_refs``: they change no number, so neither the spec hash nor the
    source hash (nor the plugins a record lists) depends on them."""
    problems: list[str] = []
    for i, ref in enumerate(spec.tracking):
        try:
            entry = registry.get("trackers", ref.name)
            ref.params = entry.cls.Params(**ref.params).model_dump(mode="json")
        except PatchbenchError as exc:
            problems.append(f"tracking[{i}].name: {exc}")
        except ValidationError as exc:
            problems += render_errors(exc, entry.cls.Params, prefix=f"tracking[{i}].params")
    return problems


def _surrogate(surrogate: SurrogateSpec, where: str, registry: Registry
               ) -> tuple[dict[str, Any], list[str]]:
    """A poison's surrogate with its components' params resolved, and its problems (an
    unknown architecture, optimizer or schedule, a bad param), each naming its path."""
    out, problems = surrogate.model_dump(mode="json"), []
    for field, kind in (("architecture", "architectures"), ("optimizer", "optimizers"),
                        ("schedule", "schedules")):
        choice = getattr(surrogate, field)
        try:
            entry = registry.get(kind, choice.name)
            out[field]["params"] = entry.cls.Params(**choice.params).model_dump(mode="json")
        except PatchbenchError as exc:
            problems.append(f"{where}.{field}.name: {exc}")
        except ValidationError as exc:
            problems += render_errors(exc, entry.cls.Params, prefix=f"{where}.{field}.params")
    return out, problems


def _augment_order_problems(spec: Spec) -> list[str]:
    """With a patch and augmentation, the order between them is a choice the spec must state:
    it decides whether the patch is cropped and flipped with the image."""
    if not spec.patches:
        return []
    allowed = ", ".join(f"{k} ({v})" for k, v in AUGMENT_ORDERS.items())
    return [f"arms[{i}].augment_order: required when the spec has a patch and the arm has "
            f"augmentations; allowed: {allowed}"
            for i, arm in enumerate(spec.arms) if arm.augmentations and arm.augment_order is None]


def _metric_problems(evaluation: Evaluation) -> list[str]:
    """A metric listed twice must differ in its params; ``learned_metric`` must be listed."""
    keys, problems = evaluation.metric_keys(), []
    for i, key in enumerate(keys):
        if key in keys[:i]:
            problems.append(f"evaluation.metrics[{i}]: the same metric and params as "
                            f"evaluation.metrics[{keys.index(key)}] ({key})")
    chosen = evaluation.learned_metric
    if chosen is not None and chosen not in keys:
        problems.append(f"evaluation.learned_metric: {chosen!r} is not among the metrics; "
                        f"allowed: {', '.join(keys)}")
    return problems
