"""The report page in a real browser: it loads cleanly, sorts, and shows the store's numbers.

The page is made from a real two-seed run on synthetic images, and every number is checked
against the records in the store, computed here without the leaderboard's code. Needs
playwright (the test extra) and Debian's Chromium (`apt-get install chromium`); playwright
cannot download its own browser here, so it is pointed at that binary.
"""

from __future__ import annotations

import os
import shutil
import statistics
from pathlib import Path

import pytest

from patchbench import cli
from patchbench.store import load_records

from .conftest import SHIPPED_PLUGINS, tiny_spec
from .test_report import SWEEP_RECORDS, write_store

METRICS = ["clean_acc", "mixed_acc", "patch_only_acc", "patch_follow_rate",
           "conflict_clean_acc"]


def chromium() -> str | None:
    return (os.environ.get("PATCHBENCH_CHROMIUM") or shutil.which("chromium")
            or shutil.which("chromium-browser"))


def no_browser(why: str) -> None:
    reason = f"no browser: {why}; the report page was not tested in a browser"
    if os.environ.get("CI"):  # .ci/run installs both: a skip there would hide a broken setup
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright import sync_api
    except ImportError:
        no_browser("playwright is not installed (pip install -e '.[test]')")
    binary = chromium()
    if binary is None:
        no_browser("Chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=binary)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def made(tmp_path_factory, browser):
    """A real run (2 seeds, a control, an anneal) and its report, made once for the module."""
    import yaml

    import patchbench.plugins as plugins

    tmp = tmp_path_factory.mktemp("report")
    spec = tmp / "spec.yaml"
    # One thread: a test machine shared with other jobs slows two-thread runs many times over.
    training = {**tiny_spec()["training"], "threads": 1}
    spec.write_text(yaml.safe_dump(tiny_spec(seeds=[0, 1], training=training)))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plugins, "_cached", None)
        mp.setenv(plugins.DISABLE_ENV, SHIPPED_PLUGINS)
        assert cli.main(["run", str(spec), "--out", str(tmp / "out")]) == 0
        assert cli.main(["report", str(tmp / "out"), "--out", str(tmp / "report.html")]) == 0
        write_store(tmp / "sweep.sqlite", SWEEP_RECORDS)
        assert cli.main(["report", str(tmp / "sweep.sqlite"),
                         "--out", str(tmp / "sweep.html")]) == 0
    return {"records": load_records([tmp / "out"]), "page": tmp / "report.html",
            "sweep": tmp / "sweep.html"}


class Tab:
    """A page opened in the browser, with everything it logged and fetched."""

    def __init__(self, browser, path: Path):
        self.page = browser.new_page(viewport={"width": 1200, "height": 900})
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(path.as_uri())
        self.page.wait_for_load_state("load")

    def rows(self) -> list[list[dict]]:
        """Each row of the first leaderboard: its cells' text, value and data attributes."""
        return self.page.eval_on_selector("table.leaderboard", """t =>
            Array.from(t.tBodies[0].rows, r => Array.from(r.cells,
                c => ({text: c.innerText.trim(), ...c.dataset})))""")

    def heads(self) -> list[str]:
        return self.page.eval_on_selector_all(
            "table.leaderboard th", "hs => hs.map(h => h.textContent.trim())")


@pytest.fixture
def tab(browser, made):
    opened = Tab(browser, made["page"])
    yield opened
    opened.page.close()


def by_row(records: list[dict]) -> dict[tuple[str, str], list[dict]]:
    rows: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        if r["status"] == "completed":
            rows.setdefault((r["arm"], r["patch"]), []).append(r)
    return rows


@pytest.mark.parametrize("which", ["page", "sweep"])
def test_page_loads_with_no_console_errors_and_no_network(browser, made, which):
    opened = Tab(browser, made[which])
    assert opened.errors == []
    # Self-contained: the file itself is the only thing fetched (images are data: URIs).
    assert [u for u in opened.requests if not u.startswith("data:")] == [made[which].as_uri()]
    if which == "page":
        assert opened.page.eval_on_selector(".preview img", "i => i.naturalWidth") > 0
    else:
        assert opened.page.locator("figure.heatmap").count() > 0
    opened.page.close()


def test_clicking_a_header_sorts_the_rows(tab, made):
    heads = tab.heads()
    clean, patch_only = heads.index("clean ↑"), heads.index("patch-only ↑")

    def order(col: int) -> list[tuple[str, str, str]]:
        return [(r[1]["text"], r[2]["text"], r[col]["value"]) for r in tab.rows()]

    before = order(clean)
    header = tab.page.locator("table.leaderboard th").nth(clean)
    header.click()  # best first: clean accuracy is higher-is-better
    assert header.get_attribute("aria-sort") == "descending"
    assert order(clean) == sorted(before, key=lambda r: float(r[2]), reverse=True)
    header.click()
    assert header.get_attribute("aria-sort") == "ascending"
    assert order(clean) == sorted(before, key=lambda r: float(r[2]))
    # the control row has no patch-only accuracy: it stays last both ways
    other = tab.page.locator("table.leaderboard th").nth(patch_only)
    for direction in ("descending", "ascending"):
        other.click()
        assert other.get_attribute("aria-sort") == direction
        assert header.get_attribute("aria-sort") is None
        rows = order(patch_only)
        assert rows[-1][1:] == ("none", "")
        values = [float(v) for _, _, v in rows[:-1]]
        assert values == sorted(values, reverse=direction == "descending")
    tab.page.locator("table.leaderboard th").nth(1).click()  # text columns sort by name
    assert [r[0] for r in order(clean)] == sorted(r[0] for r in before)
    assert tab.errors == []


