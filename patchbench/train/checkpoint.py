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

import errno
import io
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import NoSpace, warn

KEYS = ("epoch", "step", "seen", "train_time", "elapsed", "history", "model", "optimizer",
        "torch_rng", "gen_rng")
"""What every checkpoint holds (:meth:`patchbench.train.trainer.TrialRun.snapshot`)."""


def save(path: Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()  # serialize first: only whole files reach the disk
    torch.save(state, buffer)
    write_atomically(path, buffer.getbuffer())


def write_atomically(path: Path, data: bytes | memoryview) -> None:
    """``data`` to ``path`` through a temporary file and a rename; lack of space is
    :class:`NoSpace` naming ``path``, and the partial temporary file is removed."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise NoSpace(f"{path}: cannot write: no space left on the device; free some "
                          "and run again (it resumes)") from None
        raise


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
