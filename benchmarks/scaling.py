"""Trials per hour: the local executor against Ray with 1 and 2 single-thread workers, and
against Slurm with 2 single-CPU jobs at once.

    python benchmarks/scaling.py                               # theory.yaml, 9 trials
    python benchmarks/scaling.py --set training.epochs=20      # a quicker look
    python benchmarks/scaling.py --slurm 2                     # + Slurm, 2 jobs at once
    python benchmarks/scaling.py --packing                     # + K trials sharing one GPU

Each configuration trains the same grid into its own temporary directory, through
``run_spec`` as ``patchbench run`` does; the time is the grid's (Ray's start-up is printed on
its own, since a cluster is started once and then reused). It also checks that every
configuration gives the same leaderboard, and prints each one's overhead per trial: the
slot-seconds that trained nothing, (grid wall time x trials at once - the trials' own wall
times) / trials; for Slurm that is submission, queueing, each job's Python start and the
driver's polling. The temporary directories are under the working directory, which Slurm's
nodes must share (``--tmp`` sets another). With ``--packing`` on a CUDA machine it then
trains K = 1, 2, 4 WRN-16-10 trials of cifar_patch.yaml at once on one GPU
(``gpus_per_trial = 1/K``) and prints the aggregate training images/s: what packing buys.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from patchbench.plugins import get_registry
from patchbench.run import run_spec
from patchbench.spec import load_spec
from patchbench.store import Store

REPO = Path(__file__).resolve().parents[1]


def run_grid(spec_path: Path, overrides: list[str], out: Path) -> tuple[float, list[dict]]:
    registry = get_registry()
    spec = load_spec(spec_path, overrides, registry)
    start = time.perf_counter()
    code = run_spec(spec, registry, out, spec_path=str(spec_path))
    wall = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"{spec_path}: a trial did not complete (exit {code})")
    store = Store.in_dir(out)
    try:
        return wall, store.records()
    finally:
        store.close()


def finals(records: list[dict]) -> dict[str, dict]:
    return {r["key"]: r["summary"]["final"] for r in records}


def executors(args: argparse.Namespace, tmp: Path) -> None:
    rows, reference = [], None
    configs = [("local", 1)] + [("ray", k) for k in args.workers] + \
        [("slurm", k) for k in args.slurm]
    for name, slots in configs:
        overrides = list(args.overrides)
        setup = 0.0
        if name == "ray":
            import ray

            start = time.perf_counter()
            ray.init(num_cpus=slots, include_dashboard=False, configure_logging=False)
            setup = time.perf_counter() - start
            overrides += ["execution.executor=ray", "execution.cpus_per_trial=1"]
        if name == "slurm":
            overrides += ["execution.executor=slurm", "execution.cpus_per_trial=1",
                          f"execution.array_parallelism={slots}"]
        label = {"local": "local", "ray": f"ray, {slots} worker{'s' * (slots > 1)}",
                 "slurm": f"slurm, {slots} job{'s' * (slots > 1)} at once"}[name]
        wall, records = run_grid(args.spec, overrides, tmp / label.replace(", ", "-")
                                 .replace(" ", "-"))
        if name == "ray":
            ray.shutdown()
        same = reference is None or finals(records) == reference
        reference = reference or finals(records)
        idle = (wall * min(slots, len(records)) - sum(r["wall_time_s"] for r in records))
        rows.append((label, len(records), wall, setup, idle / len(records), same))
    base = rows[0][1] / rows[0][2]
    print(f"\n{args.spec.name} {' '.join(args.overrides)} on {os.cpu_count()} CPU cores")
    print("| executor | trials | grid wall time | trials/hour | vs local | Ray start-up | "
          "overhead per trial | same leaderboard |")
    print("|---|---|---|---|---|---|---|---|")
    for label, n, wall, setup, overhead, same in rows:
        rate = n / wall
        print(f"| {label} | {n} | {wall:.1f} s | {3600 * rate:,.0f} | {rate / base:.2f}x | "
              f"{f'{setup:.1f} s' if setup else '-'} | {overhead:.1f} s | "
              f"{'yes' if same else 'NO'} |")


def packing(args: argparse.Namespace, tmp: Path) -> None:
    import ray

    if not torch.cuda.is_available():
        print("\npacking: no CUDA device here; skipped")
        return
    print(f"\npacking on {torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
          f"CUDA {torch.version.cuda}")
    print("| trials on one GPU | gpus_per_trial | wall | training images | aggregate images/s |"
          " per-trial images/s (mean) |")
    print("|---|---|---|---|---|---|")
    for k in args.k:
        ray.init(num_gpus=1, include_dashboard=False, configure_logging=False)
        overrides = [f"seeds={list(range(k))}", "arms=[{name: large_lr, optimizer: {lr: 0.1}}]",
                     f"training.epochs={args.packing_epochs}", "execution.executor=ray",
                     f"execution.gpus_per_trial={1 / k}", "evaluation.every=1000",
                     f"dataset.params.data_dir={args.data_dir}"] + args.packing_set
        wall, records = run_grid(REPO / "benchmarks" / "cifar_patch.yaml", overrides,
                                 tmp / f"pack{k}")
        ray.shutdown()
        seen = sum(train_images(r) for r in records)
        per = sum(r["train_images_per_s"] for r in records) / len(records)
        print(f"| {k} | {1 / k:g} | {wall:.1f} s | {seen:,} | {seen / wall:,.0f} | "
              f"{per:,.0f} |")


def train_images(record: dict) -> int:
    """Training images a trial saw (its wall time includes the final evaluation)."""
    n = record["spec"]["dataset"]["params"].get("train_size") or 50_000
    return n * len(record["history"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", type=Path, default=REPO / "benchmarks" / "theory.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--workers", type=int, nargs="*", default=[1, 2],
                   help="Ray worker counts to try (none: no Ray)")
    p.add_argument("--slurm", type=int, nargs="*", default=[], metavar="JOBS",
                   help="also Slurm, with this many jobs at once (needs a Slurm here)")
    p.add_argument("--tmp", type=Path, default=Path.cwd(),
                   help="where the temporary output directories go (shared with the nodes)")
    p.add_argument("--packing", action="store_true", help="also K trials on one GPU")
    p.add_argument("--k", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--packing-epochs", type=int, default=2)
    p.add_argument("--packing-set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--data-dir", default=os.environ.get("PATCHBENCH_DATA_DIR",
                                                        str(REPO.parent / "shared" / "data")))
    p.add_argument("--skip-executors", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(dir=args.tmp, prefix=".scaling-") as tmp:
        if not args.skip_executors:
            executors(args, Path(tmp))
        if args.packing:
            packing(args, Path(tmp))


if __name__ == "__main__":
    main()
