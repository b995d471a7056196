"""Which stored records tables can use: one bad record is reported and skipped, never a
store that no command can read any more.

A record can be bad because an older version, a hand edit or a plugin without boundary
checks stored it: a metric that is a string, a summary that is not a mapping. Every reader
(``leaderboard``, ``plot``, ``export``, the table after a run) goes through here.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from .. import errors

REQUIRED = {"spec_hash": str, "key": str, "benchmark": str, "benchmark_version": str,
            "status": str, "architecture": str, "arm": str, "patch": str, "seed": int,
            "summary": dict, "history": list}
Warn = Callable[[str], None]


def _number_or_none(value: Any) -> bool:
    # NaN is a number here: a diverged trial's last training loss is one.
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def record_problem(record: Any) -> str | None:
    """Why ``record`` cannot be shown, or None when it can."""
    if not isinstance(record, dict):
        return f"a record must be a mapping, got {type(record).__name__}"
    for key, kind in REQUIRED.items():
        if not isinstance(record.get(key), kind) or isinstance(record.get(key), bool):
            return f"{key}: expected {kind.__name__}, got {record.get(key)!r:.60}"
    summary = record["summary"]
    final = summary.get("final", {})
    if not isinstance(final, dict):
        return "summary.final: expected a mapping of metric values"
    for name, value in final.items():
        if not _number_or_none(value):
            return f"summary.final.{name}: expected a number or null, got {value!r:.60}"
    if not _number_or_none(summary.get("patch_learned_epoch")):
        return "summary.patch_learned_epoch: expected an epoch or null"
    for anneal in (summary.get("anneals") or {}).values():
        for side in ("before", "after"):
            values = (anneal or {}).get(side) or {}
            if not isinstance(values, dict) or not all(map(_number_or_none, values.values())):
                return "summary.anneals: expected numbers or null"
    sweep = record.get("sweep")
    if sweep is not None and not (isinstance(sweep, dict)
                                  and all(isinstance(k, str) for k in sweep)):
        return f"sweep: expected a mapping of swept paths to values, got {sweep!r:.60}"
    for i, row in enumerate(record["history"]):
        if not isinstance(row, dict) or not isinstance(row.get("epoch"), int):
            return f"history[{i}]: expected a mapping with an epoch"
        bad = [k for k, v in row.items() if k != "epoch" and not _number_or_none(v)]
        if bad:
            return f"history[{i}].{bad[0]}: expected a number or null, got {row[bad[0]]!r:.60}"
    return None


def usable(records: Iterable[Any], source: str, warn: Warn | None = None) -> list[dict]:
    """The records that tables can use; each other one is reported in one line and skipped."""
    out = []
    for i, record in enumerate(records):
        problem = record_problem(record)
        if problem is None:
            out.append(record)
            continue
        key = record.get("key", f"record {i}") if isinstance(record, dict) else f"record {i}"
        (warn or errors.warn)(f"{source}: skipping {key}: {problem}")
    return out


def completed(records: Iterable[dict]) -> list[dict]:
    """The completed trials that have a history: what curves and per-epoch tables draw."""
    return [r for r in records if r["status"] == "completed" and r.get("history")]
