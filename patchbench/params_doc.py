"""A component's params as ``patchbench list KIND NAME`` shows them: read from its pydantic
model, so the table is what validation enforces (types, defaults, constraints) and the
field docstrings the author wrote."""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

CONSTRAINTS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "min_length": "length >=",
               "max_length": "length <=", "pattern": "matches"}


def type_text(annotation: Any) -> str:
    if annotation is None or annotation is type(None):
        return "None"
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin is not None:
        args = [type_text(a) for a in typing.get_args(annotation)]
        name = getattr(origin, "__name__", str(origin))
        return " | ".join(args) if name in ("Union", "UnionType") else f"{name}[{', '.join(args)}]"
    return getattr(annotation, "__name__", str(annotation))


def constraint_text(info: FieldInfo) -> str:
    parts = []
    for meta in info.metadata:
        for attr, symbol in CONSTRAINTS.items():
            value = getattr(meta, attr, None)
            if value is not None:
                parts.append(f"{symbol} {value}")
    return ", ".join(parts)


def params_rows(params: type[BaseModel]) -> list[tuple[str, str, str, str, str]]:
    """(name, type, default, constraints, description) per field; ``required`` as default
    for a field a spec must give."""
    rows = []
    for name, info in params.model_fields.items():
        default = "required" if info.is_required() else \
            repr(info.get_default(call_default_factory=True))
        rows.append((name, type_text(info.annotation), default, constraint_text(info),
                     " ".join((info.description or "").split())))
    return rows
