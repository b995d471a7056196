"""Training-loop throughput against the same model's raw forward+backward, in one run.

    python benchmarks/throughput.py --arch wrn --depth 16 --width 1 --steps 40

"raw" trains on one pre-made batch of normalized tensors already on the device (forward,
backward and, in the second figure, the SGD step): the ceiling for the model. "loop" is
patchbench's trainer on a uint8 dataset on the device with the lwm patch applied per batch,
timing training only (evaluation excluded, as the trainer reports it), after one warm-up
trial. With ``--augment`` the loop also crops and flips every training image (crop+flip after
the patch, as BackdoorBench trains), while raw stays the same. Goal: loop/raw >= 0.90, with
and without augmentation. ``--augment`` also prints what each built-in augmentation costs
per 4,096 training images (label mixing a batch at a time, as the trainer calls it) beside
the loop's own time for them, and adversarial training's (PGD) cost per step as a multiple
of a plain step.
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
from patchbench.train.trainer import TrialRun, train_trial

AUGMENTATIONS = [("crop", {}), ("flip", {}), ("cutout", {}), ("grayscale", {}),
                 ("jpeg", {"quality": 10}), ("mixup", {}), ("cutmix", {"p": 1.0})]
PER = 4096


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


def best_of(fn, device: torch.device, reps: int = 3) -> float:
    """The fastest of ``reps`` timed calls after one warm-up, in seconds."""
    fn()
    times = []
    for _ in range(reps):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


def augmentation_costs(registry, data: DataBundle, device: torch.device, batch: int
                       ) -> list[tuple[str, float]]:
    """Seconds per 4,096 training images of each built-in augmentation."""
    x = data.normalizer(device)(data.x_train[:PER].repeat(-(-PER // len(data.y_train)), 1, 1, 1)
                                [:PER])
    t = F.one_hot(torch.arange(PER, device=device) % data.num_classes,
                  data.num_classes).float()
    gen = torch.Generator(device).manual_seed(0)
    out = []
    for name, params in AUGMENTATIONS:
        aug = registry.build("augmentations", name, params)
        aug.setup(data, device)
        if aug.mixes_labels:
            def run(aug=aug):
                for i in range(0, PER, batch):
                    aug.mix(x[i:i + batch], t[i:i + batch], gen)
        else:
            def run(aug=aug):
                aug.apply(x, gen)
        out.append((f"{name}{params or ''}", best_of(run, device)))
    return out


def step_cost(spec: Spec, registry, data: DataBundle, device: torch.device, steps: int
              ) -> tuple[float, float]:
    """Seconds per training step without and with PGD adversarial training (its defaults)."""
    times = []
    for perturbation in (None, {"name": "pgd"}):
        arm = spec.arms[0].model_copy(update={"perturbation": None, "augmentations": []})
        if perturbation:
            arm = Spec.model_validate({**spec.model_dump(), "arms": [
                {**arm.model_dump(), "perturbation": perturbation}]}).arms[0]
        variant = spec.model_copy(update={"arms": [arm]})
        run = TrialRun(variant, plan_trials(variant, registry)[0], data, device, registry)
        bs = spec.training.batch_size
        x = run.normalize(data.x_train[:bs])
        if run.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = data.y_train[:bs]

        def train(run=run, x=x, y=y):
            for _ in range(steps):
                run.train_step(x, y)
        times.append(best_of(train, device, reps=2) / steps)
    return times[0], times[1]


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
    if args.augment:
        per_loop = PER / loop
        print(f"\naugmentations, per {PER:,} training images (the loop trains them in "
              f"{per_loop:.2f} s):")
        for name, seconds in augmentation_costs(registry, data, device, args.batch_size):
            print(f"  {name:22s} {seconds * 1000:9.1f} ms  {seconds / per_loop:7.1%} of the "
                  "loop's time")
        plain, adversarial = step_cost(spec, registry, data, device, max(2, args.steps // 8))
        print(f"adversarial training (pgd: eps 8/255, step 2/255, 7 steps): "
              f"{adversarial * 1000:.0f} ms per step, {adversarial / plain:.2f}x a plain step "
              f"({plain * 1000:.0f} ms)")


if __name__ == "__main__":
    main()
