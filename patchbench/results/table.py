"""The one table engine: a :class:`Table` (a title, columns with their direction, rows of
text, a note and a caption, and its numbers as flat records) and the renderers that write
any list of tables to the terminal, Markdown, CSV, JSON or a standalone HTML page.

The leaderboard, the per-epoch tables and the phase diagrams are tables of it: each module
computes its numbers and lays them out as a Table; none of them renders.
"""

from __future__ import annotations

import csv
import html
import io
import json
from dataclasses import dataclass, field
from typing import Any, Callable, TextIO

STYLE = ("body{font-family:system-ui,sans-serif;margin:2em}"
         "table{border-collapse:collapse;margin-bottom:.5em}"
         "th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}"
         ".label{text-align:left}"
         "th{background:#f3f3f3}caption{caption-side:bottom;color:#555;font-size:.85em}")


@dataclass
class Column:
    header: str
    """As shown, with its arrow (``clean ↑``) where it is a metric."""
    numeric: bool = True
    """Right-aligned; a label column (architecture, arm) is left-aligned."""
    higher_is_better: bool | None = None
    """The metric's direction; None for a column that is not a metric."""


@dataclass
class Table:
    title: str
    columns: list[Column]
    rows: list[list[str]]
    """One text cell per column."""
    caption: str = ""
    note: str = ""
    """What to know before reading the table (other specs, mixed code); shown above it."""
    data: list[dict[str, Any]] = field(default_factory=list)
    """The numbers behind the rows as flat records (one per row or per cell, with their
    context: benchmark, spec hash, arm ...): what CSV and JSON carry."""


def to_rich(table: Table) -> Any:
    from rich.markup import escape
    from rich.table import Table as RichTable

    out = RichTable(title=escape(table.title), caption=escape(table.caption))
    for col in table.columns:
        out.add_column(escape(col.header), justify="right" if col.numeric else "left")
    for cells in table.rows:
        out.add_row(*map(escape, cells))  # swept arms' names hold brackets, not markup
    return out


def print_tables(tables: list[Table], file: TextIO | None = None) -> None:
    """Tables on stdout (or ``file``), wide enough not to wrap the columns; notes first."""
    from rich.console import Console
    from rich.markup import escape

    out = Console(file=file, width=max(Console().width, 150))
    for table in tables:
        if table.note:
            out.print(f"[yellow]note: {escape(table.note)}[/]")
        out.print(to_rich(table))


def to_markdown(tables: list[Table], title: str = "") -> str:
    out: list[str] = []
    for t in tables:
        out += [f"### {t.title}", ""]
        if t.note:
            out += [f"> {t.note}", ""]
        out += ["| " + " | ".join(c.header for c in t.columns) + " |",
                "|" + "---|" * len(t.columns)]
        out += ["| " + " | ".join(cells) + " |" for cells in t.rows]
        out += ["", t.caption, ""]
    return "\n".join(out)


def to_csv(tables: list[Table], title: str = "") -> str:
    """Every table's records, one CSV: the columns are the union of their keys."""
    rows = [r for t in tables for r in t.data]
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    for r in rows:
        writer.writerow({k: "" if v is None else (json.dumps(v) if isinstance(v, (list, dict))
                                                  else v) for k, v in r.items()})
    return buf.getvalue()


def to_json(tables: list[Table], title: str = "") -> str:
    """One object per table: its title, note, caption, columns and records."""
    return json.dumps([{
        "title": t.title, "note": t.note or None, "caption": t.caption,
        "columns": [{"header": c.header, "higher_is_better": c.higher_is_better}
                    for c in t.columns],
        "rows": t.data,
    } for t in tables], indent=1)


def to_html(tables: list[Table], title: str = "patchbench") -> str:
    """A standalone page: a heading per table, its note, the table with its caption."""
    e = html.escape
    body = [f"<h1>{e(title)}</h1>"]
    for t in tables:
        body.append(f"<h2>{e(t.title)}</h2>")
        if t.note:
            body.append(f"<p><em>{e(t.note)}</em></p>")
        kinds = ["" if c.numeric else " class='label'" for c in t.columns]
        body.append(f"<table><caption>{e(t.caption)}</caption><thead><tr>"
                    + "".join(f"<th{k}>{e(c.header)}</th>" for c, k in zip(t.columns, kinds))
                    + "</tr></thead><tbody>")
        body += ["<tr>" + "".join(f"<td{k}>{e(c)}</td>" for c, k in zip(cells, kinds)) + "</tr>"
                 for cells in t.rows]
        body.append("</tbody></table>")
    return "\n".join(["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>",
                      f"<title>{e(title)}</title>", f"<style>{STYLE}</style></head><body>",
                      *body, "</body></html>"])


RENDERERS: dict[str, Callable[[list[Table], str], str]] = {
    "md": to_markdown, "csv": to_csv, "json": to_json, "html": to_html}
"""``--format`` → renderer: (tables, page title) → text."""
