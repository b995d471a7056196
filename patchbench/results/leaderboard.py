"""Leaderboards: trial records aggregated over seeds, one table per benchmark version.

Rows are architecture x arm x patch; each cell is the mean over completed seeds with its
standard deviation (or a 95% t-interval) and n. Records of one benchmark version that come
from different specs (different spec hashes) are never pooled: they get separate tables.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import PatchbenchError
from ..evaluation import peak
from ..spec.models import DEFAULT_LEARNED_METRIC, NOT_SCIENCE
from ..spec.sweep import variant_name
from .table import Column as TableColumn
from .table import Table

# Two-sided 95% Student-t quantiles by degrees of freedom (1..30); 1.96 beyond.
T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
       2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
       2.060, 2.056, 2.052, 2.048, 2.045, 2.042]

SHORT = {"clean_acc": "clean", "mixed_acc": "mixed", "patch_only_acc": "patch-only",
         "patch_follow_rate": "follow", "conflict_clean_acc": "conflict-clean",
         "attack_success_rate": "ASR", "train_acc": "train"}
"""Short headers for records written before records carried their metrics' metadata, and for
the progress line."""
LOWER_IS_BETTER = {"patch_follow_rate", "attack_success_rate"}
"""Directions for those older records; newer records say it themselves."""

STATS = {"final": "at the final epoch",
         "peak": "at each metric's peak (its best value over the evaluated epochs)",
         "peak_epoch": "of the epoch of each metric's peak (the first with its best value)",
         "before_anneal": "just before the first anneal",
         "after_anneal": "just after the first anneal"}
"""What ``--stat`` may choose for the metric columns, as the caption says it."""
STAT_LABEL = {"final": "final", "peak": "peak", "peak_epoch": "peak-epoch",
              "before_anneal": "before-anneal", "after_anneal": "after-anneal"}
"""The stat as a header's (and the patch cost's) qualifier."""
DEFAULT_COST_METRIC = "clean_acc"


@dataclass
class Cell:
    values: list[float]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if self.n > 1 else (0.0 if self.values else None)

    @property
    def ci95(self) -> float | None:
        if self.n < 2:
            return None
        t = T95[self.n - 2] if self.n - 2 < len(T95) else 1.96
        return t * self.std / math.sqrt(self.n)

    def text(self, ci: bool = False, digits: int = 3) -> str:
        if self.mean is None:
            return "-"
        spread = self.ci95 if ci else self.std
        if spread is None or self.n < 2:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {spread:.{digits}f}"

    def as_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "n": self.n, "ci95": self.ci95}


@dataclass
class Measure:
    """What one leaderboard column measures over a row's seeds: a final metric, the learned
    epoch, clean accuracy before the anneal or the patch cost; ``id`` keys the row's cells."""

    id: str
    header: str
    higher_is_better: bool | None
    """None where no direction is better (the epoch of a peak): no arrow."""
    digits: int = 3


@dataclass
class Row:
    architecture: str
    arm: str
    patch: str
    completed: int
    failed: int
    cells: dict[str, Cell] = field(default_factory=dict)
    never_learned: int = 0
    sweep: dict[str, Any] = field(default_factory=dict)
    """The swept values of this row's trials (a swept arm's variant), else empty."""


@dataclass
class Board:
    benchmark: str
    version: str
    spec_hash: str
    columns: list[Measure]
    rows: list[Row]
    note: str = ""
    learned: str = "patch-only accuracy"
    """What "learned" means in this table: the short label of the learned metric."""
    stat: str = "final"
    """Which statistic of each metric's history the metric columns and the cost show."""
    cost: str = "clean"
    """The short name of the metric the patch cost is the difference of."""

    @property
    def title(self) -> str:
        return f"{self.benchmark} v{self.version} (spec {self.spec_hash})"


def _final(metric: str) -> Callable[[dict], float | None]:
    return lambda r: r["summary"].get("final", {}).get(metric)


def _first_anneal(r: dict, side: str) -> dict:
    anneals = r["summary"].get("anneals") or {}
    if not anneals:
        return {}
    return anneals[min(anneals, key=int)].get(side) or {}


def stat_of(metric: str, stat: str, higher_is_better: bool) -> Callable[[dict], float | None]:
    """A record's value of ``metric`` for ``stat``. Records stored before the summary held
    the peak get it from their history (None without one)."""
    if stat == "final":
        return _final(metric)
    if stat in ("before_anneal", "after_anneal"):
        return lambda r: _first_anneal(r, stat.split("_")[0]).get(metric)
    index = 0 if stat == "peak" else 1

    def get(r: dict) -> float | None:
        stored = r["summary"].get(stat)
        if isinstance(stored, dict) and metric in stored:
            return stored[metric]
        return peak(r.get("history") or [], metric, higher_is_better)[index]
    return get


