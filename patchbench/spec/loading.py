"""Read a spec file: YAML, ``--set`` overrides, validation, resolution and sweep expansion."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from ..errors import PatchbenchError, SpecError, render_errors
from ..plugins import Registry, get_registry
from .defenses import expand_defenses
from .models import MAX_SPEC_BYTES, Spec
from .paths import apply_override
from .resolve import resolve
from .safe_yaml import safe_yaml
from .sweep import expand


def load_spec(path: str | Path, overrides: list[str] = (), registry: Registry | None = None
              ) -> Spec:
    """Read, override, validate and resolve a spec; raise SpecError with one line per problem."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise PatchbenchError(f"{source}: no such file") from None
    except (IsADirectoryError, UnicodeDecodeError, PermissionError) as exc:
        raise PatchbenchError(f"{source}: cannot read spec: {exc}") from None
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError(source, [f"the spec is {len(text):,} characters; at most "
                                 f"{MAX_SPEC_BYTES:,} are allowed"])
    try:
        data = safe_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(source, [f"invalid YAML: {where}{problem}"]) from None
    if not isinstance(data, dict):
        raise SpecError(source, ["the spec must be a YAML mapping (key: value)"])
    for assignment in overrides:
        apply_override(data, assignment)
    expand_defenses(data, source)
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(source, render_errors(exc, Spec)) from None
    resolve(spec, source, registry or get_registry())
    if spec.sweep:
        spec._sweep_points = expand(data, spec, source, registry or get_registry())
    return spec
