"""Field paths into a raw spec: ``--set KEY=VALUE`` and the keys of ``sweep:``.

A path is ``a.b[1].c``; a list of arms can also be indexed by arm name
(``arms.small_lr.optimizer.lr``). Paths are applied to the raw YAML mapping, before
validation, so that the result is validated like a spec of its own.
"""

from __future__ import annotations

from typing import Any

import yaml

from ..errors import PatchbenchError, format_loc
from .models import MAX_SPEC_BYTES
from .safe_yaml import TooDeep, safe_yaml


def parse_path(key: str, what: str | None = None) -> list[str | int]:
    parts: list[str | int] = []
    for raw in key.replace("[", ".").replace("]", "").split("."):
        if raw == "":
            raise PatchbenchError(f"{what or '--set ' + key}: empty path segment")
        parts.append(int(raw) if raw.isdigit() else raw)
    return parts


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply ``a.b[1].c=value`` (value parsed as YAML) to the raw spec mapping.

    A list of arms can also be indexed by arm name: ``arms.small_lr.optimizer.lr=0.01``.
    """
    if "=" not in assignment:
        raise PatchbenchError(f"--set {assignment}: expected KEY=VALUE")
    key, raw = assignment.split("=", 1)
    if len(raw) > MAX_SPEC_BYTES:
        raise PatchbenchError(f"--set {key}: the value is {len(raw):,} characters; at most "
                              f"{MAX_SPEC_BYTES:,} are allowed")
    try:
        value = safe_yaml(raw)
    except TooDeep as exc:
        raise PatchbenchError(f"--set {key}: {exc.problem}") from None
    except yaml.YAMLError:
        value = raw
    key = key.strip()
    if key.startswith(SWEEP_PREFIX) and len(key) > len(SWEEP_PREFIX):
        # The rest of the key is one swept path (it holds dots itself): one key of `sweep`.
        sweep = data.setdefault("sweep", {})
        if sweep is None:
            sweep = data["sweep"] = {}
        if not isinstance(sweep, dict):
            raise PatchbenchError(f"--set {key}: sweep is not a mapping")
        sweep[key[len(SWEEP_PREFIX):]] = value
        return
    set_path(data, key, value, f"--set {key}")


SWEEP_PREFIX = "sweep."


def set_path(data: dict[str, Any], key: str, value: Any, what: str) -> None:
    """Set the field at ``key`` (``a.b[1].c``, arms by name) of the raw spec mapping to
    ``value``; ``what`` starts the error messages (``--set KEY``)."""
    path = parse_path(key, what)
    node: Any = data
    for i, part in enumerate(path):
        last = i == len(path) - 1
        where = format_loc(tuple(path[: i + 1]))
        if isinstance(node, list):
            if isinstance(part, str):
                named = [j for j, item in enumerate(node)
                         if isinstance(item, dict) and item.get("name") == part]
                if not named:
                    raise PatchbenchError(f"{what}: no item named {part!r} at {where}")
                part = named[0]
            if not 0 <= part < len(node):
                raise PatchbenchError(
                    f"{what}: index {part} out of range at {where} (length {len(node)})")
        elif isinstance(node, dict):
            if isinstance(part, int):
                part = str(part)
            if not last and node.get(part) is None:
                node[part] = {}
        else:
            raise PatchbenchError(f"{what}: {format_loc(tuple(path[:i]))} is not a mapping "
                                  "or a list")
        if last:
            node[part] = value
        else:
            if isinstance(node[part], str) and isinstance(path[i + 1], str):
                node[part] = {"name": node[part]}  # expand a bare component name
            node = node[part]
