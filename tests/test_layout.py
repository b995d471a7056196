"""The layout's rules hold: no import cycle, every module in a layer of the contract, and the
contract (pyproject.toml, checked by `lint-imports` in CI) refuses an upward import."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib

import grimp
import pytest

from .conftest import REPO


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    adjacency = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    state: dict[str, int] = {}
    found: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        path.append(module)
        for other in sorted(adjacency[module]):
            if state.get(other) == 1:
                found.append(path[path.index(other):] + [other])
            elif other not in state:
                visit(other, path)
        path.pop()
        state[module] = 2

    for module in sorted(adjacency):
        if module not in state:
            visit(module, [])
    return found


def test_the_import_graph_has_no_cycle():
    assert _cycles(grimp.build_graph("patchbench")) == []


def test_a_cycle_would_be_found():
    graph = grimp.build_graph("patchbench")
    graph.add_import(importer="patchbench.errors", imported="patchbench.spec.models")
    assert any("patchbench.errors" in c for c in _cycles(graph))


def _contract() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]


def test_every_module_is_in_a_layer():
    layers = next(c for c in _contract()["contracts"] if c["type"] == "layers")["layers"]
    named = {m.strip() for layer in layers for m in layer.split("|")}
    top = {".".join(m.split(".")[:2]) for m in grimp.build_graph("patchbench").modules}
    assert top - named - {"patchbench", "patchbench.builtin"} == set()


@pytest.mark.skipif(shutil.which("lint-imports") is None and not (
    REPO / ".venv" / "bin" / "lint-imports").exists(), reason="import-linter is not installed")
def test_the_contract_refuses_an_upward_import(tmp_path):
    """A copy of the package in which the spec stage imports the results stage."""
    shutil.copytree(REPO / "patchbench", tmp_path / "patchbench",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    lint = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command;"
            " sys.exit(lint_imports_command())", "--no-cache"]
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    kept = subprocess.run(lint, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    models = tmp_path / "patchbench" / "spec" / "models.py"
    models.write_text(models.read_text().replace(
        "from ..components import finite_float32",
        "from ..components import finite_float32\nfrom ..results import leaderboard  # noqa"))
    broken = subprocess.run(lint, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert broken.returncode == 1
    assert "patchbench.spec.models -> patchbench.results.leaderboard" in broken.stdout