def _at_first_anneal(r: dict) -> float | None:
    return _first_anneal(r, "before").get("clean_acc")


def metric_meta(records: list[dict]) -> dict[str, dict[str, Any]]:
    """Each metric's metadata as the records carry it (``metrics``), else, for records from
    before they did, from the built-in table."""
    meta: dict[str, dict[str, Any]] = {}
    for r in records:
        meta.update({k: v for k, v in (r.get("metrics") or {}).items() if k not in meta})
    for r in records:
        for m in r["summary"].get("final", {}):
            meta.setdefault(m, {"name": m, "short": SHORT.get(m, m),
                                "higher_is_better": m not in LOWER_IS_BETTER})
    return meta


def learned_metric(records: list[dict]) -> str:
    """The metric whose threshold defines "learned" (records before the field: patch-only)."""
    return next((r["learned_metric"] for r in records if r.get("learned_metric")),
                DEFAULT_LEARNED_METRIC)


def metrics_of(records: list[dict]) -> list[str]:
    """The metric columns: every metric the records' summaries hold, in order."""
    metrics: list[str] = []
    for r in records:
        metrics += [m for m in r["summary"].get("final", {}) if m not in metrics]
    return metrics


def columns_for(records: list[dict], stat: str = "final"
                ) -> list[tuple[Measure, Callable[[dict], float | None]]]:
    meta = metric_meta(records)
    epoch = stat == "peak_epoch"
    cols = [(Measure(m, meta[m]["short"] if stat == "final" else
                     f"{meta[m]['short']} {STAT_LABEL[stat]}",
                     None if epoch else meta[m]["higher_is_better"], 1 if epoch else 3),
             stat_of(m, stat, meta[m]["higher_is_better"])) for m in metrics_of(records)]
    cols.append((Measure("patch_learned_epoch", "learned (epoch)", False),
                 lambda r: r["summary"].get("patch_learned_epoch")))
    if any(r["summary"].get("anneals") for r in records):
        cols.append((Measure("clean_at_anneal", "clean before anneal", True), _at_first_anneal))
    cols.append((Measure("patch_cost", "patch cost", None if epoch else False, 1 if epoch else 3),
                 lambda r: None))
    if not epoch and any(defense_of(r) for r in records):
        cols.append((Measure("defense_gain", "defense gain", True), lambda r: None))
    return cols


def defense_of(record: dict) -> dict[str, str] | None:
    """The ``{name, of}`` of the defense a record's arm adds (from the spec it carries), or
    None for an arm without one."""
    arms = (record.get("spec") or {}).get("arms") or []
    arm = next((a for a in arms if isinstance(a, dict) and a.get("name") == record["arm"]), None)
    found = arm.get("defense") if arm else None
    return found if isinstance(found, dict) and "of" in found and "name" in found else None


def build_boards(records: list[dict], sort: str | None = None, stat: str = "final",
                 cost_metric: str | None = None) -> list[Board]:
    """One board per benchmark spec. ``stat``: which statistic of each metric the metric
    columns show (:data:`STATS`); the patch cost is control − patched of ``cost_metric``
    (default clean accuracy, where the records have it) for that stat, paired by seed."""
    if stat not in STATS:
        raise PatchbenchError(f"--stat: unknown stat {stat!r}; allowed: {', '.join(STATS)}")
    known = metrics_of(records)
    if cost_metric is None:
        cost_metric = DEFAULT_COST_METRIC
    elif records and cost_metric not in known:
        raise PatchbenchError(f"--cost-metric: unknown metric {cost_metric!r}; allowed: "
                              f"{', '.join(known) or '(no metrics in these results)'}")
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in records:
        groups.setdefault((r["benchmark"], r["benchmark_version"], r["spec_hash"]), []).append(r)
    hashes: dict[tuple[str, str], list[str]] = {}
    for bench, version, h in groups:
        hashes.setdefault((bench, version), []).append(h)
    boards = []
    for (bench, version, h), recs in sorted(groups.items()):
        cols = columns_for(recs, stat)
        meta = metric_meta(recs)
        cost = meta.get(cost_metric, {"short": cost_metric, "higher_is_better": True})
        rows = _rows(recs, cols, stat_of(cost_metric, stat, cost["higher_is_better"]))
        note = ""
        if len(hashes[(bench, version)]) > 1:
            note = _other_specs_note(bench, version, h, hashes[(bench, version)], groups)
        mixed = code_note(recs)
        note = f"{note} {mixed}".strip() if mixed else note
        learned = learned_metric(recs)
        label = "patch-only accuracy" if learned == DEFAULT_LEARNED_METRIC else \
            metric_meta(recs).get(learned, {}).get("short", learned)
        board = Board(bench, version, h, [c for c, _ in cols], rows, note, label, stat,
                      cost["short"])
        if sort:
            sort_board(board, sort)
        boards.append(board)
    return boards


