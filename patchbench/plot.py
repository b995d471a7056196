"""Learning curves: clean and patch-only accuracy per arm over epochs, bands over seeds."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from .errors import PatchbenchError
from .leaderboard import arm_label, learned_metric, metric_meta


def plot_records(records: list[dict], out: Path, title: str = "") -> None:
    """One panel per architecture; per arm a colour, clean accuracy solid, the metric that
    defines "learned" (patch-only accuracy, or e.g. the attack success rate) dashed; the line is the mean over seeds, the band min..max; dotted verticals mark the
    arm's anneal epochs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in records if r["status"] == "completed" and r["history"]]
    if not done:
        raise PatchbenchError("plot: no completed trials in the given results")
    by_arch: dict[str, dict[tuple[str, str], list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in done:
        by_arch[r["architecture"]][(arm_label(r), r["patch"])].append(r)
    archs = sorted(by_arch)
    # What to draw and how to label it comes from the records (older ones: built-in table).
    meta, learned = metric_meta(done), learned_metric(done)
    fig, axes = plt.subplots(1, len(archs), figsize=(8.5 * len(archs), 4.2), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, arch in zip(axes[0], archs):
        for i, ((arm, patch), recs) in enumerate(sorted(by_arch[arch].items())):
            colour = colours[i % len(colours)]
            label = arm if patch != "none" else f"{arm} (no patch)"
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
        ax.set_title(arch)
        ax.set_xlabel("epoch")
        ax.set_ylabel("value")
        ranges = [meta[m]["range"] for m in ("clean_acc", learned) if "range" in meta.get(m, {})]
        ax.set_ylim(min((r[0] for r in ranges), default=0),
                    max((r[1] for r in ranges), default=1))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def seed_curves(recs: list[dict], metric: str) -> tuple[np.ndarray | None, np.ndarray]:
    """Epochs evaluated by every seed, and the metric per seed (rows) and epoch (columns)."""
    per_seed = [{h["epoch"]: h.get(metric) for h in r["history"] if h.get(metric) is not None}
                for r in recs]
    common = sorted(set.intersection(*(set(s) for s in per_seed)))
    if not common:
        return None, np.empty(0)
    return np.array(common), np.array([[s[e] for e in common] for s in per_seed])
