"""`patchbench report`: results as one self-contained web page, to share.

Per benchmark version and spec hash, the page shows the leaderboard (sortable in the browser,
std or 95% t-intervals), learning curves per arm as inline SVG, heatmaps where trials carry
swept values, the preview grid of patched inputs, the notes the leaderboard makes, and every
trial's provenance folded away. Everything is inline (styles, script, images): the file opens
without a network. The page is rendered from Jinja2 templates in ``templates/``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import jinja2

from ... import __version__
from ...errors import PatchbenchError
from ...plugins import Registry
from .page import sections

SUFFIXES = (".html", ".htm")


def check_out(out: Path) -> None:
    """Refuse, before any work, a destination that cannot become the page."""
    if out.is_dir():
        raise PatchbenchError(f"--out: {out} is a directory; give the HTML file to write")
    if out.suffix.lower() not in SUFFIXES:
        raise PatchbenchError(f"--out: {out} must be an .html file")


def render_report(records: list[dict], registry: Registry, sources: list[str] = (),
                  ci: bool = False, with_preview: bool = True) -> str:
    if not records:
        raise PatchbenchError("report: no trial records in the given results")
    env = jinja2.Environment(loader=jinja2.PackageLoader("patchbench.results.report", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    return env.get_template("report.html.j2").render(
        sections=sections(records, registry, with_preview), ci=ci, sources=list(sources),
        n_records=len(records), version=__version__,
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))


def write_report(records: list[dict], out: Path, registry: Registry, sources: list[str] = (),
                 ci: bool = False) -> None:
    check_out(out)
    page = render_report(records, registry, sources, ci)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