def test_table_cells_equal_the_store(tab, made):
    rows = by_row(made["records"])
    heads = tab.heads()
    shown = tab.rows()
    assert sorted((r[1]["text"], r[2]["text"]) for r in shown) == sorted(rows)
    for cells in shown:
        recs = rows[(cells[1]["text"], cells[2]["text"])]
        assert cells[3]["text"] == str(len(recs)) == "2"
        for metric in METRICS:
            cell = next(c for c in cells if c.get("metric") == metric)
            values = [r["summary"]["final"][metric] for r in recs]
            if values[0] is None:  # the control is not patched
                assert cell["value"] == "" and cell["text"] == "-"
                continue
            mean, std = statistics.fmean(values), statistics.stdev(values)
            assert float(cell["value"]) == pytest.approx(mean, abs=1e-12)
            assert float(cell["std"]) == pytest.approx(std, abs=1e-12)
            assert cell["text"] == f"{mean:.3f} ± {std:.3f}"
    # patch cost: the control's clean accuracy minus the patched one's, paired by seed
    large = next(c for c in shown if c[1]["text"] == "large_lr" and c[2]["text"] == "lwm")
    final = {(r["patch"], r["seed"]): r["summary"]["final"]["clean_acc"]
             for r in made["records"] if r["arm"] == "large_lr"}
    cost = statistics.fmean(final[("none", s)] - final[("lwm", s)] for s in (0, 1))
    cell = large[heads.index("patch cost ↓")]
    assert float(cell["value"]) == pytest.approx(cost, abs=1e-12)
    # the switch to 95% t-intervals changes what is shown, not the numbers
    clean = large[heads.index("clean ↑")]
    tab.page.locator("#ci-switch").check()
    half = 12.706 * float(clean["std"]) / 2 ** 0.5
    shown_ci = next(r for r in tab.rows() if (r[1]["text"], r[2]["text"]) == ("large_lr", "lwm"))
    assert shown_ci[heads.index("clean ↑")]["text"] == f"{float(clean['value']):.3f} ± {half:.3f}"


def test_curves_equal_the_store(tab, made):
    rows = by_row(made["records"])
    points = tab.page.eval_on_selector_all("g.series circle", """cs => cs.map(c => ({
        arm: c.parentNode.dataset.arm, patch: c.parentNode.dataset.patch,
        metric: c.parentNode.dataset.metric, epoch: +c.dataset.epoch,
        value: +c.dataset.value, min: +c.dataset.min, max: +c.dataset.max,
        cy: +c.getAttribute('cy')}))""")
    expected = {}
    for (arm, patch), recs in rows.items():
        for metric in ("clean_acc", "patch_only_acc"):
            for epoch in (1, 2):
                values = [h[metric] for r in recs for h in r["history"] if h["epoch"] == epoch]
                if None not in values:
                    expected[(arm, patch, metric, epoch)] = values
    assert len(points) == len(expected) == 10  # 3 rows x 2 epochs clean, 2 x 2 patch-only
    # where the axis puts 0 and 1, read from the page's own tick labels
    ticks = tab.page.eval_on_selector_all(
        "figure.curves g.grid text.tick[text-anchor=end]",
        "ts => Object.fromEntries(ts.map(t => [t.textContent, +t.getAttribute('y') - 4]))")
    for p in points:
        values = expected[(p["arm"], p["patch"], p["metric"], p["epoch"])]
        assert p["value"] == pytest.approx(statistics.fmean(values), abs=1e-12)
        assert (p["min"], p["max"]) == pytest.approx((min(values), max(values)), abs=1e-12)
        y = ticks["0"] + p["value"] * (ticks["1"] - ticks["0"])
        assert p["cy"] == pytest.approx(y, abs=0.02)
    marks = tab.page.eval_on_selector_all("line.anneal title", "ts => ts.map(t => t.textContent)")
    assert "large_lr: anneal at epoch 2" in marks


def test_provenance_is_folded_until_clicked(tab, made):
    record = next(r for r in made["records"] if r["key"].endswith("small_lr/lwm/seed1"))
    trial = tab.page.locator(f"details.trial[data-key='{record['key']}']")
    assert not trial.locator("dd").first.is_visible()
    tab.page.locator("details.provenance > summary").first.click()
    trial.locator("summary").click()
    facts = trial.locator("dl").inner_text()
    assert f"source_hash\n{record['source_hash']}" in facts
    assert f"torch {record['versions']['torch']}" in facts


def test_a_screenshot_is_written(tab, tmp_path):
    out = tmp_path / "report.png"
    tab.page.screenshot(path=str(out), full_page=True)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
