"""The plugin API reference (docs/plugins.md) names every public member of every interface,
as test_plugins checks the hooks."""

from __future__ import annotations

import pytest

from patchbench import components, data, evaluation, testing

from .conftest import REPO

INTERFACES = [components.Component, components.Dataset, components.PatchGenerator,
              components.FixedSubsetPatch, components.Architecture, components.Schedule,
              components.Regularizer, components.Metric, components.Optimizer,
              components.Augmentation, data.DataBundle,
              evaluation.EvalContext]


@pytest.mark.parametrize("cls", INTERFACES, ids=lambda c: c.__name__)
def test_every_interface_member_is_documented(cls):
    doc = (REPO / "docs" / "plugins.md").read_text()
    assert f"`{cls.__name__}`" in doc
    members = [n for n in vars(cls) if not n.startswith("_")]
    assert members
    for name in members:
        assert f"{cls.__name__}.{name}" in doc, f"{cls.__name__}.{name} is not in docs/plugins.md"


def test_errors_helpers_and_the_kit_are_documented():
    doc = (REPO / "docs" / "plugins.md").read_text()
    for name in ("PatchbenchError", "SpecError", "PluginError", "image_dims", "learned_metric"):
        assert name in doc, name
    for name in (n for n in dir(testing) if n.startswith("check_")):
        assert f"`{name}`" in doc, name
