import pytest

from patchbench.plugins import build_registry
from patchbench.testing import check_patch_generator, check_schedule
from patchbench_example import Corner, Exponential


def test_corner_conforms():
    check_patch_generator(Corner)
    check_patch_generator(Corner, {"size": 8, "fraction": 1.0})


def test_exponential_conforms_and_decays():
    check_schedule(Exponential, {"gamma": 0.5})
    assert Exponential(Exponential.Params(gamma=0.5)).lr(20, 10, 100, 1.0) == pytest.approx(0.25)


def test_found_through_its_entry_point():
    registry = build_registry()
    assert registry.get("patches", "corner").distribution == "patchbench-example"
    assert registry.get("schedules", "exponential").plugin == "example"
