from __future__ import annotations

import pytest
import torch
from torch import nn

from patchbench.builtin.architectures import WRN, Timm
from patchbench.builtin.regularizers import ActNoise
from patchbench.builtin.schedules import Constant, Cosine, MultiStep, Step
from patchbench.errors import PatchbenchError


def test_wrn_16_10_parameter_count_and_logits():
    model = WRN(WRN.Params(depth=16, width=10)).build(10, (3, 32, 32))
    assert sum(p.numel() for p in model.parameters()) == 17_116_634
    small = WRN(WRN.Params(depth=10, width=1)).build(7, (3, 32, 32))
    assert small(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    assert WRN(WRN.Params(depth=16, width=4)).label() == "wrn-16-4"


def test_wrn_init_is_he_normal_fan_out():
    model = WRN(WRN.Params(depth=16, width=4)).build(10, (3, 32, 32))
    conv = model.blocks[1].conv1
    expected = (2.0 / (3 * 3 * conv.out_channels)) ** 0.5
    assert abs(float(conv.weight.detach().std()) - expected) / expected < 0.05
    assert float(model.fc.bias.detach().abs().sum()) == 0.0


def test_timm_stem_is_adapted_to_32x32():
    adapted = Timm(Timm.Params(), variant="resnet18").build(10, (3, 32, 32))
    assert adapted.conv1.stride == (1, 1) and adapted.conv1.kernel_size == (3, 3)
    assert isinstance(adapted.maxpool, nn.Identity)
    adapted.eval()
    assert adapted(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert adapted.forward_features(torch.randn(1, 3, 32, 32)).shape[-1] == 4
    plain = Timm(Timm.Params(adapt_stem=False), variant="resnet18").build(10, (3, 32, 32))
    assert plain.conv1.stride == (2, 2) and isinstance(plain.maxpool, nn.MaxPool2d)
    plain.eval()
    assert plain.forward_features(torch.randn(1, 3, 32, 32)).shape[-1] == 1


def test_unknown_timm_model_gets_close_matches():
    with pytest.raises(PatchbenchError, match=r"unknown timm model 'resnet81'; did you mean"):
        Timm.check_variant("resnet81")


SPE = 391  # steps per epoch on the full CIFAR-10 training set at batch 128


def test_multistep_matches_the_authors_decay_early():
    s = MultiStep(MultiStep.Params(milestones=[30], factor=0.04))
    assert s.lr(0, SPE, 60 * SPE, 0.1) == 0.1
    assert s.lr(29 * SPE - 1, SPE, 60 * SPE, 0.1) == 0.1  # last step of epoch 29
    assert s.lr(29 * SPE, SPE, 60 * SPE, 0.1) == pytest.approx(0.004)  # first of epoch 30
    assert s.anneal_epochs(60) == [30] and s.anneal_epochs(20) == []
    two = MultiStep(MultiStep.Params(milestones=[3, 5], factor=0.5))
    assert [two.lr(e * 10, 10, 100, 1.0) for e in range(6)] == [1, 1, 0.5, 0.5, 0.25, 0.25]


def test_step_constant_and_cosine():
    s = Step(Step.Params(step_size=2, factor=0.1))
    assert [s.lr(e * 10, 10, 60, 1.0) for e in range(5)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01])
    assert s.anneal_epochs(6) == [3, 5]
    assert Constant().lr(12345, 10, 20000, 0.3) == 0.3
    c = Cosine(Cosine.Params(warmup_epochs=1, final_factor=0.1))
    assert c.lr(0, 10, 100, 1.0) == pytest.approx(0.1)
    assert c.lr(9, 10, 100, 1.0) == pytest.approx(1.0)
    assert c.lr(10, 10, 100, 1.0) == pytest.approx(1.0)
    assert c.lr(99, 10, 100, 1.0) == pytest.approx(0.1)
    assert c.lr(10 + 89 // 2, 10, 100, 1.0) == pytest.approx(0.55, abs=0.02)


class Probe(nn.Module):
    """Records what its ReLU receives."""

    def __init__(self):
        super().__init__()
        self.relu = nn.ReLU()
        self.seen = None
        self.relu.register_forward_hook(lambda m, a, o: setattr(self, "seen", a[0].clone()))

    def forward(self, x):
        return self.relu(x)


def test_act_noise_on_off_shared_and_annealed():
    probe = Probe()
    noise = ActNoise(ActNoise.Params(std=0.4, anneal_epoch=3, factor=1e-5))
    noise.attach(probe)
    noise.set_epoch(1)
    probe.train()
    probe(torch.zeros(8, 4, 6, 6))
    added = probe.seen
    assert added.abs().sum() > 0
    assert torch.equal(added, added[:1, :1].expand_as(added))  # one (H, W) map per forward
    assert abs(float(added.std()) - 0.4) < 0.15
    probe.eval()
    probe(torch.zeros(8, 4, 6, 6))
    assert float(probe.seen.abs().sum()) == 0.0
    probe.train()
    noise.set_epoch(3)
    probe(torch.zeros(8, 4, 6, 6))
    assert 0 < float(probe.seen.abs().max()) < 1e-4
    assert noise.anneal_epochs(10) == [3]


def test_act_noise_works_on_timm_resnets_and_rejects_models_without_relu():
    model = Timm(Timm.Params(), variant="test_resnet").build(10, (3, 32, 32))
    noise = ActNoise(ActNoise.Params(std=0.5))
    noise.attach(model)
    noise.set_epoch(1)
    x = torch.randn(4, 3, 32, 32)
    model.train()
    torch.manual_seed(0)
    a = model(x)
    torch.manual_seed(1)
    b = model(x)
    assert not torch.allclose(a, b)
    model.eval()
    assert torch.equal(model(x), model(x))
    with pytest.raises(PatchbenchError, match="no nn.ReLU modules"):
        ActNoise().attach(nn.Sequential(nn.Linear(2, 2), nn.GELU()))
