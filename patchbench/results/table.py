"""What the grid tables of `leaderboard --pivot` and `--epochs` share: their Markdown form and
the standalone HTML page of `--format html`."""

from __future__ import annotations

import html

STYLE = ("body{font-family:system-ui,sans-serif;margin:2em}"
         "table{border-collapse:collapse;margin-bottom:.5em}"
         "th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}"
         "th{background:#f3f3f3}caption{caption-side:bottom;color:#555;font-size:.85em}")


def page(title: str, body: list[str]) -> str:
    """A page with the tables' style; `body` is HTML, joined by newlines."""
    return "\n".join(["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>",
                      f"<title>{html.escape(title)}</title>",
                      f"<style>{STYLE}</style></head><body>", *body, "</body></html>"])


def markdown(title: str, head: list[str], body: list[list[str]], caption: str) -> list[str]:
    """One table under a heading, its caption below it."""
    return ([f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            + ["| " + " | ".join(cells) + " |" for cells in body] + ["", caption, ""])
