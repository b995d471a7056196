"""Figures as PNG files (matplotlib): learning curves per panel, and phase diagrams as
heatmaps. The numbers come from :mod:`patchbench.results.curves` and
:mod:`patchbench.results.phase`; this module only draws them."""

from __future__ import annotations

import math
from pathlib import Path

from .curves import panels, seed_curves
from .leaderboard import header, learned_metric, metric_meta
from .phase import LEARNED, Phase
from .record_check import completed


def plot_records(records: list[dict], out: Path, title: str = "") -> None:
    """Per arm a colour, clean accuracy solid, the metric that defines "learned" (patch-only
    accuracy, or e.g. the attack success rate) dashed; the line is the mean over seeds, the
    band min..max; dotted verticals mark the arm's anneal epochs. Panels as panels() says."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = panels(records)
    done = completed(records)
    # What to draw and how to label it comes from the records (older ones: built-in table).
    meta, learned = metric_meta(done), learned_metric(done)
    cols = min(len(found), 2)
    rows = -(-len(found) // cols)
    fig, grid = plt.subplots(rows, cols, figsize=(8.5 if cols == 1 else 5.5 * cols, 3.6 * rows),
                             squeeze=False, sharey=True)
    axes = grid.ravel()
    for ax in axes[len(found):]:
        ax.set_visible(False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (panel_title, curves) in zip(axes, found):
        for i, (label, recs) in enumerate(curves.items()):
            colour = colours[i % len(colours)]
            for metric, style in (("clean_acc", "-"), (learned, "--")):
                epochs, values = seed_curves(recs, metric)
                if epochs is None:
                    continue
                ax.plot(epochs, values.mean(0), style, color=colour,
                        label=f"{label}: {meta.get(metric, {}).get('short', metric)}")
                if len(recs) > 1:
                    ax.fill_between(epochs, values.min(0), values.max(0), color=colour,
                                    alpha=0.15, linewidth=0)
            for epoch in recs[0]["summary"].get("anneals", {}):
                ax.axvline(int(epoch) - 0.5, color=colour, linestyle=":", linewidth=1)
        ax.set_title(panel_title)
        ax.set_xlabel("epoch")
        ranges = [meta[m]["range"] for m in ("clean_acc", learned) if "range" in meta.get(m, {})]
        ax.set_ylim(min((r[0] for r in ranges), default=0),
                    max((r[1] for r in ranges), default=1))
        ax.grid(alpha=0.3)
    for row in grid:
        row[0].set_ylabel("value")
    axes[cols - 1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_phases(phases: list[Phase], out: Path) -> None:
    """One heatmap per phase diagram, side by side: rows X, columns Y as in the table; the
    colour is the mean (grey: no value, or never learned); each cell annotated with its mean
    (and k/n or never for the learned epoch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cols = min(len(phases), 3)
    rows = math.ceil(len(phases) / cols)
    fig, axes = plt.subplots(rows, cols, squeeze=False,
                             figsize=(max(4.5, 1.3 * max(len(p.ys) for p in phases) + 2.5) * cols,
                                      (max(3.5, 0.8 * max(len(p.xs) for p in phases) + 2))
                                      * rows))
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#dddddd")
    for ax, p in zip(axes.flat, phases):
        grid = np.full((len(p.xs), len(p.ys)), np.nan)
        for (kx, ky), c in p.cells.items():
            if c.cell.mean is not None:
                grid[p.xs.index(kx), p.ys.index(ky)] = c.cell.mean
        shown = np.ma.masked_invalid(grid)
        image = ax.imshow(shown, cmap=cmap, aspect="auto")
        fig.colorbar(image, ax=ax, shrink=0.8)
        finite = grid[np.isfinite(grid)]
        mid = (finite.min() + finite.max()) / 2 if finite.size else 0.0
        digits = 1 if p.column.id == LEARNED else 3
        for i, kx in enumerate(p.xs):
            for j, ky in enumerate(p.ys):
                c = p.cells.get((kx, ky))
                if c is None:
                    text = "-"
                elif c.cell.mean is None:
                    text = "never" if c.never else "-"
                else:
                    text = f"{c.cell.mean:.{digits}f}"
                    if p.column.id == LEARNED and c.row.never_learned:
                        text += f"\n({c.cell.n}/{c.row.completed})"
                dark = math.isnan(grid[i, j]) or grid[i, j] >= mid
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="black" if dark else "white")
        ax.set_xticks(range(len(p.ys)), p.ys)
        ax.set_yticks(range(len(p.xs)), p.xs)
        ax.set_xlabel(p.y_field)
        ax.set_ylabel(p.x_field)
        ax.set_title(f"{p.architecture} / {p.arm} / {p.patch}\n{header(p.column)}, "
                     "mean over seeds", fontsize=9)
    for ax in list(axes.flat)[len(phases):]:
        ax.axis("off")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
