"""The paper's patch experiment at the paper's scale, seed 0, as one device call.

    python benchmarks/gpu_paper.py --out "$OUT" --budget-s 540
    python benchmarks/gpu_paper.py --out "$OUT" --budget-s 540 --executor ray --gpus-per-trial 0.34

Prints the GPU and the torch and CUDA versions, then trains benchmarks/cifar_patch.yaml for
seed 0 with CIFAR-10 from ../shared/data: the three patched arms first, then the two no-patch
controls, so that a cut-off leaves complete arms. ``--only`` keeps the spec hash of the whole
3-seed grid, so later seeds land in the same store. Before ``--budget-s`` runs out it stops as
Ctrl-C does: completed trials stay in the store, running ones keep their epoch checkpoint,
and a second call with the same ``--out`` resumes. Then it writes, under ``--out``:
results.sqlite (+ checkpoints/), leaderboard.md, per_epoch.md (clean and patch-only accuracy
per epoch and arm), curves.png and timing.md (wall time and training images/s per trial).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
PHASES = ("*/lwm/seed0", "*/none/seed0")  # the three arms, then the two controls


class OutOfTime(KeyboardInterrupt):
    """Stops training as Ctrl-C does: nothing computed is lost."""


def device_line() -> str:
    if not torch.cuda.is_available():
        return f"no CUDA device; torch {torch.__version__} on CPU"
    props = torch.cuda.get_device_properties(0)
    return (f"{props.name} ({props.total_memory / 2**30:.0f} GiB), torch {torch.__version__}, "
            f"CUDA {torch.version.cuda}")


def train(args: argparse.Namespace, out: Path) -> bool:
    """Train the phases within the budget; True when everything completed."""
    from patchbench.plugins import get_registry
    from patchbench.run import run_spec
    from patchbench.spec import load_spec

    overrides = [f"dataset.params.data_dir={args.data_dir}"] + args.overrides
    if args.executor == "ray":
        overrides += ["execution.executor=ray", f"execution.gpus_per_trial={args.gpus_per_trial}"]
    registry = get_registry()
    spec = load_spec(args.spec, overrides, registry)

    def out_of_time(*_: object) -> None:
        raise OutOfTime

    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(max(1, int(args.budget_s)))
    try:
        for phase in PHASES:
            run_spec(spec, registry, out, spec_path=str(args.spec), only=[phase])
    except OutOfTime:
        print(f"budget of {args.budget_s:.0f} s spent: stopped; rerun with the same --out "
              "to resume", file=sys.stderr)
        return False
    finally:
        signal.alarm(0)
    return True


def write_reports(out: Path) -> None:
    from patchbench.results.leaderboard import build_boards, tables
    from patchbench.results.table import to_markdown
    from patchbench.results.plot import plot_records
    from patchbench.store import load_records

    records = [r for r in load_records([out]) if r["status"] == "completed"]
    if not records:
        print("no completed trial yet: nothing to report", file=sys.stderr)
        return
    (out / "leaderboard.md").write_text(to_markdown(tables(build_boards(records))))
    (out / "per_epoch.md").write_text(per_epoch_table(records))
    (out / "timing.md").write_text(timing_table(records))
    plot_records(records, out / "curves.png", title="cifar_patch, seed 0")
    for name in ("leaderboard.md", "per_epoch.md", "timing.md"):
        print(f"\n{name}\n{(out / name).read_text()}")


def per_epoch_table(records: list[dict]) -> str:
    rows = sorted(records, key=lambda r: (r["arm"], r["patch"]))
    epochs = max(len(r["history"]) for r in rows)
    head = "| trial | metric | " + " | ".join(str(e) for e in range(1, epochs + 1)) + " |"
    lines = [head, "|" + "---|" * (epochs + 2)]
    for r in rows:
        for metric in ("clean_acc", "patch_only_acc"):
            values = [h.get(metric) for h in r["history"]]
            if all(v is None for v in values):
                continue
            cells = ["-" if v is None else f"{v:.3f}" for v in values]
            lines.append(f"| {r['arm']}/{r['patch']} | {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def timing_table(records: list[dict]) -> str:
    lines = ["| trial | device | wall time | training images/s |", "|---|---|---|---|"]
    lines += [f"| {r['key']} | {r.get('device', '?')} | {r['wall_time_s']:.0f} s | "
              f"{r['train_images_per_s']:,.0f} |" for r in records]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="results and reports go here")
    p.add_argument("--budget-s", type=float, default=540.0,
                   help="stop training after this many seconds (default 540)")
    p.add_argument("--spec", type=Path, default=REPO / "benchmarks" / "cifar_patch.yaml")
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--executor", choices=["local", "ray"], default="local")
    p.add_argument("--gpus-per-trial", type=float, default=0.34,
                   help="with --executor ray: the GPU share of each trial (0.34: three at once)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    print(device_line(), flush=True)
    start = time.perf_counter()
    complete = train(args, args.out)
    print(f"training wall time {time.perf_counter() - start:.0f} s", file=sys.stderr)
    write_reports(args.out)
    return 0 if complete else 3


if __name__ == "__main__":
    sys.exit(main())
