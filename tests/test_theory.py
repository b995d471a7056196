"""The theory task's data: fractions, separability, determinism, and a short CLI run."""

from __future__ import annotations

import pytest
import torch

from patchbench.builtin.theory import TwoPattern, TwoPatternQ
from patchbench.plugins import get_registry
from patchbench.spec import load_spec

from .conftest import REPO
from .test_cli import stored

CPU = torch.device("cpu")


def make(n_train: int = 4000, **q):
    data = TwoPattern(TwoPattern.Params(n_train=n_train, n_test=500, d_p=200, d_q=50)).load()
    patch = TwoPatternQ(TwoPatternQ.Params(dims=50, **q))
    patch.setup(data, CPU)
    return data, patch


def fit_linear(x: torch.Tensor, y: torch.Tensor, steps: int = 500) -> float:
    """Train accuracy of a logistic regression fitted by full-batch Adam."""
    torch.manual_seed(0)
    model = torch.nn.Linear(x.shape[1], 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    target = y.float()
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(model(x)[:, 0], target).backward()
        opt.step()
    return float(((model(x)[:, 0] > 0).long() == y).float().mean())


def test_fractions_of_p_only_both_and_q_only():
    data, patch = make()
    idx = torch.arange(len(data.y_train))
    x, y = patch.apply(data.x_train, data.y_train, idx, "train", torch.Generator())
    has_p = x[:, :200].abs().sum(1) > 0
    has_q = x[:, 200:].abs().sum(1) > 0
    frac = lambda m: float(m.float().mean())
    assert abs(frac(has_p & ~has_q) - 0.2) < 0.03
    assert abs(frac(has_p & has_q) - 0.6) < 0.03
    assert abs(frac(~has_p & has_q) - 0.2) < 0.03
    assert torch.equal(y, data.y_train)


def test_q_is_not_linearly_separable_and_p_is():
    data, patch = make()
    labels = data.y_train[:2000]
    q_only = patch.patch_only(labels, data.image_shape, torch.Generator().manual_seed(1))
    assert fit_linear(q_only[:, 200:], labels) < 0.85
    assert fit_linear(data.x_train[:300, :200], data.y_train[:300]) == 1.0


def test_q_geometry():
    _, patch = make()
    assert abs(float(patch.z @ patch.zeta)) < 1e-5
    assert float(patch.z.norm()) == pytest.approx(10.0, rel=1e-5)
    assert float(patch.zeta.norm()) == pytest.approx(1.0, rel=1e-5)


def test_deterministic_for_a_seed():
    a = TwoPattern(TwoPattern.Params(seed=3, d_p=100, n_train=50)).load()
    b = TwoPattern(TwoPattern.Params(seed=3, d_p=100, n_train=50)).load()
    c = TwoPattern(TwoPattern.Params(seed=4, d_p=100, n_train=50)).load()
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)


def test_a_short_theory_run_through_the_cli(run_cli, tmp_path):
    out = tmp_path / "out"
    code, stdout, err = run_cli("run", REPO / "benchmarks" / "theory.yaml", "--out", out,
                                "--set", "training.epochs=2", "--set", "seeds=[0]",
                                "--set", "dataset.params.n_train=200",
                                "--set", "evaluation.every=1",
                                "--set", "training.channels_last=true")
    assert code == 0, err
    records = stored(out)
    assert len(records) == 3
    for r in records.values():
        assert r["architecture"] == "mlp2-200" and len(r["history"]) == 2
        assert 0 <= r["summary"]["final"]["clean_acc"] <= 1
        assert 0 <= r["summary"]["final"]["patch_only_acc"] <= 1


def test_the_defaults_are_the_benchmarks_constants():
    """Users who build the task in their own spec get the setting the README documents."""
    spec = load_spec(REPO / "benchmarks" / "theory.yaml", [], get_registry())
    assert TwoPattern.Params(**spec.dataset.params) == TwoPattern.Params()
    assert TwoPatternQ.Params(**spec.patches[0].params) == TwoPatternQ.Params()


def test_a_patch_that_does_not_fit_the_data_is_bad_input_before_any_training(run_cli, tmp_path):
    out = tmp_path / "out"
    spec = REPO / "benchmarks" / "theory.yaml"
    code, _, err = run_cli("run", spec, "--out", out, "--set", "patch.params.dims=60")
    assert code == 2 and err == (
        f"patchbench: error: {spec}: patch.params.dims: the dataset's last 60 features are "
        "not empty (set two_pattern's d_q to the same value)\n")
    assert stored(out) == {}


@pytest.mark.parametrize("override, field, who", [
    ("architectures[0]=wrn", "architectures", "wrn-16-10"),
    ("architectures[0]=timm:resnet18", "architectures", "timm:resnet18"),
    ("patch=lwm", "patch", "lwm"),
])
def test_image_components_on_feature_vectors_are_bad_input(run_cli, tmp_path, override, field,
                                                           who):
    spec = REPO / "benchmarks" / "theory.yaml"
    code, _, err = run_cli("run", spec, "--out", tmp_path / "out", "--set", override)
    assert code == 2 and err == (
        f"patchbench: error: {spec}: {field}: {who} needs images (channels, height, width); "
        "the dataset gives feature vectors of shape (2050,)\n")
