from __future__ import annotations

import pytest

from patchbench.errors import PatchbenchError
from patchbench.plugins import build_registry

STRIPE = """
from patchbench import hookimpl
from patchbench.components import PatchGenerator

class Stripe(PatchGenerator):
    '''A horizontal stripe.'''
    name = "stripe"
    def setup(self, data, device): pass
    def apply(self, x, y, idx, split, gen): return x, y
    def stamp(self, x, cls, gen): return x
    def patch_only(self, cls, image_shape, gen): return None

@hookimpl
def register_patches(register):
    register(Stripe)
"""


def test_builtins_are_registered_with_their_plugin_of_origin():
    registry = build_registry()
    assert registry.names("schedules") == ["constant", "cosine", "multistep", "step"]
    assert {"lwm", "two_pattern_q"} <= set(registry.names("patches"))
    entry = registry.get("architectures", "wrn")
    assert (entry.plugin, entry.distribution) == ("patchbench.architectures", "patchbench")
    assert set(registry.plugins) >= {f"patchbench.{m}" for m in (
        "datasets", "patches", "architectures", "schedules", "metrics", "regularizers",
        "theory")}
    assert registry.plugins["patchbench.metrics"].hooks == ("register_metrics",)


def test_third_party_plugin_records_distribution_and_version(fake_dist, run_cli):
    fake_dist("stripe-patches", "1.2.3", {"stripe_plugin": STRIPE})
    entry = build_registry().get("patches", "stripe")
    assert (entry.plugin, entry.distribution, entry.version) == \
        ("stripe_plugin", "stripe-patches", "1.2.3")
    code, out, _ = run_cli("list", "patches")
    assert code == 0 and "stripe" in out and "stripe-patches 1.2.3" in out
    code, out, _ = run_cli("plugins")
    assert code == 0 and "stripe_plugin" in out and "register_patches" in out


def test_broken_plugin_is_isolated(fake_dist, run_cli):
    fake_dist("broken-dist", "0.1", {"broken_plugin": "import not_a_module_anywhere\n",
                                     "stripe_plugin": STRIPE})
    warnings = []
    registry = build_registry(warn=warnings.append)
    assert "stripe" in registry.names("patches")
    assert len(warnings) == 1
    assert "'broken_plugin'" in warnings[0] and "ModuleNotFoundError" in warnings[0]
    code, out, err = run_cli("list", "schedules")
    assert code == 0 and "multistep" in out
    assert err.count("warning") == 1 and "broken_plugin" in err and "Traceback" not in err


def test_plugin_failing_in_its_hook_is_isolated(fake_dist):
    fake_dist("raising", "0.1", {"raising_plugin": """
        from patchbench import hookimpl

        @hookimpl
        def register_schedules(register):
            raise RuntimeError("boom")
    """, "wrong_plugin": """
        from patchbench import hookimpl

        @hookimpl
        def register_metrics(register):
            register(object)
    """})
    warnings = []
    registry = build_registry(warn=warnings.append)
    assert "constant" in registry.names("schedules")
    assert any("raising_plugin" in w and "RuntimeError: boom" in w for w in warnings)
    assert any("wrong_plugin" in w and "expects a Metric subclass" in w for w in warnings)


def test_disable_by_environment(fake_dist, monkeypatch):
    fake_dist("broken-dist", "0.1", {"broken_plugin": "raise ImportError('nope')\n"})
    monkeypatch.setenv("PATCHBENCH_DISABLE_PLUGINS", "broken_plugin, patchbench.schedules, example")
    warnings = []
    registry = build_registry(warn=warnings.append)
    assert warnings == []
    assert registry.names("schedules") == []
    assert "broken_plugin" not in registry.plugins
    assert "patchbench.schedules" not in registry.plugins
    assert "lwm" in registry.names("patches")
    # a built-in plugin is not named like a kind: disabling "schedules" (a third party's
    # plugin of that name) leaves the built-in schedules
    monkeypatch.setenv("PATCHBENCH_DISABLE_PLUGINS", "schedules, example")
    assert build_registry().names("schedules") == ["constant", "cosine", "multistep", "step"]


