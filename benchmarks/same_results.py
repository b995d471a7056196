"""Do two result sets hold the same science? Compares two `patchbench export` files (or result
directories) trial by trial: spec hash, resolved spec, summary and every history row, times
left out. For refactors that must change no result:

    patchbench run benchmarks/smoke.yaml --out /tmp/before   # on the old code
    patchbench run benchmarks/smoke.yaml --out /tmp/after    # on the new code
    python benchmarks/same_results.py /tmp/before /tmp/after

Prints one line per trial and exits 1 when any differs or either side lacks a trial.
"""

from __future__ import annotations

import sys

from patchbench.store import load_records

TIMES = {"time_s"}


def science(record: dict) -> dict:
    return {"spec_hash": record["spec_hash"], "spec": record.get("spec"),
            "status": record["status"], "summary": record["summary"],
            "history": [{k: v for k, v in row.items() if k not in TIMES}
                        for row in record["history"]]}


def main(before: str, after: str) -> int:
    a = {r["key"]: r for r in load_records([before])}
    b = {r["key"]: r for r in load_records([after])}
    bad = 0
    for key in sorted(a.keys() | b.keys()):
        if key not in a or key not in b:
            print(f"{key}: only in {before if key in a else after}")
            bad += 1
            continue
        same = science(a[key]) == science(b[key])
        bad += not same
        print(f"{key}: {'identical' if same else 'DIFFERENT'} (spec {a[key]['spec_hash']}, "
              f"code {a[key].get('source_hash')} -> {b[key].get('source_hash')})")
    print(f"{len(a.keys() | b.keys()) - bad} of {len(a.keys() | b.keys())} trials identical")
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
