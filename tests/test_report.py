"""`patchbench report` without a browser: bad input, notes, heatmaps, previews, provenance.

The page in a real browser is tested in test_report_browser.py.
"""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from patchbench.results.leaderboard import build_boards
from patchbench.plugins import get_registry
from patchbench.results.report.previews import previews
from patchbench.spec import load_spec, resolved_dict
from patchbench.store import Store

from .conftest import REPO, tiny_spec
from .test_store import HAND_MADE, record


def write_store(path: Path, records: list[dict]) -> Path:
    store = Store(path)
    store.put(*records)
    store.close()
    return path


def swept(key: str, lr: float, wd: float, seed: int, clean: float, **kw) -> dict:
    r = record(f"{key}/lr{lr}/wd{wd}/seed{seed}", seed=seed, clean=clean, **kw)
    if r["patch"] == "none":  # a control is not measured on patches
        r["summary"]["final"]["patch_only_acc"] = None
        for row in r["history"]:
            row["patch_only_acc"] = None
    return {**r, "sweep": {"arms.a.optimizer.lr": lr, "arms.a.optimizer.weight_decay": wd}}


# A 2 x 2 sweep of one arm, two seeds per point, with a control at every point.
SWEEP_RECORDS = [
    swept(p, lr, wd, seed, clean=0.1 * i + 0.01 * seed + (0.05 if p == "c" else 0.0),
          patch="lwm" if p == "p" else "none")
    for i, (lr, wd) in enumerate([(0.1, 0.0), (0.1, 5e-4), (0.01, 0.0), (0.01, 5e-4)])
    for seed in (0, 1) for p in ("p", "c")]


class Elements(HTMLParser):
    """Every start tag's attributes, and the page's text, for checks without a browser."""

    def __init__(self, page: str):
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data):
        self.text.append(data)

    def find(self, tag: str, **attrs: str) -> list[dict[str, str]]:
        return [a for t, a in self.tags
                if t == tag and all(a.get(k.replace("_", "-")) == v for k, v in attrs.items())]


def report(run_cli, tmp_path: Path, records: list[dict], *extra: str) -> tuple[str, Elements]:
    db = write_store(tmp_path / "r.sqlite", records)
    out = tmp_path / "page" / "report.html"
    code, stdout, stderr = run_cli("report", db, "--out", out, *extra)
    assert code == 0, stderr
    assert f"wrote {out} ({len(records)} trial records)" in stdout
    page = out.read_text()
    return page, Elements(page)


def test_bad_destinations_and_results_are_one_line_errors(run_cli, tmp_path):
    db = write_store(tmp_path / "r.sqlite", HAND_MADE)
    cases = [((db, "--out", tmp_path), f"--out: {tmp_path} is a directory; allowed: a file to write"),
             ((db, "--out", tmp_path / "r.png"), f"--out: {tmp_path / 'r.png'} must be an .html"),
             ((tmp_path / "missing", "--out", tmp_path / "r.html"), "no such file or directory"),
             ((write_store(tmp_path / "empty.sqlite", []), "--out", tmp_path / "r.html"),
              "report: no trial records in the given results")]
    for args, message in cases:
        code, _, err = run_cli("report", *args)
        assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
        assert err.startswith("patchbench: error: ") and message in err, err
    assert not (tmp_path / "r.html").exists()


def test_page_carries_the_leaderboard_its_notes_and_provenance(run_cli, tmp_path):
    other_code = [{**r, "source_hash": "aaaa"} for r in HAND_MADE[:2]] + [
        {**r, "source_hash": "bbbb", "executor": "ray", "host": "node7"} for r in HAND_MADE[2:]]
    spec = resolved_dict(load_spec(_spec_file(tmp_path, tiny_spec())))
    records = [{**r, "spec": spec} for r in other_code] + [record("x", spec_hash="h2")]
    page, dom = report(run_cli, tmp_path, records, "--ci")
    assert page.startswith("<!DOCTYPE html>") and "<body class=\"show-ci\">" in page
    [board_h1, board_h2] = build_boards(records)
    for board in (board_h1, board_h2):
        assert len(dom.find("section", id=f"bench-v1-{board.spec_hash}")) == 1
    # the leaderboard's notes: pooled code versions and another spec of the same version
    assert "Trials trained by 2 versions of the code are pooled here" in page
    assert "(source hash: trials; bbbb: 4, aaaa: 2)" in page  # completed trials only
    assert "also has results from a different spec (h2)" in page
    # a cell: the exact mean to sort by, both spreads to show
    [cell] = [a for a in dom.find("td", data_metric="clean_acc") if a["data-n"] == "3"]
    a = board_h1.rows[0].cells["clean_acc"]
    assert float(cell["data-value"]) == a.mean and float(cell["data-ci95"]) == a.ci95
    assert "0.700 ± 0.100" in page and "0.700 ± 0.248" in page
    # provenance of every trial, whatever it recorded, folded away
    assert len(dom.find("details", **{"class": "trial"})) == len(records)
    assert not any("open" in a for t, a in dom.tags if t == "details")
    text = "".join(dom.text)
    assert "executor" in text and "node7" in text and "name: tiny" in text
    assert "http://" not in page and "https://" not in page


