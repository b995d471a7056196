"""Faults at the edges: bad destinations, disk full, corrupt checkpoints, signals. Each one
is one line on stderr (exit 2), no traceback, and nothing already computed is lost."""

from __future__ import annotations

import json

import pytest

from .conftest import tiny_spec


def one_line_error(code: int, err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.startswith("patchbench: error:")]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert all(n in lines[0] for n in needles), lines[0]


@pytest.fixture
def results(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"format": "patchbench-results/1", "records": []}))
    return path


@pytest.mark.parametrize("command", ["export", "report", "plot", "leaderboard", "preview"])
def test_a_file_option_refuses_a_directory_and_a_path_under_a_file(
        command, results, write_spec, run_cli, tmp_path):
    source = write_spec(tiny_spec()) if command == "preview" else results
    suffix = {"export": ".json", "report": ".html", "plot": ".png", "preview": ".png",
              "leaderboard": ".md"}[command]
    folder = tmp_path / f"folder{suffix}"
    folder.mkdir()
    code, _, err = run_cli(command, source, "--out", folder)
    one_line_error(code, err, "--out", str(folder), "is a directory")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, _, err = run_cli(command, source, "--out", blocker / f"x{suffix}")
    one_line_error(code, err, "--out", str(blocker), "is a file")


def test_run_out_refuses_a_file_and_a_path_under_a_file(write_spec, run_cli, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for out in (blocker, blocker / "out"):
        code, _, err = run_cli("run", write_spec(tiny_spec()), "--out", out)
        one_line_error(code, err, "--out", str(blocker), "is a file")
    spec = tiny_spec(output={"dir": str(blocker / "runs")})
    code, _, err = run_cli("run", write_spec(spec))
    one_line_error(code, err, "output.dir", str(blocker), "is a file")
    assert blocker.read_text() == "x"
