"""Crafting a poison, where the executor runs it: build the generator and its
:class:`~patchbench.crafting.CraftContext`, run its ``craft``, check what it returned and
store it as an artifact (written atomically, with how long it took), and load it back for a
trial. Which artifacts a grid needs, and when to reuse one, is the driver's business
(:mod:`patchbench.run.artifacts`); reading one back is :func:`patchbench.crafting.use_crafted`."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from ..boundary import check_model, check_optimizer, check_step_loss, who
from ..components import DataBundle
from ..crafting import CraftContext, Surrogate, SurrogateSpec
from ..errors import PatchbenchError
from ..plugins import Registry
from ..spec import ComponentRef
from .checkpoint import save
from .runtime import plugin_rng


def build_surrogate(spec: SurrogateSpec, data: DataBundle, device: torch.device,
                    registry: Registry) -> Surrogate:
    """The surrogate the spec names, built from the registry on ``device``."""
    arch = registry.build("architectures", spec.architecture.name, spec.architecture.params)
    model = check_model(arch, arch.build(data.num_classes, data.image_shape)).to(device)
    optim = registry.build("optimizers", spec.optimizer.name, spec.optimizer.params)
    optimizer = check_optimizer(optim, optim.build(model.parameters(), spec.lr))
    schedule = registry.build("schedules", spec.schedule.name, spec.schedule.params)
    per_epoch = math.ceil(len(data.y_train) / spec.batch_size)

    def lr(step: int) -> float:
        # Crafting has no fixed length: the schedule sees an open-ended run of 1000 epochs.
        return float(schedule.lr(step, per_epoch, 1000 * per_epoch, spec.lr))

    def step(loss_fn: Callable[[], Tensor]) -> Tensor:
        return check_step_loss(optim, optim.step(optimizer, loss_fn))
    return Surrogate(model, optimizer, step, lr)


def craft_poison(ref: ComponentRef, data: DataBundle, device: torch.device,
                 registry: Registry, path: Path, report: Callable[[int, int], None] | None = None
                 ) -> dict[str, Any]:
    """Craft ``ref``'s poison on ``data`` (already on ``device``) and store it at ``path``;
    return the artifact's metadata. A killed run resumes from ``path.with_suffix('.partial')``
    on the next call."""
    patch = registry.build("patches", ref.name, ref.params)
    partial = path.with_suffix(".partial")
    ctx = CraftContext(data, device, int(getattr(patch.params, "seed", 0)),
                       lambda s: build_surrogate(s, data, device, registry), partial, report)
    resumed = partial.exists()
    start = time.perf_counter()
    with plugin_rng(device):
        out = patch.craft(ctx)
    seconds = time.perf_counter() - start
    if not (isinstance(out, dict) and out and all(
            isinstance(k, str) and isinstance(v, Tensor) for k, v in out.items())):
        raise PatchbenchError(f"{who(patch)}: craft returned {type(out).__name__}; allowed: a "
                              "non-empty dict of str to tensors")
    meta = {"patch": ref.name, "seconds": round(seconds, 3), "resumed": resumed,
            "images": len(data.y_train),
            "device": str(device), "crafted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    meta.update({k: v for k, v in ctx.stats.items() if isinstance(v, (int, float, str))
                 and not isinstance(v, bool)})
    save(path, {"tensors": {k: v.detach().cpu() for k, v in out.items()}, "meta": meta})
    partial.unlink(missing_ok=True)
    return meta
