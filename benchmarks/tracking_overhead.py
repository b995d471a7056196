"""Training throughput with the three built-in trackers on against the same grid without them.

    python benchmarks/tracking_overhead.py                  # smoke.yaml, 3 rounds
    python benchmarks/tracking_overhead.py --rounds 2 --set training.epochs=12 \
        --set dataset.params.n_train=6000                   # longer trials

Each round runs ``patchbench run SPEC`` twice, as a user would, into fresh directories: once
plain, once with ``--track tensorboard --track mlflow --track wandb`` (W&B offline, MLflow's
local sqlite store), the order alternating between rounds so that a drift of the machine
falls on both. It prints each trial's training images/s (from its record: evaluation
excluded) and each grid's wall time, then the means and the ratio tracked / plain. Trackers
are fed by the driver on their own thread; the goal is a ratio of 1 within the noise
between rounds (about 5% on a shared 2-core machine).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from patchbench.store import Store

REPO = Path(__file__).resolve().parents[1]
TRACKERS = ["tensorboard", "mlflow", "wandb"]


def one_grid(spec: Path, sets: list[str], out: Path, tracked: bool
             ) -> tuple[float, list[float]]:
    """(wall time, each trial's training images/s) of one ``patchbench run``."""
    cmd = [sys.executable, "-m", "patchbench", "run", str(spec), "--out", str(out)]
    for item in sets:
        cmd += ["--set", item]
    for name in TRACKERS if tracked else []:
        cmd += ["--track", name]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit {done.returncode}\n{done.stderr}")
    wall = time.perf_counter() - start
    rates = [r["train_images_per_s"] for r in Store.in_dir(out).records()]
    return wall, rates


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spec", type=Path, default=REPO / "benchmarks" / "smoke.yaml")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a spec override, as for patchbench run (repeatable)")
    args = p.parse_args()
    walls: dict[bool, list[float]] = {False: [], True: []}
    rates: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            for tracked in ((False, True) if i % 2 == 0 else (True, False)):
                wall, trial_rates = one_grid(args.spec, args.set, Path(tmp) / f"{i}-{tracked}", tracked)
                walls[tracked].append(wall)
                rates[tracked] += trial_rates
                label = "tracked" if tracked else "plain  "
                print(f"round {i + 1} {label}: grid {wall:6.1f} s, training images/s per "
                      f"trial {' '.join(f'{r:.0f}' for r in trial_rates)}", flush=True)
    for tracked in (False, True):
        r = rates[tracked]
        print(f"{'tracked' if tracked else 'plain  '}: {statistics.mean(r):7.1f} ± "
              f"{statistics.stdev(r):5.1f} training images/s over {len(r)} trials; grid "
              f"{statistics.mean(walls[tracked]):.1f} s on average")
    print(f"tracked / plain training images/s: "
          f"{statistics.mean(rates[True]) / statistics.mean(rates[False]):.3f}")


if __name__ == "__main__":
    main()
