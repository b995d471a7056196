"""Phase diagrams: final metrics over the values of swept spec fields, as heatmaps.

A trial that belongs to a sweep carries ``record["sweep"]``: a mapping from the swept field's
path (``arms.small_lr.optimizer.lr``) to its value in that trial. Records without it (every
record before sweeps exist) give no heatmap. The numbers are those of ``leaderboard --pivot``
and ``plot --heatmap``: each heatmap is one of :func:`patchbench.results.phase.phases`, so a
heatmap cell equals the leaderboard cell of that swept point, patch cost included.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import PatchbenchError
from ...spec.sweep import base_arm
from ..leaderboard import header
from ..phase import Phase, phases
from .charts import HeatGrid, Heatmap, heatmaps

# Drawn when the board has them; patch cost only where an arm has controls.
METRICS = ["clean_acc", "patch_only_acc", "patch_cost"]


@dataclass
class SweepView:
    fields: list[str]
    maps: list[Heatmap]
    note: str = ""


def swept_arms(records: list[dict]) -> dict[str, list[str]]:
    """Each swept arm (by its name in the spec) → the fields it is swept over."""
    arms: dict[str, set[str]] = {}
    for r in records:
        sweep = r.get("sweep")
        if isinstance(sweep, dict) and sweep:
            arms.setdefault(base_arm(r["arm"]), set()).update(sweep)
    return {arm: sorted(fields) for arm, fields in arms.items()}


def sweep_view(records: list[dict]) -> SweepView | None:
    """Heatmaps of one board's records, or None when they carry no swept values."""
    arms = swept_arms(records)
    every = sorted({f for fs in arms.values() for f in fs})
    if not every:
        return None
    if len(every) > 2:
        return SweepView(every, [], f"{len(every)} swept fields ({', '.join(every)}); "
                         "heatmaps are drawn for sweeps over one or two fields only")
    # The heatmaps share their axes: those of the arm swept over the most fields (the first
    # such arm); an arm swept over other fields is named in the note.
    fields = max(arms.values(), key=len)
    x_field, y_field = fields[0], fields[1] if len(fields) > 1 else None
    drawn: list[Phase] = []
    for arm in [a for a, fs in arms.items() if fs == fields]:
        for metric in METRICS:
            try:
                drawn += phases(records, x_field, y_field, metric, arm=arm)
            except PatchbenchError:  # no such metric, or no value of it (no controls)
                continue
    # The leaderboard's row order within each metric, as in its table.
    order = {m: i for i, m in enumerate(METRICS)}
    drawn.sort(key=lambda p: (order[p.column.id], p.board.rows.index(next(
        iter(p.cells.values())).row)))
    grids = [_grid(p) for p in drawn]
    note = ("cells: mean over completed seeds at the final epoch; colour: from each metric's "
            "lowest value (dark) to its highest (yellow) over all of its heatmaps")
    apart = [f"{a} (over {', '.join(fs)})" for a, fs in arms.items() if fs != fields]
    if apart:
        note += ("; no heatmap for the arms swept over other fields than "
                 f"{' and '.join(fields)}: {', '.join(apart)}")
    return SweepView(fields, heatmaps(grids, x_field, y_field), note)


def _grid(phase: Phase) -> HeatGrid:
    label = f"{phase.architecture} / {phase.arm} / {phase.patch}"
    grid = HeatGrid(f"{label}: {header(phase.column)}", label, phase.column.id)
    for point, cell in phase.cells.items():
        mean = cell.cell.mean
        grid.values[point] = (mean, "-" if mean is None else f"{mean:.3f}")
    return grid
