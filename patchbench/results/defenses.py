"""Attack x defense tables: how much of the clean accuracy each defense gives back, by LR.

A spec's ``defenses`` make one arm per (arm, defense) (:mod:`patchbench.spec.defenses`). Here
the leaderboard's rows are laid out again: one table per benchmark spec and architecture,
a row per (attack, undefended arm: the LR arm), a column per defense ("none": the arm
itself). A cell holds the final and the peak clean accuracy, mean ± std over seeds; the gain
table holds the leaderboard's defense gain (defended − undefended, paired by seed and attack)
for the same stat. Every number is a leaderboard cell: nothing is computed twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import PatchbenchError
from .leaderboard import Board, Cell, Row, build_boards, defense_of
from .table import Column, Table

NONE = "none"


@dataclass
class DefenseGrid:
    """One board and architecture: cells by (attack, LR arm) and defense."""

    board: Board
    architecture: str
    attacks: list[tuple[str, str]] = field(default_factory=list)
    """(patch, undefended arm) in the leaderboard's row order."""
    defenses: list[str] = field(default_factory=list)
    rows: dict[tuple[str, str, str], Row] = field(default_factory=dict)
    """(patch, undefended arm, defense) -> the leaderboard row."""


def defense_grids(records: list[dict], metric: str = "clean_acc", stat: str = "final"
                  ) -> list[DefenseGrid]:
    """The grids of the records whose arms carry defenses (empty when none do)."""
    defended = {(r["benchmark"], r["benchmark_version"], r["spec_hash"], r["arm"]): d
                for r in records if (d := defense_of(r))}
    if not defended:
        return []
    grids = []
    for board in build_boards(records, stat=stat, cost_metric=metric):
        ids = (board.benchmark, board.version, board.spec_hash)
        if not any(k[:3] == ids for k in defended):
            continue
        by_arch: dict[str, DefenseGrid] = {}
        for row in board.rows:  # controls too: attack "none" is what a defense costs clean
            grid = by_arch.setdefault(row.architecture, DefenseGrid(board, row.architecture))
            d = defended.get((*ids, row.arm))
            base, name = (d["of"], d["name"]) if d else (row.arm, NONE)
            if (row.patch, base) not in grid.attacks:
                grid.attacks.append((row.patch, base))
            if name not in grid.defenses:
                grid.defenses.append(name)
            grid.rows[(row.patch, base, name)] = row
        for grid in by_arch.values():
            grid.defenses.sort(key=lambda n: n != NONE)  # none first, then the spec's order
            arms = list(dict.fromkeys(arm for _, arm in grid.attacks))
            grid.attacks.sort(key=lambda a: (arms.index(a[1]), a[0] == "none"))
        grids += by_arch.values()
    return grids


def _text(cell: Cell | None) -> str:
    return "-" if cell is None else cell.text()


def clean_tables(records: list[dict], metric: str = "clean_acc") -> list[Table]:
    """Attack x defense, each cell ``final / peak`` of ``metric``, mean ± std over seeds."""
    final, peak = defense_grids(records, metric, "final"), defense_grids(records, metric, "peak")
    if not final:
        raise PatchbenchError("leaderboard --defenses: no arm in these results has a defense "
                              "(a spec's `defenses:` makes them)")
    tables = []
    for g, p in zip(final, peak):
        columns = [Column("attack", numeric=False), Column("arm", numeric=False)] + \
            [Column(d, higher_is_better=True) for d in g.defenses]
        rows, data = [], []
        for patch, arm in g.attacks:
            cells = []
            for d in g.defenses:
                f, q = g.rows.get((patch, arm, d)), p.rows.get((patch, arm, d))
                fc = f.cells.get(metric) if f else None
                pc = q.cells.get(metric) if q else None
                cells.append(f"{_text(fc)} / {_text(pc)}")
                data.append({"architecture": g.architecture, "attack": patch, "arm": arm,
                             "defense": d, "n": f.completed if f else 0,
                             **{f"{s}_{k}": (c.as_dict()[k] if c else None)
                                for s, c in (("final", fc), ("peak", pc))
                                for k in ("mean", "std", "n")}})
            rows.append([patch, arm] + cells)
        tables.append(Table(
            f"{g.board.title} / {g.architecture}: {metric}, final / peak", columns, rows,
            f"rows: attack and the undefended arm (its LR); columns: defense (none: the arm "
            f"itself); cells: {metric} at the final epoch / at its peak, mean ± std over "
            "completed seeds", g.board.note, data))
    return tables


def gain_tables(records: list[dict], metric: str = "clean_acc", stat: str = "final"
                ) -> list[Table]:
    """Attack x defense, each cell the defense gain of ``metric`` (paired by seed)."""
    grids = defense_grids(records, metric, stat)
    tables = []
    for g in grids:
        shown = [d for d in g.defenses if d != NONE]
        columns = [Column("attack", numeric=False), Column("arm", numeric=False)] + \
            [Column(d, higher_is_better=True) for d in shown]
        rows, data = [], []
        for patch, arm in g.attacks:
            cells = []
            for d in shown:
                row = g.rows.get((patch, arm, d))
                cell = row.cells.get("defense_gain") if row else None
                cells.append(_text(cell))
                data.append({"architecture": g.architecture, "attack": patch, "arm": arm,
                             "defense": d, **{f"gain_{k}": (cell.as_dict()[k] if cell else None)
                                              for k in ("mean", "std", "n")}})
            rows.append([patch, arm] + cells)
        tables.append(Table(
            f"{g.board.title} / {g.architecture}: defense gain in {metric} ({stat})", columns,
            rows, f"cells: defended − undefended {metric} ({stat}), paired by seed and attack, "
            "mean ± std over the pairs", g.board.note, data))
    return tables