def spec_of(records: list[dict]) -> dict | None:
    """The spec the records of one spec hash carry (None where none was stored)."""
    return next((r["spec"] for r in records if r.get("spec")), None)


def spec_differences(mine: dict | None, theirs: dict | None) -> list[str] | None:
    """The top-level fields two specs differ in, leaving out where results go and how trials
    are run (they change no number); None when either spec is unknown."""
    if mine is None or theirs is None:
        return None
    return sorted(k for k in set(mine) | set(theirs)
                  if k not in NOT_SCIENCE
                  and mine.get(k) != theirs.get(k))


def spec_named(spec_hash: str, diff: list[str] | None) -> str:
    """A spec hash, with the fields it differs in where they are known."""
    return f"{spec_hash}, which differs in {', '.join(diff)}" if diff else spec_hash


def _other_specs_note(bench: str, version: str, h: str, all_hashes: list[str],
                      groups: dict[tuple[str, str, str], list[dict]]) -> str:
    """Says which other specs of this version exist and, where the records carry their
    specs, the fields they differ in: a seeds-only difference has its own advice."""
    mine = spec_of(groups[(bench, version, h)])
    others, fields = [], set()
    for x in all_hashes:
        if x == h:
            continue
        diff = spec_differences(mine, spec_of(groups[(bench, version, x)]))
        others.append(spec_named(x, diff))
        fields.update(diff or ())
    advice = "Bump `version` when a spec changes."
    if fields == {"seeds"}:
        advice = ("Seeds are part of the spec: to run a grid seed by seed, keep its seeds and "
                  "pick them with `--only '*/seed1'`.")
    return (f"{bench} v{version} also has results from a different spec ({'; '.join(others)});"
            f" they are shown apart. {advice}")


def sources_of(record: dict) -> set[str]:
    """The source hashes of the code that trained a trial (two if it resumed across a change)."""
    src = record.get("source_hash") or "unrecorded"
    return {src, record.get("resumed_from_source", src) or "unrecorded"}


