"""Expected failures and how patchbench says them: one line each, exit status 2.

Anything else keeps its traceback, because it is a bug. Every module that reports bad input
raises :class:`PatchbenchError`; pydantic's errors are rendered as ``field.path: message``
lines (:func:`render_errors`) and warnings go to stderr through :func:`warn`.
"""

from __future__ import annotations

import sys
import typing
from typing import Any

from pydantic import BaseModel, ValidationError


class PatchbenchError(Exception):
    """A problem with the user's input (spec, names, data), not a bug.

    The CLI prints ``patchbench: error: <message>`` and exits 2 without a traceback;
    any other exception keeps its traceback because it is a bug.
    """


class SpecError(PatchbenchError):
    """A benchmark spec that cannot be loaded or validated."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


class NoSpace(PatchbenchError):
    """A write failed for lack of space: it ends the run (every record already stored is
    kept, every checkpoint is whole), and a rerun once space is freed resumes."""


def warn(message: str) -> None:
    """A warning on stderr: something was skipped or is suspect, and the command goes on."""
    print(f"patchbench: warning: {message}", file=sys.stderr)


def format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model class found by walking ``loc`` from ``model`` (for 'allowed' hints)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(part)
        if field is None:
            return None
        current = _unwrap(field.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    for arg in (typing.get_args(annotation) or ()):
        inner = _unwrap(arg)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            return inner
    return annotation


def render_errors(exc: ValidationError, model: type[BaseModel], prefix: str = ""
                  ) -> list[str]:
    """One line per pydantic error: ``path: message``, with allowed keys for unknown keys."""
    lines = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        path = format_loc(loc)
        path = f"{prefix}.{path}" if prefix and path else (prefix or path)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            parent = _model_at(model, loc[:-1])
            allowed = ", ".join(parent.model_fields) if parent else ""
            msg = f"unknown key; allowed: {allowed}" if allowed else "unknown key"
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif "input" in err and err["type"] not in ("model_type", "dict_type"):
            msg = f"{msg} (got {err['input']!r})"
        lines.append(f"{path or '(top level)'}: {msg}")
    return lines
