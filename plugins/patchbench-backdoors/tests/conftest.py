import pytest


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch):
    """patchbench caches its registry per process; each test here builds its own."""
    import patchbench.plugins

    monkeypatch.setattr(patchbench.plugins, "_cached", None)