def code_note(records: list[dict]) -> str:
    """Say when a table pools trials trained (or resumed) by different code."""
    counts: dict[str, int] = {}
    for r in records:
        if r["status"] == "completed":
            for src in sources_of(r):
                counts[src] = counts.get(src, 0) + 1
    if len(counts) < 2:
        return ""
    parts = ", ".join(f"{src}: {n}" for src, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    return (f"Trials trained by {len(counts)} versions of the code are pooled here (source "
            f"hash: trials; {parts}); `patchbench run --force` retrains them with one.")


def arm_label(record: dict) -> str:
    """The arm a record's row shows: its variant name when it holds swept values, so that
    different points of a sweep are never pooled into one row."""
    arm, sweep = record["arm"], record.get("sweep")
    if not isinstance(sweep, dict) or not sweep or "[" in arm:
        return arm
    return variant_name(arm, sweep)


def _rows(records: list[dict], cols: list[tuple[Measure, Callable]],
          cost_of: Callable[[dict], float | None] = _final(DEFAULT_COST_METRIC)) -> list[Row]:
    by_row: dict[tuple[str, str, str], list[dict]] = {}
    for r in records:
        by_row.setdefault((r["architecture"], arm_label(r), r["patch"]), []).append(r)
    rows = []
    for (arch, arm, patch), recs in by_row.items():
        done = sorted((r for r in recs if r["status"] == "completed"), key=lambda r: r["seed"])
        row = Row(arch, arm, patch, len(done), len(recs) - len(done))
        sweep = next((r["sweep"] for r in recs if isinstance(r.get("sweep"), dict)), None)
        row.sweep = dict(sweep or {})
        for col, get in cols:
            values = [get(r) for r in done]
            row.cells[col.id] = Cell([v for v in values if v is not None])
        row.never_learned = sum(r["summary"].get("patch_learned_epoch") is None for r in done)
        controls = {r["seed"]: r for r in by_row.get((arch, arm, "none"), [])
                    if r["status"] == "completed"}
        if patch != "none" and controls:
            pairs = [(cost_of(controls[r["seed"]]), cost_of(r))
                     for r in done if r["seed"] in controls]
            row.cells["patch_cost"] = Cell([c - p for c, p in pairs
                                            if c is not None and p is not None])
        defense = next((d for d in map(defense_of, recs) if d), None)
        if defense and "defense_gain" in row.cells:
            undefended = {r["seed"]: r for r in by_row.get((arch, defense["of"], patch), [])
                          if r["status"] == "completed"}
            pairs = [(cost_of(r), cost_of(undefended[r["seed"]]))
                     for r in done if r["seed"] in undefended]
            row.cells["defense_gain"] = Cell([d - u for d, u in pairs
                                              if d is not None and u is not None])
        rows.append(row)
    return sorted(rows, key=_spec_order(records))


def _spec_order(records: list[dict]) -> Callable[[Row], tuple]:
    """Rows in the spec's order (arms as listed, each control after its arm), not in the
    order trials happened to finish or be stored."""
    spec = records[0].get("spec") or {}
    arms = [a.get("name") for a in spec.get("arms", [])]
    archs = list(dict.fromkeys(r["architecture"] for r in records))
    swept = spec.get("sweep") if isinstance(spec.get("sweep"), dict) else {}

    def point(row: Row) -> list[int]:
        # A swept arm's variants in the sweep's order (values as listed), not as text.
        return [next((i for i, v in enumerate(swept.get(path) or []) if v == value), -1)
                for path, value in row.sweep.items()]

    def key(row: Row) -> tuple:
        arm = row.arm.split("[", 1)[0]
        return (archs.index(row.architecture), arms.index(arm) if arm in arms else len(arms),
                arm, point(row), row.arm, row.patch == "none", row.patch)
    return key


def sort_board(board: Board, metric: str) -> None:
    col = next((c for c in board.columns if c.id == metric), None)
    if col is None:
        raise PatchbenchError(f"--sort: unknown metric {metric!r}; allowed: "
                              f"{', '.join(c.id for c in board.columns)}")
    sign = -1 if col.higher_is_better else 1  # no direction (an epoch): ascending

    def key(row: Row) -> tuple[int, float]:
        mean = row.cells[metric].mean
        return (1, 0.0) if mean is None else (0, sign * mean)
    board.rows.sort(key=key)


# ---------------------------------------------------------------- rendering

def cell_text(row: Row, col: Measure, ci: bool) -> str:
    cell = row.cells[col.id]
    if col.id == "patch_learned_epoch":
        if row.patch == "none":
            return "-"
        if cell.n == 0:
            return "never" if row.completed else "-"
        text = cell.text(ci, digits=1)
        return text + (f" ({cell.n}/{row.completed})" if row.never_learned else "")
    return cell.text(ci, col.digits)


def header(col: Measure) -> str:
    if col.higher_is_better is None:
        return col.header
    return f"{col.header} {'↑' if col.higher_is_better else '↓'}"


def n_text(row: Row) -> str:
    return str(row.completed) + (f" ({row.failed} failed)" if row.failed else "")


def caption(ci: bool, learned: str = "patch-only accuracy", stat: str = "final",
            cost: str = "clean", defenses: bool = False) -> str:
    """Says the spread, the stat of the metric columns and what the patch cost subtracts."""
    spread = "95% t-interval" if ci else "std"
    what = cost if stat == "final" and cost == "clean" else f"{STAT_LABEL[stat]} {cost}"
    return (f"mean ± {spread} over seeds {STATS[stat]}; learned = first epoch with "
            f"{learned} ≥ threshold (k/n: seeds that learned it); patch cost = "
            f"control {what} − patched {what}, paired by seed"
            + (f"; defense gain = defended {what} − undefended {what} (the arm without the "
               "defense), paired by seed and patch" if defenses else ""))


LABELS = ["architecture", "arm", "patch"]


def board_table(board: Board, ci: bool = False) -> Table:
    """The board as a table: a row per architecture x arm x patch; its records carry each
    column's mean, std, n and 95% t-interval."""
    columns = [TableColumn(name, numeric=False) for name in LABELS + ["n"]]
    columns += [TableColumn(header(c), higher_is_better=c.higher_is_better)
                for c in board.columns]
    rows = [[r.architecture, r.arm, r.patch, n_text(r)]
            + [cell_text(r, c, ci) for c in board.columns] for r in board.rows]
    data = []
    for r in board.rows:
        record: dict[str, Any] = {"benchmark": board.benchmark, "version": board.version,
                                  "spec_hash": board.spec_hash, "architecture": r.architecture,
                                  "arm": r.arm, "patch": r.patch, "n": r.completed,
                                  "failed": r.failed}
        for c in board.columns:
            stats = r.cells[c.id].as_dict()
            record.update({f"{c.id}_{s}": stats[s] for s in ("mean", "std", "n", "ci95")})
        data.append(record)
    defended = any(c.id == "defense_gain" for c in board.columns)
    return Table(board.title, columns, rows,
                 caption(ci, board.learned, board.stat, board.cost, defended), board.note, data)


def tables(boards: list[Board], ci: bool = False) -> list[Table]:
    return [board_table(b, ci) for b in boards]
