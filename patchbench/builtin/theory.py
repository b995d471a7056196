"""The paper's theory setting as components: two patterns on a two-layer ReLU network.

Inputs are vectors x = (x1, x2), labels two classes. ``two_pattern`` gives the P component x1
(linearly separable along w* with margin ``margin``, plus noise orthogonal to w*: easy to
fit, hard to generalize) and leaves x2 empty; ``two_pattern_q`` is the "patch": it writes the
Q component x2 (class 0 at a*z, class 1 at a*(z + s*zeta), zeta orthogonal to z, a ~ U[0, 1],
s = +/-1: not linearly separable, no variation, so hard to fit and trivial to generalize).
As with the CIFAR patch, a fixed 80% of the examples carry Q and a quarter of those lose P,
so 20% are P only, 60% both and 20% Q only; clean accuracy is then P-only accuracy and
patch-only accuracy Q-only accuracy.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field
from torch import Tensor, nn

from .. import hookimpl
from ..components import Architecture, DataBundle, Dataset, FixedSubsetPatch, Params
from ..errors import PatchbenchError


class TwoPatternParams(Params):
    d_p: int = Field(2000, ge=2)
    """Dimension of the P component."""
    d_q: int = Field(50, ge=2)
    """Dimension of the Q component (left empty for two_pattern_q)."""
    n_train: int = Field(1200, ge=2)
    """Fewer P-carrying examples (80%) than P dimensions, so P is fitted by memorizing noise
    too and its test accuracy depends on how many examples it was learned from."""
    n_test: int = Field(10000, ge=2)
    """Large so that the P-only accuracy of one model is measured to +/-0.004."""
    margin: float = Field(0.05, gt=0)
    """Distance of every P example from the separating hyperplane, along w*."""
    noise: float = Field(2.0, ge=0)
    """Expected norm of the noise orthogonal to w* (noise/sqrt(d_p) per coordinate). Only
    the ratio margin/noise shapes P; the scale sets how large P's pre-activations are next
    to activation noise: at norm 1 an std of 0.13 drowned P as well as Q."""
    seed: int = 0


class TwoPattern(Dataset):
    """The theory's P component: separable along w* with a margin, plus orthogonal noise."""

    name = "two_pattern"
    Params = TwoPatternParams

    def load(self) -> DataBundle:
        p = self.params
        gen = torch.Generator().manual_seed(p.seed)
        w_star = torch.randn(p.d_p, generator=gen)
        w_star /= w_star.norm()

        def draw(n: int) -> tuple[Tensor, Tensor]:
            y = torch.randint(0, 2, (n,), generator=gen)
            xi = torch.randn(n, p.d_p, generator=gen) * p.noise / p.d_p ** 0.5
            xi -= (xi @ w_star)[:, None] * w_star  # noise never crosses the margin
            x1 = (2 * y - 1)[:, None].float() * p.margin * w_star + xi
            return torch.cat([x1, torch.zeros(n, p.d_q)], 1), y

        x_train, y_train = draw(p.n_train)
        x_test, y_test = draw(p.n_test)
        return DataBundle(x_train, y_train, x_test, y_test, (0.0,), (1.0,), ["0", "1"])


class TwoPatternQParams(Params):
    dims: int = Field(50, ge=2)
    """The Q block: the last `dims` features (two_pattern's d_q)."""
    z_norm: float = Field(10.0, gt=0)
    zeta_norm: float = Field(1.0, gt=0)
    augment_fraction: float = Field(0.8, ge=0, le=1)
    """Fixed fraction of the examples that carry Q."""
    q_only_prob: float = Field(0.25, ge=0, le=1)
    """Of those, the fraction whose P part is zeroed at each load (0.25 x 0.8 = 20%)."""
    seed: int = 0


class TwoPatternQ(FixedSubsetPatch):
    """The theory's Q component as a patch: a*z vs a*(z +/- zeta), on 80% of the examples."""

    name = "two_pattern_q"
    Params = TwoPatternQParams

    def setup(self, data: DataBundle, device: torch.device) -> None:
        p = self.params
        width = data.image_shape[-1]
        if len(data.image_shape) != 1 or width <= p.dims:
            raise PatchbenchError(f"patch.params.dims: two_pattern_q needs feature vectors "
                                  f"longer than {p.dims}; the dataset gives {data.image_shape}")
        if data.x_train[:, -p.dims:].abs().sum() != 0:
            raise PatchbenchError(f"patch.params.dims: the dataset's last {p.dims} features "
                                  "are not empty (set two_pattern's d_q to the same value)")
        if data.num_classes != 2:
            raise PatchbenchError("patch: two_pattern_q needs a two-class dataset")
        gen = torch.Generator().manual_seed(p.seed)
        z = torch.randn(p.dims, generator=gen)
        z /= z.norm()
        zeta = torch.randn(p.dims, generator=gen)
        zeta -= (zeta @ z) * z
        zeta /= zeta.norm()
        self.z, self.zeta = (p.z_norm * z).to(device), (p.zeta_norm * zeta).to(device)
        self.start = width - p.dims
        self.draw_subsets(data, p.augment_fraction, p.seed, device)

    def _q(self, cls: Tensor, gen: torch.Generator) -> Tensor:
        u = torch.rand(2, len(cls), generator=gen, device=cls.device)
        sign = torch.where(u[1] < 0.5, 1.0, -1.0) * (cls == 1)
        return u[0, :, None] * (self.z + sign[:, None] * self.zeta)

    def apply(self, x: Tensor, y: Tensor, idx: Tensor, split: str,
              gen: torch.Generator) -> tuple[Tensor, Tensor]:
        carry = self.poison_mask(idx, split)
        only = (torch.rand(len(y), generator=gen, device=x.device)
                < self.params.q_only_prob) & carry
        q = self._q(y, gen)
        x = x.clone()
        x[:, :self.start] *= (~only)[:, None]
        x[:, self.start:] = torch.where(carry[:, None], q, x[:, self.start:])
        return x, y

    def stamp(self, x: Tensor, cls: Tensor, gen: torch.Generator) -> Tensor:
        x = x.clone()
        x[:, self.start:] = self._q(cls, gen)
        return x

    def patch_only(self, cls: Tensor, image_shape: tuple[int, ...],
                   gen: torch.Generator) -> Tensor:
        return self.stamp(torch.zeros((len(cls), *image_shape), device=cls.device), cls, gen)


class MLP2Params(Params):
    width: int = Field(200, ge=1)


class MLP2(Architecture):
    """A two-layer ReLU network (one hidden layer of `width` units), for vector inputs."""

    name = "mlp2"
    Params = MLP2Params

    def build(self, num_classes: int, image_shape: tuple[int, ...]) -> nn.Module:
        d = int(np.prod(image_shape))
        return nn.Sequential(nn.Flatten(), nn.Linear(d, self.params.width), nn.ReLU(),
                             nn.Linear(self.params.width, num_classes))

    def label(self) -> str:
        return f"mlp2-{self.params.width}"


@hookimpl
def register_datasets(register) -> None:
    register(TwoPattern)


@hookimpl
def register_patches(register) -> None:
    register(TwoPatternQ)


@hookimpl
def register_architectures(register) -> None:
    register(MLP2)
