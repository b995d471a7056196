"""What the report page shows, section by section, before any HTML is written.

One section per leaderboard board (benchmark version and spec hash). Every number comes from
``leaderboard.build_boards`` (tables, notes, heatmaps) or ``plot.seed_curves`` (curves); this
module only arranges them and the records' provenance for the template.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from ...plugins import Registry
from ..curves import in_panel, panel_patches
from ..leaderboard import (Board, Measure, Row, arm_label, build_boards, caption, cell_text,
                           header, learned_metric, metric_meta, n_text)
from ..record_check import completed
from .charts import CurveChart, curve_chart, group_colour
from .previews import Preview, previews
from .defenses import defense_view
from .sweeps import SweepView, sweep_view

TEXT_COLUMNS = ["architecture", "arm", "patch"]
# Shown first in a trial's provenance, in this order; any other recorded field follows.
FACT_ORDER = ["status", "error", "failed_epoch", "seed", "source_hash", "git_commit",
              "resumed_after_epoch", "resumed_from_source", "executor", "host", "device",
              "versions", "plugins", "started_at", "finished_at", "wall_time_s",
              "train_images_per_s"]
# Shown elsewhere on the page (curves, tables, the board's spec) or in the trial's title.
NOT_FACTS = {"history", "spec", "key", "benchmark", "benchmark_version", "spec_hash",
             "architecture", "arm", "patch"}


@dataclass
class Head:
    label: str
    kind: str  # "text" or "number": how the browser compares the column
    better: str = ""  # "higher", "lower" or "" (not a metric)

    @property
    def words(self) -> tuple[str, str]:
        """The label as (text that may wrap, last word), so that a narrow column keeps its
        arrow with the word before it."""
        head, _, last = self.label.rpartition(" ")
        return head, last


@dataclass
class TableCell:
    text: str
    text_ci: str
    value: str  # what the browser sorts by: the exact mean, the text, or "" (missing)
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class TableRow:
    colour: str
    cells: list[TableCell]


@dataclass
class TrialFacts:
    key: str
    status: str
    facts: list[tuple[str, str]]


@dataclass
class Section:
    anchor: str
    title: str
    note: str
    heads: list[Head]
    rows: list[TableRow]
    caption: str
    caption_ci: str
    charts: list[CurveChart]
    sweep: SweepView | None
    defense: SweepView | None
    previews: list[Preview]
    preview_note: str
    spec_yaml: str
    trials: list[TrialFacts]


def sections(records: list[dict], registry: Registry, with_preview: bool = True
             ) -> list[Section]:
    boards = build_boards(records)
    by_board: dict[tuple[str, str, str], list[dict]] = {}
    for r in records:
        by_board.setdefault((r["benchmark"], r["benchmark_version"], r["spec_hash"]), []).append(r)
    previewed: dict[str, tuple[list[Preview], str]] = {}
    out = []
    for board in boards:
        recs = by_board[(board.benchmark, board.version, board.spec_hash)]
        spec = recs[0].get("spec") or {}
        colours = {(r.arm, r.patch): group_colour(i) for i, r in enumerate(board.rows)}
        shown, note = [], "previews were not asked for"
        if with_preview:
            # Boards of one spec differ in hash only by fields the preview does not use.
            key = json.dumps([spec.get("dataset"), spec.get("patch")], sort_keys=True)
            if key not in previewed:
                crafted = {r["patch"]: r["artifact"]["path"] for r in recs
                           if isinstance(r.get("artifact"), dict) and "path" in r["artifact"]}
                previewed[key] = previews(spec, registry, artifacts=crafted)
            shown, note = previewed[key]
        out.append(Section(
            anchor=_anchor(board), title=board.title, note=board.note,
            heads=_heads(board), rows=[_row(board, row, colours) for row in board.rows],
            caption=caption(False), caption_ci=caption(True),
            charts=_charts(board, recs, colours), sweep=sweep_view(recs),
            defense=defense_view(recs),
            previews=shown, preview_note=note,
            spec_yaml=yaml.safe_dump(spec, sort_keys=False, allow_unicode=True),
            trials=[_trial(r) for r in sorted(recs, key=lambda r: r["key"])]))
    return out


def _anchor(board: Board) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", f"{board.benchmark}-v{board.version}-{board.spec_hash}")


def _heads(board: Board) -> list[Head]:
    heads = [Head(name, "text") for name in TEXT_COLUMNS] + [Head("n", "number")]
    return heads + [Head(header(c), "number", "higher" if c.higher_is_better else "lower")
                    for c in board.columns]


def _row(board: Board, row: Row, colours: dict[tuple[str, str], str]) -> TableRow:
    cells = [TableCell(t, t, t) for t in (row.architecture, row.arm, row.patch)]
    n = n_text(row)
    cells.append(TableCell(n, n, str(row.completed), {"failed": str(row.failed)}))
    cells += [_metric_cell(row, col) for col in board.columns]
    return TableRow(colours[(row.arm, row.patch)], cells)


def _metric_cell(row: Row, col: Measure) -> TableCell:
    cell = row.cells[col.id]
    value = "" if cell.mean is None else repr(cell.mean)
    extra = {"metric": col.id, "n": str(cell.n)}
    for name in ("std", "ci95"):
        spread = getattr(cell, name)
        if spread is not None:
            extra[name] = repr(spread)
    return TableCell(cell_text(row, col, False), cell_text(row, col, True), value, extra)


def _charts(board: Board, records: list[dict], colours: dict[tuple[str, str], str]
            ) -> list[CurveChart]:
    """As `patchbench plot` draws them: a chart per architecture, or per architecture and
    patch where there are several patches, with the unpatched controls in each."""
    done = completed(records)
    if not done:
        return []
    meta, learned = metric_meta(done), learned_metric(done)
    metrics = {m: meta.get(m, {}).get("short", m) for m in ("clean_acc", learned)}
    charts = []
    for arch in dict.fromkeys(row.architecture for row in board.rows):
        for patch in panel_patches(done):
            groups = []
            for row in board.rows:
                if row.architecture != arch or not in_panel(patch, row.patch):
                    continue
                recs = [r for r in done if (r["architecture"], arm_label(r), r["patch"])
                        == (arch, row.arm, row.patch)]
                if recs:
                    groups.append((row.arm, row.patch, colours[(row.arm, row.patch)], recs))
            title = arch if patch is None else f"{arch} / {patch}"
            chart = curve_chart(arch, title, groups, metrics)
            if chart is not None:
                charts.append(chart)
    return charts


def _trial(record: dict[str, Any]) -> TrialFacts:
    keys = [k for k in FACT_ORDER if k in record]
    keys += sorted(k for k in record if k not in FACT_ORDER and k not in NOT_FACTS)
    facts = [(k, _fact(record[k])) for k in keys if record[k] not in (None, "", {}, [])]
    return TrialFacts(record["key"], record["status"], facts)


def _fact(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} ({_fact(v)})" if isinstance(v, dict) else f"{k} {_fact(v)}"
                         for k, v in value.items())
    if isinstance(value, list):
        return json.dumps(value)
    return str(value)
