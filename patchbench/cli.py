"""The `patchbench` command line: parse, call one stage, print bad input as one line (exit 2).

Each command imports the stage it needs when it runs, so that `patchbench --help` and
`patchbench list` start without loading torch's training stack or matplotlib.
"""

from __future__ import annotations

import argparse
import errno
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Sequence

from rich.table import Table

from . import __version__
from .components import KIND_ALIASES, KINDS
from .errors import PatchbenchError

KIND_NAMES = sorted(KINDS)


def _spec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="benchmark spec (YAML)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec field, e.g. training.epochs=2 or "
                        "arms.small_lr.optimizer.lr=0.01 (repeatable)")


def _phase_args(p: argparse.ArgumentParser, flag: str, what: str) -> None:
    p.add_argument(flag, nargs=2, metavar=("X", "Y"), help=what)
    p.add_argument("--metric", default="clean_acc", help=f"with {flag}: a final metric, "
                   "patch_cost or learned_epoch (default clean_acc)")
    p.add_argument("--arm", help=f"with {flag}: this arm only (default: every swept arm)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="patchbench", description="Train benchmark grids and measure how much each model "
        "relies on a memorizable patch versus the image.")
    parser.add_argument("--version", action="version", version=f"patchbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("run", help="train every trial of a benchmark spec")
    _spec_args(p)
    p.add_argument("--out", type=Path, help="output directory (default: the spec's output.dir)")
    p.add_argument("--force", action="store_true",
                   help="train every trial again, even those already completed")
    p.add_argument("--only", action="append", default=[], metavar="PATTERN",
                   help="train only trials whose key matches this shell pattern, e.g. "
                   "'*/seed0' or '*/none/*' (repeatable; in the order given)")
    g = p.add_argument_group("where results are also sent (the spec's tracking section)")
    g.add_argument("--track", action="append", default=[], metavar="NAME",
                   help="also send results to this tracker: tensorboard, mlflow, wandb or a "
                   "plugin's (repeatable; `patchbench list trackers`)")
    g.add_argument("--track-uri", metavar="URI", help="the tracking URI of the trackers that "
                   "take one (mlflow: http://host:5000; default $MLFLOW_TRACKING_URI, else "
                   "sqlite in the output directory)")
    g = p.add_argument_group("where trials run (the spec's execution section)")
    g.add_argument("--executor", choices=["local", "ray", "slurm"],
                   help="local: one trial after another here (default); ray: Ray tasks; "
                   "slurm: a Slurm job per trial")
    g.add_argument("--address", help="Ray cluster to join (default: $RAY_ADDRESS, else a "
                   "cluster started here with `ray start`, else a new local one)")
    g.add_argument("--cpus-per-trial", metavar="N", help="Ray and Slurm: CPUs per trial; "
                   "torch threads follow it (default 1)")
    g.add_argument("--gpus-per-trial", metavar="F", help="Ray: GPUs per trial; 0.25 packs "
                   "four trials on one GPU (default: 1 where the cluster has GPUs); Slurm: "
                   "whole GPUs per job")
    g.add_argument("--partition", help="Slurm: the partition the jobs go to (more settings: "
                   "--set execution.time=120 ...; docs/clusters.md)")
    p = sub.add_parser("validate", help="resolve every component and param without training")
    _spec_args(p)
    p = sub.add_parser("list", help="list available components, or one component's params")
    p.add_argument("kind", nargs="?", help=f"one of: {', '.join(KIND_NAMES)}")
    p.add_argument("name", nargs="?", help="a component of that kind: show its params (type, "
                   "default, constraints)")
    sub.add_parser("plugins", help="installed plugins, their versions and hooks")
    p = sub.add_parser("preview", help="save a grid of training inputs as the model sees them")
    _spec_args(p)
    p.add_argument("--out", type=Path, required=True, help="PNG file to write")
    p.add_argument("-n", type=int, default=8, help="images per row (default 8)")
    results_help = "output directories, result databases or exported JSON files"
    p = sub.add_parser("leaderboard", help="tables of results aggregated over seeds")
    p.add_argument("results", nargs="+", type=Path, help=results_help)
    p.add_argument("--format", choices=["rich", "terminal", "md", "csv", "json", "html"],
                   default="rich", help="rich (= terminal): tables here; md, csv, json, html")
    p.add_argument("--ci", action="store_true", help="95%% t-intervals instead of std")
    p.add_argument("--sort", metavar="METRIC", help="sort rows by this column (e.g. clean_acc)")
    p.add_argument("--out", type=Path, help="write to this file instead of stdout")
    _phase_args(p, "--pivot", "a phase diagram as a table: rows X's values, columns Y's "
                "(swept fields: full path or a short key such as lr)")
    p.add_argument("--epochs", metavar="METRIC", help="a metric at every epoch instead of the "
                   "final one, e.g. attack_success_rate: rows as the leaderboard's, columns "
                   "epochs, mean ± std over seeds; patch_cost: the patch cost at every epoch")
    p.add_argument("--stat", default="final", metavar="STAT",
                   help="what the metric columns and the patch cost show of each metric: "
                   "final (default), peak, peak_epoch, before_anneal, after_anneal (the first "
                   "anneal)")
    p.add_argument("--cost-metric", metavar="METRIC",
                   help="the metric whose control − patched difference, paired by seed, is "
                   "the patch cost (default clean_acc)")
    p.add_argument("--defenses", action="store_true",
                   help="attack x defense tables (a spec's defenses): final / peak clean "
                   "accuracy per LR arm, and each defense's gain over the arm without it")
    p = sub.add_parser("plot", help="learning curves of clean and patch-only accuracy")
    p.add_argument("results", nargs="+", type=Path, help=results_help)
    p.add_argument("--out", type=Path, required=True, help="PNG file to write")
    p.add_argument("--benchmark", help="plot this benchmark (default: the only one)")
    p.add_argument("--spec", metavar="HASH", help="plot this spec hash (or a prefix of it) "
                   "where a version has several that differ in more than seeds")
    _phase_args(p, "--heatmap", "a phase diagram instead of curves: METRIC over two swept "
                "fields, rows X's values, columns Y's (full path or a short key such as lr)")
    p = sub.add_parser("report", help="one self-contained HTML page of results, to share")
    p.add_argument("results", nargs="+", type=Path, help=results_help)
    p.add_argument("--out", type=Path, required=True, help="HTML file to write")
    p.add_argument("--ci", action="store_true",
                   help="show 95%% t-intervals first instead of std (the page can switch)")
    p = sub.add_parser("export", help="write results as one JSON file, to share or merge")
    p.add_argument("results", nargs="+", type=Path, help=results_help)
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    p = sub.add_parser("track", help="send stored results to a tracker (TensorBoard, MLflow, "
                       "W&B); trials it already holds are skipped")
    p.add_argument("results", nargs="+", type=Path, help=results_help)
    p.add_argument("--to", required=True, metavar="NAME",
                   help="the tracker: tensorboard, mlflow, wandb or a plugin's")
    p.add_argument("--track-uri", metavar="URI", help="its tracking URI, where it takes one")
    p.add_argument("--out", type=Path, help="where a tracker with local files writes them "
                   "(default: the first results directory)")
    p = sub.add_parser("import", help="merge exported JSON results into a result store")
    p.add_argument("files", nargs="+", type=Path, help="files written by `patchbench export`")
    p.add_argument("--into", type=Path, required=True,
                   help="output directory or result database to merge into")
    return parser


def check_file_out(path: Path, flag: str = "--out") -> None:
    """Refuse, before any work, a file destination that is a directory or lies under a file."""
    if path.is_dir():
        raise PatchbenchError(f"{flag}: {path} is a directory; allowed: a file to write")
    _parents_are_dirs(path, flag)


def check_dir_out(path: Path, flag: str = "--out") -> None:
    """Refuse, before any work, a directory destination that is a file or lies under one."""
    if path.exists() and not path.is_dir():
        raise PatchbenchError(f"{flag}: {path} is a file; allowed: a directory (new or "
                              "holding results)")
    _parents_are_dirs(path, flag)


def _parents_are_dirs(path: Path, flag: str) -> None:
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise PatchbenchError(f"{flag}: {path}: {parent} is a file; allowed: a "
                                      "directory there")
            return


def cmd_validate(args: argparse.Namespace) -> int:
    validate_spec(args.spec, args.overrides)
    return 0


def validate_spec(path: str | Path, overrides: list[str], seen: tuple[Path, ...] = ()
                  ) -> None:
    """Validate one spec, then the ``reduced_spec`` it names (which must exist)."""
    from .plugins import get_registry
    from .spec import load_spec, plan
    from .spec.sweep import sweep_size
    from .train.preflight import check_declared_inputs

    registry = get_registry()
    args = argparse.Namespace(spec=path, overrides=overrides)
    spec = load_spec(args.spec, args.overrides, registry)
    planned = plan(spec, registry)
    for variant in {id(s): s for s, _ in planned}.values():
        check_declared_inputs(variant, registry, args.spec)
    epochs = sorted({s.training.epochs for s, _ in planned})
    each = f"{epochs[0]} epochs each" if len(epochs) == 1 else \
        f"{epochs[0]} to {epochs[-1]} epochs"
    swept = ""
    if spec.sweep:
        swept = (f"; sweep: {len(spec.sweep)} field{'s' if len(spec.sweep) > 1 else ''}, "
                 f"{sweep_size(spec)} combinations")
    print(f"{args.spec}: ok ({spec.name} v{spec.version}: {len(planned)} trials, {each}"
          f"{swept})")
    if spec.sweep:
        arms = list(dict.fromkeys(t.arm.name for _, t in planned))
        print(f"arms: {', '.join(arms)}")
    if spec.reduced_spec:
        reduced = Path(spec.reduced_spec)
        if not reduced.is_file():
            raise PatchbenchError(f"{path}: reduced_spec: {reduced}: no such file (a path "
                                  "relative to the working directory)")
        seen = seen + (Path(path).resolve(),)
        if reduced.resolve() not in seen:
            validate_spec(reduced, [], seen)  # the overrides were for this spec, not that one


def cmd_list(args: argparse.Namespace) -> int:
    from .plugins import get_registry, unknown_name_message

    kinds = KIND_NAMES
    if args.kind:
        kind = KIND_ALIASES.get(args.kind, args.kind)
        if kind not in KINDS:
            raise PatchbenchError(unknown_name_message("component kind", args.kind, KIND_NAMES))
        kinds = [kind]
    registry = get_registry()
    if args.name:
        return show_component(registry, kinds[0], args.name)
    for kind in kinds:
        table = Table(title=f"{kind}")
        for col in ("name", "plugin", "distribution", "description"):
            table.add_column(col)
        for name in registry.names(kind):
            e = registry.entries[kind][name]
            shown = f"{name}:<model>" if e.cls.accepts_variant else name
            about = f"[red]unusable: {e.problem}[/]" if e.problem else e.cls.description()
            table.add_row(shown, e.plugin, f"{e.distribution} {e.version}", about)
        _stdout_console().print(table)
    return 0


def show_component(registry, kind: str, name: str) -> int:
    """One component: where it comes from, what it does, and its params from its schema."""
    from rich.markup import escape

    from .params_doc import params_rows

    entry = registry.get(kind, name)
    out = _stdout_console()
    out.print(f"[bold]{entry.name}[/] ({kind}; plugin {entry.plugin}, {entry.distribution} "
              f"{entry.version}): {entry.cls.description()}", soft_wrap=True)
    rows = params_rows(entry.cls.Params)
    if not rows:
        out.print("no params")
        return 0
    table = Table(title=f"{entry.name} params")
    for col in ("param", "type", "default", "constraints", "description"):
        table.add_column(col)
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    out.print(table)
    return 0


def _stdout_console():
    from rich.console import Console

    return Console(width=max(Console().width, 120))


def cmd_plugins(args: argparse.Namespace) -> int:
    from .plugins import get_registry

    registry = get_registry(allow_clashes=True)  # this is the command that shows clashes
    table = Table(title="patchbench plugins")
    for col in ("plugin", "distribution", "version", "hooks"):
        table.add_column(col)
    for info in registry.plugins.values():
        hooks = ", ".join(info.hooks)
        if info.unknown_hooks:
            hooks += f" [red](not patchbench hooks, never called: " \
                     f"{', '.join(info.unknown_hooks)})[/]"
        table.add_row(info.name, info.distribution, info.version, hooks)
    _stdout_console().print(table)
    if registry.clashes:
        raise PatchbenchError("; ".join(registry.clash_messages()))
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    from .plugins import get_registry
    from .results.preview import save_preview
    from .spec import load_spec

    registry = get_registry()
    spec = load_spec(args.spec, args.overrides, registry)
    if not spec.patches:
        raise PatchbenchError(f"{args.spec}: patch: the spec has no patch generator to preview")
    if args.n < 1:
        raise PatchbenchError("-n: must be at least 1")
    check_file_out(args.out)
    if args.out.suffix.lower() != ".png":
        raise PatchbenchError(f"--out: {args.out} must be a .png file")
    data = registry.build("datasets", spec.dataset.name, spec.dataset.params).load()
    if len(data.image_shape) != 3:
        raise PatchbenchError(f"{args.spec}: dataset: preview shows images; "
                              f"{spec.dataset.name} gives vectors of shape {data.image_shape}")
    import torch

    outs = [args.out] if len(spec.patches) == 1 else \
        [args.out.with_name(f"{args.out.stem}-{ref.name}.png") for ref in spec.patches]
    pipelines = training_pipelines(spec, registry, data)
    training = [(f"training batch\n({what})", augs, first) for what, augs, first in pipelines]
    for ref, out in zip(spec.patches, outs):
        patch = registry.build("patches", ref.name, ref.params)
        if patch.crafts:  # shown with the poison the grid trains with, crafted by `run`
            from .run.artifacts import artifact_key, artifact_path
            from .crafting import use_crafted

            path = artifact_path(spec.out_dir, ref.name,
                                 artifact_key(ref, spec.dataset, registry))
            if not path.exists():
                raise PatchbenchError(f"{args.spec}: patch: {ref.name} is crafted and not yet "
                                      f"({path}); `patchbench run {args.spec}` crafts it")
            use_crafted(patch, {ref.name: str(path)}, torch.device("cpu"))
        patch.setup(data, torch.device("cpu"))
        save_preview(data, patch, out, args.n, title=f"{spec.name}: {ref.name}",
                     training=training)
        print(f"wrote {out} (training batch of {'; '.join(p[0] for p in pipelines)})")
    return 0


def training_pipelines(spec, registry, data) -> list[tuple[str, list, bool]]:
    """The arms' distinct augmentation pipelines, each (which arms and augmentations, the
    augmentations set up, whether they run before the patch): ``every arm`` where they
    share one."""
    import torch

    groups: dict[str, tuple[object, list[str]]] = {}
    for arm in spec.arms:
        key = json.dumps([[a.name, a.params] for a in arm.augmentations]
                         + [arm.augment_order], sort_keys=True, default=str)
        groups.setdefault(key, (arm, []))[1].append(arm.name)
    pipelines = []
    for arm, names in groups.values():
        augs = [registry.build("augmentations", a.name, a.params) for a in arm.augmentations]
        for aug in augs:
            aug.setup(data, torch.device("cpu"))
        who = "every arm" if len(groups) == 1 else \
            ("arm " if len(names) == 1 else "arms ") + ", ".join(names)
        what = " + ".join(a.name for a in arm.augmentations) or "no augmentation"
        pipelines.append((f"{who}: {what}", augs, arm.augment_order == "before_patch"))
    return pipelines


def cmd_run(args: argparse.Namespace) -> int:
    from .plugins import get_registry
    from .run import run_spec
    from .spec import load_spec

    flags = {"executor": args.executor, "address": args.address,
             "cpus_per_trial": args.cpus_per_trial, "gpus_per_trial": args.gpus_per_trial,
             "partition": args.partition}
    overrides = args.overrides + [f"execution.{k}={v}" for k, v in flags.items()
                                  if v is not None]
    registry = get_registry()
    spec = load_spec(args.spec, overrides, registry)
    check_dir_out(args.out or spec.out_dir, "--out" if args.out else "output.dir")
    if args.track or args.track_uri:
        from .run.tracking import add_tracking

        add_tracking(spec, args.track, args.track_uri, registry)
    return run_spec(spec, registry, args.out, spec_path=str(args.spec), force=args.force,
                    only=args.only)


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from .results import epochs, leaderboard, phase
    from .results.store import load_records

    if args.pivot and args.epochs:
        raise PatchbenchError("leaderboard: --pivot and --epochs are two different tables; "
                              "choose one")
    if args.stat != "final" and (args.pivot or args.epochs):
        raise PatchbenchError(f"leaderboard: --stat {args.stat} is a leaderboard column's "
                              "statistic; --pivot and --epochs show their own")
    if args.out:
        check_file_out(args.out)
    records = load_records(args.results)
    if args.defenses:
        from .results import defenses
        if args.pivot or args.epochs:
            raise PatchbenchError("leaderboard: --defenses is its own table; leave out "
                                  "--pivot and --epochs")
        metric = args.cost_metric or "clean_acc"
        return write_tables(args, defenses.clean_tables(records, metric)
                            + defenses.gain_tables(records, metric, args.stat),
                            "patchbench: attacks x defenses")
    if args.pivot:
        found = phase.phases(records, *args.pivot, args.metric, args.arm, "--pivot")
        return write_tables(args, [phase.as_table(p) for p in found],
                            "patchbench phase diagrams")
    if args.epochs:
        found = epochs.epoch_tables(records, args.epochs, args.cost_metric)
        if not found:
            raise PatchbenchError("leaderboard: no completed trials in the given results")
        return write_tables(args, [epochs.as_table(t) for t in found], "patchbench: per epoch")
    boards = leaderboard.build_boards(records, sort=args.sort, stat=args.stat,
                                      cost_metric=args.cost_metric)
    if not boards:
        raise PatchbenchError("leaderboard: no trial records in the given results")
    return write_tables(args, leaderboard.tables(boards, args.ci), "patchbench leaderboard")


def write_tables(args: argparse.Namespace, tables: list, title: str) -> int:
    """Tables in --format, to --out or stdout."""
    from .results.table import RENDERERS, print_tables

    if args.format in ("rich", "terminal"):
        if args.out:
            with args.out.open("w") as f:
                print_tables(tables, f)
        else:
            print_tables(tables)
        return 0
    text = RENDERERS[args.format](tables, title)
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from .results.curves import one_spec
    from .results.plot import plot_records
    from .results.store import load_records

    check_file_out(args.out)
    if args.out.suffix.lower() != ".png":
        raise PatchbenchError(f"--out: {args.out} must be a .png file")
    records = load_records(args.results)
    names = sorted({(r["benchmark"], r["benchmark_version"]) for r in records})
    if args.benchmark:
        records = [r for r in records if r["benchmark"] == args.benchmark]
        names = sorted({(r["benchmark"], r["benchmark_version"]) for r in records})
    if len(names) > 1:
        raise PatchbenchError("plot: results hold several benchmarks or versions ("
                              + ", ".join(f"{n} v{v}" for n, v in names)
                              + "); choose one with --benchmark")
    if not names:
        raise PatchbenchError("plot: no trial records to plot")
    records, pooled = one_spec(records, args.spec)
    if args.heatmap:
        from .results.phase import phases
        from .results.plot import plot_phases

        found = phases(records, *args.heatmap, args.metric, args.arm)
        plot_phases(found, args.out)
        print(f"wrote {args.out} ({len(found)} heatmap{'s' if len(found) > 1 else ''}: "
              + ", ".join(f"{p.architecture} / {p.arm} / {p.patch}" for p in found) + ")"
              + (f" ({pooled})" if pooled else ""))
        return 0
    plot_records(records, args.out, title=f"{names[0][0]} v{names[0][1]}")
    print(f"wrote {args.out}" + (f" ({pooled})" if pooled else ""))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .plugins import get_registry
    from .results.report import check_out, write_report
    from .results.store import load_records

    check_file_out(args.out)
    check_out(args.out)
    records = load_records(args.results)
    write_report(records, args.out, get_registry(), [str(p) for p in args.results], args.ci)
    print(f"wrote {args.out} ({len(records)} trial records)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .results.store import load_records, write_export

    check_file_out(args.out)
    records = load_records(args.results)
    write_export(records, args.out)
    print(f"wrote {len(records)} records to {args.out}")
    return 0


def cmd_track(args: argparse.Namespace) -> int:
    from .plugins import get_registry
    from .results.store import load_records
    from .run.tracking import replay
    from .spec import ComponentRef

    first = args.results[0]
    out = args.out or (first if first.is_dir() else first.parent)
    check_dir_out(out)
    records = load_records(args.results)
    if not records:
        raise PatchbenchError("track: no trial records in the given results")
    registry = get_registry()
    ref = ComponentRef(name=args.to)
    if args.track_uri:
        if "uri" not in registry.get("trackers", args.to).cls.Params.model_fields:
            raise PatchbenchError(f"--track-uri: tracker {args.to!r} takes no URI")
        ref.params = {"uri": args.track_uri}
    sent, skipped = replay(records, ref, registry, out)
    print(f"sent {sent} trials to {args.to}" + (f"; {skipped} it already held were skipped"
                                                 if skipped else ""))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from .results.store import STORE_NAME, Store, read_export

    target = args.into / STORE_NAME if args.into.is_dir() or not args.into.suffix else args.into
    records = [r for path in args.files for r in read_export(path)]
    store = Store(target)
    store.put(*records)
    store.close()
    print(f"imported {len(records)} records into {target}")
    return 0


COMMANDS = {"run": cmd_run, "validate": cmd_validate, "list": cmd_list,
            "plugins": cmd_plugins, "preview": cmd_preview, "leaderboard": cmd_leaderboard,
            "plot": cmd_plot, "report": cmd_report, "export": cmd_export, "import": cmd_import,
            "track": cmd_track}


class Terminated(KeyboardInterrupt):
    """SIGTERM (Slurm, Kubernetes, ``kill``), raised where the program is, as Ctrl-C is: what
    a run leaves on an interrupt (epoch checkpoints, a consistent store) it leaves on this."""


_TERMINATED: list[int] = []
"""SIGTERMs received: Ray turns the exception raised in its waits into a plain
KeyboardInterrupt, so main tells the two apart by this."""


def _terminate(signum: int, frame: object) -> None:
    _TERMINATED.append(signum)
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    previous = None
    _TERMINATED.clear()
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return COMMANDS[args.command](args)
    except PatchbenchError as exc:
        for line in str(exc).splitlines() or ["error"]:
            print(f"patchbench: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        if isinstance(exc, Terminated) or _TERMINATED:
            print("patchbench: interrupted (SIGTERM); rerun to resume", file=sys.stderr)
            return 128 + signal.SIGTERM
        print("patchbench: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"patchbench: error: {where}cannot write: no space left on the device",
              file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
