"""Training-loop throughput against the same model's raw forward+backward, in one run.

    python benchmarks/throughput.py --arch wrn --depth 16 --width 1 --steps 40

"raw" trains on one pre-made batch of normalized tensors already on the device (forward,
backward and, in the second figure, the SGD step): the ceiling for the model. "loop" is
patchbench's trainer on a uint8 dataset on the device with the lwm patch applied per batch,
timing training only (evaluation excluded, as the trainer reports it), after one warm-up
trial. With ``--augment`` the loop also crops and flips every training image (crop+flip after
the patch, as BackdoorBench trains), while raw stays the same. Goal: loop/raw >= 0.90, with
and without augmentation.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from patchbench.components import DataBundle
from patchbench.plugins import get_registry
from patchbench.train.runtime import autocast_factory, available_cores, configure, pick_device
from patchbench.spec import Spec, resolve
from patchbench.spec import plan_trials
from patchbench.train.trainer import train_trial


def raw_images_per_s(model, x, y, steps: int, autocast, with_step: bool) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    model.train()

    def one() -> None:
        with autocast():
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if with_step:
            opt.step()

    for _ in range(3):
        one()
    sync(x.device)
    start = time.perf_counter()
    for _ in range(steps):
        one()
    sync(x.device)
    return steps * len(y) / (time.perf_counter() - start)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="wrn", help="architecture name (wrn, timm:resnet18, ...)")
    p.add_argument("--depth", type=int, default=16)
    p.add_argument("--width", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=40, help="timed steps per measurement")
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--augment", action="store_true",
                   help="the loop crops (reflect-pad 4) and flips every training image")
    args = p.parse_args()

    arch_params = {"depth": args.depth, "width": args.width} if args.arch == "wrn" else {}
    n = args.batch_size * args.steps
    spec = Spec.model_validate({
        "name": "throughput", "version": "1",
        "dataset": {"name": "synthetic", "params": {"n_train": n, "n_test": 10}},
        "patch": "lwm",
        "architectures": [{"name": args.arch, "params": arch_params}],
        "arms": [{"name": "large_lr", "optimizer": {"lr": 0.1},
                  **({"augmentations": ["crop", "flip"], "augment_order": "after_patch"}
                     if args.augment else {})}],
        "training": {"epochs": 1, "batch_size": args.batch_size, "precision": args.precision,
                     "channels_last": not args.no_channels_last, "device": args.device},
        "evaluation": {"metrics": ["clean_acc"]},
    })
    registry = get_registry()
    resolve(spec, "throughput", registry)
    device = pick_device(spec.training.device)
    configure(None, spec.training.deterministic)
    data: DataBundle = registry.build("datasets", "synthetic", spec.dataset.params).load()
    data = data.to(device)
    trial = plan_trials(spec, registry)[0]
    autocast = autocast_factory(device, args.precision)

    torch.manual_seed(0)
    model = registry.build("architectures", args.arch, arch_params).build(10, (3, 32, 32))
    model = model.to(device)
    if not args.no_channels_last:
        model = model.to(memory_format=torch.channels_last)
    x = data.normalizer(device)(data.x_train[: args.batch_size])
    if not args.no_channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = data.y_train[: args.batch_size]
    raw = raw_images_per_s(model, x, y, args.steps, autocast, with_step=False)
    raw_step = raw_images_per_s(model, x, y, args.steps, autocast, with_step=True)
    # The first trial in a process pays one-time costs (allocator growth, kernel selection);
    # measure a second one, as a grid's later trials run.
    train_trial(spec, trial, data, device, registry)
    loop = train_trial(spec, trial, data, device, registry).train_images_per_s

    params = sum(p.numel() for p in model.parameters())
    print(f"model {trial.arch_label} ({params / 1e6:.2f}M parameters), batch {args.batch_size}, "
          f"{args.precision}, channels_last={not args.no_channels_last}, device {device}, "
          f"threads {torch.get_num_threads()}/{available_cores()}")
    print(f"raw forward+backward        {raw:10.1f} images/s")
    print(f"raw forward+backward+SGD    {raw_step:10.1f} images/s")
    print(f"patchbench training loop    {loop:10.1f} images/s  (includes the SGD step, "
          f"data gather, normalization, patch{', crop, flip' if args.augment else ''}; "
          f"{args.steps} steps)")
    print(f"loop / raw forward+backward {loop / raw:10.3f}")
    print(f"loop / raw with SGD step    {loop / raw_step:10.3f}")


if __name__ == "__main__":
    main()
