"""The `patchbench` command line."""

from __future__ import annotations

import argparse
import sys
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="patchbench", description="Train benchmark grids and measure how much each model "
        "relies on a memorizable patch versus the image.")
    parser.add_argument("--version", action="version", version=f"patchbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("run", help="train every trial of a benchmark spec")
    _spec_args(p)
    p.add_argument("--out", type=Path, help="output directory (default: the spec's output.dir)")
    p = sub.add_parser("validate", help="resolve every component and param without training")
    _spec_args(p)
    p = sub.add_parser("list", help="list available components")
    p.add_argument("kind", nargs="?", help=f"one of: {', '.join(KIND_NAMES)}")
    sub.add_parser("plugins", help="installed plugins, their versions and hooks")
    p = sub.add_parser("preview", help="save a grid of training inputs as the model sees them")
    _spec_args(p)
    p.add_argument("--out", type=Path, required=True, help="PNG file to write")
    p.add_argument("-n", type=int, default=8, help="images per row (default 8)")
    return parser


def cmd_validate(args: argparse.Namespace) -> int:
    from .plugins import get_registry
    from .spec import load_spec
    from .trainer import plan_trials

    registry = get_registry()
    spec = load_spec(args.spec, args.overrides, registry)
    trials = plan_trials(spec, registry)
    print(f"{args.spec}: ok ({spec.name} v{spec.version}: {len(trials)} trials, "
          f"{spec.training.epochs} epochs each)")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from .plugins import get_registry, unknown_name_message

    kinds = KIND_NAMES
    if args.kind:
        kind = KIND_ALIASES.get(args.kind, args.kind)
        if kind not in KINDS:
            raise PatchbenchError(unknown_name_message("component kind", args.kind, KIND_NAMES))
        kinds = [kind]
    registry = get_registry()
    for kind in kinds:
        table = Table(title=f"{kind}")
        for col in ("name", "plugin", "distribution", "description"):
            table.add_column(col)
        for name in registry.names(kind):
            e = registry.entries[kind][name]
            shown = f"{name}:<model>" if e.cls.accepts_variant else name
            table.add_row(shown, e.plugin, f"{e.distribution} {e.version}",
                          e.cls.description())
        _stdout_console().print(table)
    return 0


def _stdout_console():
    from rich.console import Console

    return Console(width=max(Console().width, 120))


def cmd_plugins(args: argparse.Namespace) -> int:
    from .plugins import get_registry

    registry = get_registry()
    table = Table(title="patchbench plugins")
    for col in ("plugin", "distribution", "version", "hooks"):
        table.add_column(col)
    for info in registry.plugins.values():
        table.add_row(info.name, info.distribution, info.version, ", ".join(info.hooks))
    _stdout_console().print(table)
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    from .plugins import get_registry
    from .preview import save_preview
    from .spec import load_spec

    registry = get_registry()
    spec = load_spec(args.spec, args.overrides, registry)
    if spec.patch is None:
        raise PatchbenchError(f"{args.spec}: patch: the spec has no patch generator to preview")
    if args.n < 1:
        raise PatchbenchError("-n: must be at least 1")
    if args.out.suffix.lower() != ".png":
        raise PatchbenchError(f"--out: {args.out} must be a .png file")
    data = registry.build("datasets", spec.dataset.name, spec.dataset.params).load()
    import torch

    patch = registry.build("patches", spec.patch.name, spec.patch.params)
    patch.setup(data, torch.device("cpu"))
    save_preview(data, patch, args.out, args.n, title=f"{spec.name}: {spec.patch.name}")
    print(f"wrote {args.out}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .plugins import get_registry
    from .run import run_spec
    from .spec import load_spec

    registry = get_registry()
    spec = load_spec(args.spec, args.overrides, registry)
    return run_spec(spec, registry, args.out)


COMMANDS = {"run": cmd_run, "validate": cmd_validate, "list": cmd_list,
            "plugins": cmd_plugins, "preview": cmd_preview}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except PatchbenchError as exc:
        for line in str(exc).splitlines() or ["error"]:
            print(f"patchbench: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("patchbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