def triggered(key: str, arm: str, patch: str, seed: int, asr: float) -> dict:
    r = record(key, arm=arm, seed=seed, patch=patch)
    for i, row in enumerate(r["history"]):
        row["attack_success_rate"] = asr * (i + 1) / 2
    r["summary"]["final"]["attack_success_rate"] = asr
    return {**r, "learned_metric": "attack_success_rate",
            "metrics": {"attack_success_rate": {"short": "ASR", "higher_is_better": False}}}


def test_several_triggers_get_a_chart_each_drawing_the_attack_success_rate(run_cli, tmp_path):
    records = [triggered(f"{p}/{arm}/{s}", arm, p, s, 0.2 + 0.1 * s + (0.5 if p == "sig" else 0))
               for p in ("badnets", "sig") for arm in ("large", "small") for s in (0, 1)]
    page, dom = report(run_cli, tmp_path, records)
    assert [a["data-title"] for a in dom.find("figure")] == ["net / badnets", "net / sig"]
    charts = page.split('<figure class="curves"')[1:]
    for chart, patch in zip(charts, ("badnets", "sig")):
        series = Elements(chart).find("g", **{"class": "series"})
        assert sorted((a["data-arm"], a["data-patch"], a["data-metric"]) for a in series) == [
            (arm, patch, m) for arm in ("large", "small")
            for m in ("attack_success_rate", "clean_acc")]
        means = [float(a["data-value"]) for a in Elements(chart).find("circle")
                 if a["data-epoch"] == "2"]
        asr = 0.25 + (0.5 if patch == "sig" else 0)  # mean of seeds 0 and 1 at epoch 2
        assert means.count(pytest.approx(asr)) == 2  # one per arm
    assert "large: ASR" in page and "small: clean" in page  # the legend's labels


def test_heatmaps_show_each_swept_point_as_the_leaderboard_does(run_cli, tmp_path):
    page, dom = report(run_cli, tmp_path, SWEEP_RECORDS)
    assert "Phase diagrams" in page
    cells = [a for t, a in dom.tags if t == "g" and a.get("class") == "hcell"]
    maps = {(a["data-row"], a["data-metric"]) for a in cells}
    # clean and patch-only of the patched row, clean of the control, the patch cost; the
    # control has no patch-only accuracy and no patch cost: no map for those
    assert maps == {("net / a / lwm", "clean_acc"), ("net / a / lwm", "patch_only_acc"),
                    ("net / a / none", "clean_acc"), ("net / a / lwm", "patch_cost")}
    assert len(cells) == 4 * 4 and len(dom.find("figure", **{"class": "heatmap"})) == 4
    for a in cells:
        point = (float(a["data-x"]), float(a["data-y"]))
        recs = [r for r in SWEEP_RECORDS if (r["sweep"]["arms.a.optimizer.lr"],
                r["sweep"]["arms.a.optimizer.weight_decay"]) == point]
        assert len(recs) == 4
        [board] = build_boards(recs)
        row = next(r for r in board.rows if a["data-row"].endswith(f"/ {r.patch}"))
        assert float(a["data-value"]) == pytest.approx(row.cells[a["data-metric"]].mean,
                                                       abs=1e-12)
    cost = [float(a["data-value"]) for a in cells if a["data-metric"] == "patch_cost"]
    assert cost == pytest.approx([0.05] * 4)
    lr_ticks = [a for a in cells if a["data-metric"] == "patch_cost"]
    assert [a["data-x"] for a in lr_ticks] == ["0.01", "0.1", "0.01", "0.1"]  # numeric order
    assert [a["data-y"] for a in lr_ticks] == ["0.0", "0.0", "0.0005", "0.0005"]


def test_no_heatmap_without_swept_values_and_a_note_beyond_two(run_cli, tmp_path):
    page, _ = report(run_cli, tmp_path, HAND_MADE)
    assert "Phase diagrams" not in page and "hcell" not in page
    three = [{**r, "sweep": {**r["sweep"], "seeds_per": 1}} for r in SWEEP_RECORDS]
    page, _ = report(run_cli, tmp_path / "3", three)
    assert "heatmaps are drawn for sweeps over one or two fields only" in page
    assert "hcell" not in page


def _spec_file(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_preview_is_embedded_or_says_why_not(tmp_path):
    registry = get_registry()
    spec = resolved_dict(load_spec(_spec_file(tmp_path, tiny_spec()), registry=registry))
    [shown], note = previews(spec, registry)
    assert note == "" and shown.patch == "lwm"
    assert shown.data_uri.startswith("data:image/png;base64,iVBORw0KGgo")  # a PNG
    missing = {**spec, "dataset": {"name": "cifar10",
                                   "params": {"data_dir": str(tmp_path / "none")}}}
    assert previews(missing, registry)[0] == []
    assert previews(missing, registry)[1].startswith(
        f"not drawn here: CIFAR-10 not found: {tmp_path / 'none' / 'cifar10.npz'} does not exist")
    assert not (tmp_path / "none").exists()  # nothing downloaded while making a page
    vectors = yaml.safe_load((REPO / "benchmarks" / "theory.yaml").read_text())
    assert previews(vectors, registry) == (
        [], "two_pattern gives feature vectors of shape (2050,), not images")
    unknown = {**spec, "dataset": {"name": "imagenet", "params": {}}}
    assert "not drawn here: unknown dataset 'imagenet'" in previews(unknown, registry)[1]
    assert previews({**spec, "patch": None}, registry) == ([], "the spec has no patch generator")
