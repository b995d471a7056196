"""Per-epoch checkpoints, so that a trial killed midway resumes where it stopped.

Written atomically (the whole file to a temporary name, flushed, then renamed over the old
one): a write that fails, for lack of space or a kill, never replaces a good checkpoint, and
its partial file is removed. A write that fails for lack of space is :class:`NoSpace`, which
ends the run (one line naming the path) instead of failing trial after trial.

Read with ``weights_only=True``: a checkpoint holds tensors, numbers and strings only, never
pickled objects. One that cannot be read (truncated, corrupt, not a checkpoint) is reported
with one warning naming the file, and the trial starts from its beginning.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from ..errors import warn
from ..files import write_atomically

KEYS = ("epoch", "step", "seen", "train_time", "elapsed", "history", "model", "optimizer",
        "torch_rng", "gen_rng")
"""What every checkpoint holds (:meth:`patchbench.train.trainer.TrialRun.snapshot`)."""


def save(path: Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()  # serialize first: only whole files reach the disk
    torch.save(state, buffer)
    write_atomically(path, buffer.getbuffer(), "free some and run again (it resumes)")


def load(path: Path | None) -> dict[str, Any] | None:
    """The checkpoint at ``path``; None where there is none or it cannot be used (then one
    warning names the file: the trial starts over)."""
    if path is None or not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated zip, bad pickle, EOF, I/O error
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return unusable(path, f"cannot be read ({type(exc).__name__}: {first})")
    if not isinstance(state, dict) or any(k not in state for k in KEYS):
        return unusable(path, "is not a complete patchbench checkpoint")
    return state


def unusable(path: Path, why: str) -> None:
    warn(f"{path}: checkpoint {why}; the trial starts from its beginning")
    return None


def remove(path: Path | None) -> None:
    if path is not None:
        path.unlink(missing_ok=True)
