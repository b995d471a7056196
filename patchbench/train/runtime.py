"""Device, threads, precision and determinism settings for a run."""

from __future__ import annotations

import contextlib
import os
from typing import Callable

import torch

from ..errors import PatchbenchError


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def pick_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting.startswith("cuda") and not torch.cuda.is_available():
        raise PatchbenchError(f"training.device: {setting!r} requested but CUDA is not "
                              "available; allowed here: auto, cpu")
    return torch.device(setting)


def configure(threads: int | None, deterministic: bool) -> None:
    torch.set_num_threads(threads or available_cores())
    if torch.cuda.is_available():
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cuda.matmul.allow_tf32 = not deterministic
        torch.backends.cudnn.allow_tf32 = not deterministic


def autocast_factory(device: torch.device, precision: str) -> Callable[[], contextlib.AbstractContextManager]:
    if precision == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def plugin_rng(device: torch.device) -> contextlib.AbstractContextManager:
    """Around a plugin's ``setup``: torch's global RNG (the trial's model initialization and
    training noise draw from it) is restored afterwards, so a plugin that draws from it
    cannot shift them; the conformance kit flags such a plugin."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])
