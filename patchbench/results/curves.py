"""Learning curves as numbers: which records a figure draws, in which panels, and each
metric per seed and epoch. ``plot`` (matplotlib) and the report page (inline SVG) draw them."""

from __future__ import annotations

from collections import defaultdict
import numpy as np

from ..errors import PatchbenchError
from .leaderboard import arm_label, spec_differences, spec_named, spec_of
from .record_check import completed


Curves = dict[str, list[dict]]  # legend label -> the seeds' records of one arm and patch


def one_spec(records: list[dict], spec: str | None = None) -> tuple[list[dict], str]:
    """The records of one benchmark version that a plot draws, and a line saying what was
    pooled. Specs that differ only in their seed lists pool (a grid run seed by seed), each
    trial drawn once, from its latest run; specs that differ in anything else are never
    pooled, as in the leaderboard: `spec` (a spec hash or its prefix) picks one."""
    hashes = sorted({r["spec_hash"] for r in records})
    if spec is not None:
        picked = [h for h in hashes if h.startswith(spec)]
        if len(picked) != 1:
            raise PatchbenchError(f"--spec: {spec!r} matches {len(picked)} of these results' "
                                  f"specs; allowed: {', '.join(hashes)}")
        hashes = picked
        records = [r for r in records if r["spec_hash"] == picked[0]]
    if len(hashes) == 1:
        return records, ""
    by_hash = {h: [r for r in records if r["spec_hash"] == h] for h in hashes}
    first = spec_of(by_hash[hashes[0]])
    diffs = {h: spec_differences(first, spec_of(by_hash[h])) for h in hashes[1:]}
    if any(d is None or set(d) - {"seeds"} for d in diffs.values()):
        named = [hashes[0]] + [spec_named(h, d) for h, d in diffs.items()]
        raise PatchbenchError(f"plot: results hold {len(hashes)} specs ({'; '.join(named)}); "
                              "choose one with --spec HASH")
    latest: dict[str, dict] = {}
    for r in sorted(records, key=lambda r: r.get("finished_at") or ""):
        latest[r["key"]] = r
    again = len(records) - len(latest)
    note = (f"pooled specs {', '.join(hashes)} (they differ only in seeds)"
            + (f"; {again} trial{'s' if again != 1 else ''} run under several drawn once, "
               "from the latest run" if again else ""))
    return list(latest.values()), note


def panel_patches(records: list[dict]) -> list[str | None]:
    """The patch of each panel of an architecture: [None] (one panel, every patch) unless the
    trials have several patches besides the unpatched control."""
    patched = sorted({r["patch"] for r in records if r["patch"] != "none"})
    return patched if len(patched) > 1 else [None]


def in_panel(panel_patch: str | None, patch: str) -> bool:
    """Whether a trial with `patch` is drawn in the panel of `panel_patch` (panel_patches)."""
    return panel_patch is None or patch in (panel_patch, "none")


def panels(records: list[dict]) -> list[tuple[str, Curves]]:
    """What each panel draws, in order: one panel per architecture; where the trials have
    several patches (e.g. four backdoor triggers), one per architecture and patch, so that
    the arms compare within a trigger. Unpatched controls (patch "none") go in every panel of
    their architecture."""
    done = completed(records)
    if not done:
        raise PatchbenchError("plot: no completed trials in the given results")
    found: list[tuple[str, Curves]] = []
    for arch in sorted({r["architecture"] for r in done}):
        for patch in panel_patches(done):
            curves: dict[tuple[str, str], list[dict]] = defaultdict(list)
            for r in done:
                if r["architecture"] == arch and in_panel(patch, r["patch"]):
                    curves[(arm_label(r), r["patch"])].append(r)
            # Each arm's patched curve, then its control, in every panel: plots colour the
            # curves by position and draw one legend, so the order must not depend on how the
            # patch's name sorts against "none".
            labels = {(arm if p != "none" else f"{arm} (no patch)"): recs
                      for (arm, p), recs in sorted(curves.items(),
                                                   key=lambda kv: (kv[0][0], kv[0][1] == "none"))}
            found.append((arch if patch is None else f"{arch} / {patch}", labels))
    return found


def seed_curves(recs: list[dict], metric: str) -> tuple[np.ndarray | None, np.ndarray]:
    """Epochs evaluated by every seed, and the metric per seed (rows) and epoch (columns)."""
    per_seed = [{h["epoch"]: h.get(metric) for h in r["history"] if h.get(metric) is not None}
                for r in recs]
    common = sorted(set.intersection(*(set(s) for s in per_seed)))
    if not common:
        return None, np.empty(0)
    return np.array(common), np.array([[s[e] for e in common] for s in per_seed])
