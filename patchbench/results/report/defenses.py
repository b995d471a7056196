"""The report's attack x defense heatmaps: each defense's gain in clean accuracy over the arm
without it, one heatmap per architecture and undefended (LR) arm. The cells are the
leaderboard's defense-gain cells (:mod:`patchbench.results.defenses`)."""

from __future__ import annotations

from ..defenses import NONE, defense_grids
from .charts import HeatGrid
from .charts import heatmaps as lay_out
from .sweeps import SweepView


def defense_view(records: list[dict]) -> SweepView | None:
    """Gain heatmaps of one board's records, or None when no arm carries a defense."""
    grids = defense_grids(records)
    if not grids:
        return None
    drawn, defenses, attacks = [], [], []
    for g in grids:
        for _, arm in g.attacks:
            label = f"{g.architecture} / {arm}"
            if any(h.row == label for h in drawn):
                continue
            heat = HeatGrid(f"{label}: defense gain in clean accuracy ↑", label, "defense_gain")
            for (patch, base, d), row in g.rows.items():
                if base != arm or d == NONE:
                    continue
                cell = row.cells.get("defense_gain")
                mean = cell.mean if cell else None
                heat.values[(d, patch)] = (mean, "-" if mean is None else f"{mean:+.3f}")
                defenses += [d] if d not in defenses else []
                attacks += [patch] if patch not in attacks else []
            drawn.append(heat)
    note = ("cells: defended − undefended clean accuracy at the final epoch, paired by seed "
            "and attack, mean over the pairs; colour: from the lowest gain (dark) to the "
            "highest (yellow) over all of them")
    return SweepView(["defense", "attack"], lay_out(drawn, "defense", "attack",
                                                    (defenses, attacks)), note)
