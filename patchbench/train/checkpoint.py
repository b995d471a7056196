"""Per-epoch checkpoints, so that a trial killed midway resumes where it stopped.

Written atomically (a temporary file, then a rename) and read with ``weights_only=True``:
a checkpoint holds tensors, numbers and strings only, never pickled objects.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def save(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load(path: Path | None) -> dict[str, Any] | None:
    if path is None or not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def remove(path: Path | None) -> None:
    if path is not None:
        path.unlink(missing_ok=True)
