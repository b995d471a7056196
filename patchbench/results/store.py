"""The result store: one SQLite database per output directory, safe for several writers.

Each trial is one row keyed by (spec hash, trial key) holding the full record as JSON;
WAL mode lets readers and writers from several processes work at once, and each write is
one transaction. Records move between stores as JSON (``patchbench export`` / ``import``).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Iterable

from .. import errors
from ..files import write_atomically
from ..errors import NoSpace, PatchbenchError
from .record_check import Warn, usable

STORE_NAME = "results.sqlite"
EXPORT_FORMAT = "patchbench-results/1"

SCHEMA = """
CREATE TABLE IF NOT EXISTS trials (
    spec_hash TEXT NOT NULL,
    key TEXT NOT NULL,
    benchmark TEXT NOT NULL,
    version TEXT NOT NULL,
    status TEXT NOT NULL,
    finished_at TEXT,
    record TEXT NOT NULL,
    PRIMARY KEY (spec_hash, key)
)
"""


class Store:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = sqlite3.connect(self.path, timeout=60.0)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA busy_timeout=60000")
            with self.conn:
                self.conn.execute(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise PatchbenchError(f"{self.path}: not a patchbench result store ({exc})") from None

    @classmethod
    def in_dir(cls, out_dir: Path) -> "Store":
        out_dir = Path(out_dir)
        if out_dir.exists() and not out_dir.is_dir():
            raise PatchbenchError(f"{out_dir}: output.dir / --out: this is a file; allowed: a "
                                  "directory (new or holding results)")
        return cls(out_dir / STORE_NAME)

    def put(self, *records: dict[str, Any]) -> None:
        """Insert or replace trial records, all in one transaction (a write that fails, for
        lack of space or a kill, leaves every stored record as it was)."""
        try:
            with self.conn:
                self.conn.executemany(
                    "INSERT OR REPLACE INTO trials VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(r["spec_hash"], r["key"], r["benchmark"], r["benchmark_version"],
                      r["status"], r.get("finished_at"), json.dumps(r)) for r in records])
        except sqlite3.OperationalError as exc:
            if "full" in str(exc):  # SQLITE_FULL: "database or disk is full"
                raise NoSpace(f"{self.path}: cannot write: no space left on the device "
                              f"({exc}); free some and run again (it resumes)") from None
            raise

    def records(self, spec_hash: str | None = None, warn: Warn | None = None
                ) -> list[dict[str, Any]]:
        """The usable records (``record_check``); a bad one is reported and skipped."""
        query = "SELECT key, record FROM trials"
        args: tuple = ()
        if spec_hash is not None:
            query, args = query + " WHERE spec_hash = ?", (spec_hash,)
        rows = []
        for key, text in self.conn.execute(query + " ORDER BY rowid", args):
            try:
                rows.append(json.loads(text))
            except json.JSONDecodeError as exc:
                (warn or errors.warn)(f"{self.path}: skipping {key}: not valid JSON ({exc})")
        return usable(rows, str(self.path), warn)

    def close(self) -> None:
        self.conn.close()


def load_records(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Records from output directories, databases or exported JSON files, deduplicated."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            db = path / STORE_NAME
            if not db.exists():
                raise PatchbenchError(f"{path}: no {STORE_NAME} in this directory")
            records = _read_db(db)
        elif not path.exists():
            raise PatchbenchError(f"{path}: no such file or directory")
        elif path.suffix == ".json":
            records = read_export(path)
        else:
            records = _read_db(path)
        for record in records:
            found[(record["spec_hash"], record["key"])] = record
    return list(found.values())


def _read_db(path: Path) -> list[dict[str, Any]]:
    store = Store(path)
    try:
        return store.records()
    except sqlite3.DatabaseError as exc:
        raise PatchbenchError(f"{path}: not a patchbench result store ({exc})") from None
    finally:
        store.close()


def write_export(records: list[dict[str, Any]], path: Path) -> None:
    """The records as one JSON file, written atomically: a write that fails (no space, a
    kill) leaves the file that was there, and no partial one."""
    text = json.dumps({"format": EXPORT_FORMAT, "records": records}, indent=1)
    write_atomically(path, text.encode())


def read_export(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PatchbenchError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != EXPORT_FORMAT:
        raise PatchbenchError(f"{path}: format: expected {EXPORT_FORMAT!r} "
                              "(a file written by `patchbench export`)")
    records = data.get("records")
    if not isinstance(records, list):
        raise PatchbenchError(f"{path}: records: expected a list of trial records")
    return usable(records, str(path))
