"""Phase diagrams: final metrics over the values of swept spec fields, as heatmaps.

A trial that belongs to a sweep carries ``record["sweep"]``: a mapping from the swept field's
path (``arms.small_lr.optimizer.lr``) to its value in that trial. Records without it (every
record before sweeps exist) give no heatmap. The numbers are the leaderboard's: the records of
each swept point go through ``build_boards`` on their own, so a heatmap cell equals the
leaderboard cell of that point, patch cost included.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...spec.sweep import base_arm
from ..leaderboard import build_boards, header
from ..phase import value_key
from .charts import HeatGrid, Heatmap, heatmaps

# Drawn when the board has them; patch cost only where an arm has controls.
METRICS = ["clean_acc", "patch_only_acc", "patch_cost"]


@dataclass
class SweepView:
    fields: list[str]
    maps: list[Heatmap]
    note: str = ""


def sweep_fields(records: list[dict]) -> list[str]:
    fields: list[str] = []
    for r in records:
        sweep = r.get("sweep")
        if isinstance(sweep, dict):
            fields += [f for f in sweep if f not in fields]
    return sorted(fields)


def sweep_view(records: list[dict]) -> SweepView | None:
    """Heatmaps of one board's records, or None when they carry no swept values."""
    fields = sweep_fields(records)
    if not fields:
        return None
    if len(fields) > 2:
        return SweepView(fields, [], f"{len(fields)} swept fields ({', '.join(fields)}); "
                         "heatmaps are drawn for sweeps over one or two fields only")
    x_field, y_field = fields[0], fields[1] if len(fields) > 1 else None
    points: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        sweep = r.get("sweep") if isinstance(r.get("sweep"), dict) else {}
        if not any(f in sweep for f in fields):  # an arm no swept field changes: no point
            continue
        point = (value_key(sweep.get(x_field)),
                 value_key(sweep.get(y_field)) if y_field else "")
        points.setdefault(point, []).append(r)
    grids: dict[tuple[str, str, str, str], HeatGrid] = {}
    for point, recs in points.items():
        for board in build_boards(recs):
            columns = {c.id: c for c in board.columns}
            for row in board.rows:
                for metric in METRICS:
                    cell = row.cells.get(metric)
                    if metric not in columns or cell is None:
                        continue
                    # A swept arm's variants are the cells of one grid: key by its arm.
                    arm = base_arm(row.arm)
                    label = f"{row.architecture} / {arm} / {row.patch}"
                    grid = grids.setdefault(
                        (row.architecture, arm, row.patch, metric),
                        HeatGrid(f"{label}: {header(columns[metric])}", label, metric))
                    text = "-" if cell.mean is None else f"{cell.mean:.3f}"
                    grid.values[point] = (cell.mean, text)
    kept = [g for g in grids.values()
            if any(v is not None for v, _ in g.values.values())]
    order = {m: i for i, m in enumerate(METRICS)}
    kept.sort(key=lambda g: order[g.metric])
    note = ("cells: mean over completed seeds at the final epoch; colour: from each metric's "
            "lowest value (dark) to its highest (yellow) over all of its heatmaps")
    return SweepView(fields, heatmaps(kept, x_field, y_field), note)
