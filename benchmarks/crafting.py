"""EM's crafting loop against the same model's raw forward+backward, in one run.

    PYTHONPATH=plugins/patchbench-availability/src python benchmarks/crafting.py --steps 20

"raw": forward and backward of the surrogate on one batch of normalized tensors, in train
mode, gradients to the weights (what a training step costs without its update). "craft":
EM's noise update as crafting runs it (``EM._min_min``: forward, backward to the input only,
the signed step and both projections), surrogate in eval mode, weights frozen, on the same
batch. Images per second for each and their ratio; goal: craft/raw >= 0.90. Both are timed
after warm-up in this process, so compare the ratio, not figures across runs.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from patchbench.plugins import get_registry
from patchbench.train.runtime import available_cores, configure
from patchbench_availability.em import EM


def timed(fn, steps: int) -> float:
    for _ in range(2):
        fn()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--depth", type=int, default=16)
    p.add_argument("--width", type=int, default=1)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=20, help="timed steps of each")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    configure(args.threads or available_cores(), True)
    registry = get_registry()
    arch = registry.build("architectures", "wrn", {"depth": args.depth, "width": args.width})
    model = arch.build(10, (3, 32, 32))
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, 32, 32, generator=gen)
    y = torch.randint(10, (args.batch,), generator=gen)
    noise = torch.zeros_like(x)
    norm = lambda px: (px - 0.5) / 0.25  # noqa: E731

    def raw() -> None:
        model.train()
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(norm(x)), y).backward()

    em = EM(EM.Params(steps=1))

    def craft() -> None:
        model.eval()
        em._min_min(model, norm, x, y, noise, 1)

    raw_s = timed(raw, args.steps)
    for param in model.parameters():
        param.requires_grad_(False)
    craft_s = timed(craft, args.steps)
    n = args.steps * args.batch
    print(f"wrn-{args.depth}-{args.width}, batch {args.batch}, {torch.get_num_threads()} "
          f"threads, {args.steps} steps each")
    print(f"raw forward+backward: {n / raw_s:,.0f} images/s")
    print(f"EM noise step:        {n / craft_s:,.0f} images/s")
    print(f"craft / raw:          {raw_s / craft_s:.2f}")


if __name__ == "__main__":
    main()