def test_duplicate_names_name_both_plugins(fake_dist, run_cli):
    fake_dist("dupe", "0.1", {"dupe_plugin": """
        from patchbench import hookimpl
        from patchbench.builtin.schedules import Constant

        class MyConstant(Constant):
            '''Another constant.'''

        @hookimpl
        def register_schedules(register):
            register(MyConstant)
    """})
    registry = build_registry()
    with pytest.raises(PatchbenchError) as info:
        registry.get("schedules", "constant")
    msg = str(info.value)
    assert "'constant' is registered twice" in msg
    assert "'patchbench.schedules' (patchbench)" in msg and "'dupe_plugin' (dupe)" in msg
    assert "cosine" in registry.names("schedules")  # the rest is usable
    code, _, err = run_cli("list")
    assert code == 2 and err.count("\n") == 1 and "registered twice" in err
    # `plugins`, the command that shows the clash, still lists every plugin
    code, out, err = run_cli("plugins")
    assert code == 2 and "dupe_plugin" in out and "patchbench.schedules" in out
    assert err.count("\n") == 1 and "'constant' is registered twice" in err


def test_unknown_names_suggest_and_list():
    registry = build_registry()
    with pytest.raises(PatchbenchError) as info:
        registry.get("schedules", "cosin")
    assert str(info.value) == ("unknown schedule 'cosin'; did you mean 'cosine'? "
                               "available: constant, cosine, multistep, step")
    with pytest.raises(PatchbenchError, match="did you mean 'resnet18'"):
        registry.get("architectures", "timm:resnet18x")
    with pytest.raises(PatchbenchError, match="unknown architecture 'wrn:16'"):
        registry.get("architectures", "wrn:16")


def test_the_readme_plugin_example_works(fake_dist):
    """The plugin guide's example (docs/plugins.md, "Writing a plugin"; the README links it)."""
    import re

    import torch

    from patchbench.testing import check_patch_generator

    from .conftest import REPO

    guide = (REPO / "docs" / "plugins.md").read_text()
    source = next(block for block in re.findall(r"```python\n(.*?)```", guide, re.S)
                  if "class Stripe" in block)
    fake_dist("my-patches", "0.1.0", {"my_patches": source})
    registry = build_registry()
    entry = registry.get("patches", "stripe")
    assert (entry.distribution, entry.version) == ("my-patches", "0.1.0")
    check_patch_generator(entry.cls, {"rows": 3})
    patch = registry.build("patches", "stripe", {"rows": 3})
    from patchbench.testing import small_dataset

    patch.setup(small_dataset(), torch.device("cpu"))
    out = patch.patch_only(torch.tensor([0, 9]), (3, 32, 32), torch.Generator())
    assert out[0, 0, 0, 0] == -2 and out[1, 2, 2, 31] == 2 and out[:, :, 3:].abs().sum() == 0


def test_every_hook_is_documented():
    import inspect

    from patchbench import hookspecs

    from .conftest import REPO

    guide = (REPO / "docs" / "plugins.md").read_text()
    hooks = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
             if name.startswith("register_")]
    assert len(hooks) == 10
    for name in hooks:
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        assert "Fires" in doc and doc.startswith("Register "), f"{name} lacks its docstring"
        assert f"`{name}`" in guide, f"{name} is not in docs/plugins.md"


def test_a_register_function_without_hookimpl_is_a_warning(fake_dist):
    fake_dist("forgot", "0.1", {"forgot_plugin": STRIPE.replace("@hookimpl\n", "")})
    warnings = []
    registry = build_registry(warn=warnings.append)
    assert "stripe" not in registry.names("patches")
    assert len(warnings) == 1, warnings
    assert "'forgot_plugin'" in warnings[0] and "register_patches" in warnings[0] \
        and "@hookimpl" in warnings[0]
