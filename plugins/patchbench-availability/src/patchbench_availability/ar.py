"""AR: autoregressive perturbations (Sandoval-Segura et al., "Autoregressive Perturbations
for Data Poisoning", NeurIPS 2022), after the authors' psandovalsegura/autoregressive-poisoning:
``autoregressive.py`` (``ARProcessPerturb3Channel.__init__`` and ``.generate``),
``create_ar_poisons_3channel.py`` (``perturb_with_ar_process``, ``create_poison``: noise size
36 x 36 cropped by 4 for CIFAR; the README's command ``--epsilon 1.0 --p_norm 2``) and
``autoregressive_params.py`` (``RANDOM_3C_AR_PARAMS_RNMR_10``, the CIFAR-10 coefficients).

Each class c has a fixed AR process: per channel a 3 x 3 window of coefficients whose
bottom-right entry (the current pixel) is 0. A fresh perturbation for every image starts as
standard normal noise of (C, H + crop, W + crop); then, in raster order, every entry with at
least two rows above and two columns to its left is replaced by the sum of its channel's
coefficients times the 3 x 3 window ending at it (the AR recursion: 8 causal neighbours, no
added noise). The first ``crop`` rows and columns are cut off, and the result is scaled to
L2 norm ``eps`` (1.0) on pixels in [0, 1]; the poisoned image is ``clip(x + delta, 0, 1)``.
Not reproduced: the authors export the poisoned images as PNG (a rounding to uint8).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from patchbench.components import DataBundle
from patchbench.errors import PatchbenchError

from .base import AvailabilityParams, SampleWise

# The authors' published CIFAR-10 AR coefficients, one (channel, 3, 3) window per class:
# RANDOM_3C_AR_PARAMS_RNMR_10 in autoregressive_params.py (numbers, as printed there).
CIFAR10_COEFFICIENTS = (
    (((0.1561, -0.0710, 0.3743), (-0.1896, 0.0461, 0.6075), (0.0539, 0.0226, 0.0)),
     ((-0.1016, 0.2193, 0.0472), (0.1401, 0.1561, 0.1171), (0.1742, 0.2476, 0.0)),
     ((-0.1100, 0.2703, -0.0026), (0.2662, -0.1185, 0.0846), (0.1812, 0.4287, 0.0))),
    (((0.2346, 0.2056, -0.0480), (0.4110, 0.7504, 0.1326), (-0.1044, -0.5817, 0.0)),
     ((-0.0308, -0.1085, 0.3997), (0.2187, 0.1830, 0.3389), (-0.1017, 0.1008, 0.0)),
     ((0.1246, 0.1667, -0.1518), (0.2985, 0.1346, 0.3185), (0.3805, -0.2716, 0.0))),
    (((0.0951, 0.5501, 0.0344), (-0.3431, 0.0767, 0.2239), (0.4602, -0.0972, 0.0)),
     ((0.1714, 0.1121, 0.1129), (0.3032, 0.2959, 0.0861), (0.2207, -0.3021, 0.0)),
     ((0.2720, -0.3417, 0.2115), (0.2499, 0.3690, 0.3833), (-0.0282, -0.1158, 0.0))),
    (((-0.4241, -0.2694, 0.4091), (0.3998, 0.1572, 0.2683), (0.2700, 0.1892, 0.0)),
     ((0.1246, 0.3024, 0.2110), (0.0538, 0.1997, 0.3283), (0.0372, -0.2570, 0.0)),
     ((0.2038, 0.3972, -0.1963), (0.3460, -0.6439, 0.7153), (-0.2826, 0.4605, 0.0))),
    (((0.7873, -0.1756, -0.3509), (0.0763, 0.2261, -0.2704), (0.2491, 0.4581, 0.0)),
     ((0.1287, -0.1655, 0.2488), (0.3811, -0.2307, 0.3019), (-0.0076, 0.3433, 0.0)),
     ((0.4227, 0.0690, 0.2492), (0.0896, 0.0653, -0.1653), (-0.2349, 0.5043, 0.0))),
    (((0.1585, 0.2663, 0.1764), (0.0031, -0.0237, 0.3464), (0.0140, 0.0590, 0.0)),
     ((0.1632, 0.5094, 0.0321), (0.3935, -0.1807, 0.2110), (-0.3620, 0.2334, 0.0)),
     ((-0.2474, 0.1092, 0.3928), (0.2808, 0.3912, 0.1211), (-0.0635, 0.0159, 0.0))),
    (((0.8886, -0.2459, -0.4169), (-0.4120, -0.1282, 0.6105), (0.2495, 0.4546, 0.0)),
     ((0.0679, -0.2982, 0.1039), (0.1430, 0.1596, 0.6743), (-0.2002, 0.3496, 0.0)),
     ((-0.2195, 0.2183, -0.2665), (0.3373, 0.1907, 0.5847), (0.1977, -0.0427, 0.0))),
    (((-0.3829, 0.0158, 0.4019), (-0.0688, 0.1206, 0.2481), (0.1416, 0.5238, 0.0)),
     ((-0.2271, 0.1683, 0.3593), (0.2671, -0.1225, 0.0217), (0.0266, 0.5066, 0.0)),
     ((0.8539, 0.3682, 0.2899), (0.6635, 0.0130, -0.7025), (-0.1377, -0.3483, 0.0))),
    (((0.4482, 0.2220, 0.0598), (0.3965, -0.1148, 0.1683), (-0.3444, 0.1644, 0.0)),
     ((-0.1463, 0.6120, 0.2203), (0.4039, -0.2832, -0.1290), (0.3369, -0.0146, 0.0)),
     ((0.3759, 0.2814, 0.1494), (0.1925, 0.0552, 0.1091), (-0.0962, -0.0673, 0.0))),
    (((0.3556, 0.3477, -0.6625), (0.1812, 0.2997, -0.2139), (0.5538, 0.1385, 0.0)),
     ((-0.0297, 0.0780, 0.2486), (0.2246, 0.1931, 0.1349), (0.0079, 0.1426, 0.0)),
     ((0.2461, 0.1217, 0.1879), (-0.0165, 0.1160, 0.1356), (0.1772, 0.0321, 0.0))),
)

CHUNK = 8192
"""Images whose noise is generated at once (bounds the memory of setup)."""


class ARParams(AvailabilityParams):
    eps: float = Field(1.0, gt=0)
    """L2 norm of every image's perturbation on pixels in [0, 1], before clipping (the
    authors' README: --epsilon 1.0 --p_norm 2)."""
    crop: int = Field(4, ge=0)
    """Rows and columns cut from the top and left of the generated noise, which is
    generated this much larger than the image (the authors: 36x36 cropped by 4 for CIFAR)."""
    coefficients: Literal["cifar10", "random"] = "cifar10"
    """cifar10: the authors' published coefficients (10 classes, 3 channels). random: a
    stable process per class drawn from seed as the authors' ARProcessPerturb3Channel and
    autoregressive_param_finder do (see random_coefficients), for other datasets."""


def ar_noise(coefficients: Tensor, start: Tensor) -> Tensor:
    """Run the AR recursion over ``start`` (N, C, H', W'), each image with its own
    coefficients (N, C, 3, 3): every entry at row >= 2 and column >= 2, in the authors' raster
    order, becomes the coefficient-weighted sum of the 3x3 window ending at it (its own
    weight 0). The window reaches only entries on earlier anti-diagonals (row + column
    smaller), so one anti-diagonal is computed at a time, batched over its entries, the
    images and the channels: the same values as the raster loop, in H' + W' - 5 steps."""
    x = start.clone()
    w = coefficients.clone()
    w[:, :, 2, 2] = 0
    rows, cols = x.shape[2] - 2, x.shape[3] - 2  # the entries updated, from (2, 2)
    offsets = torch.arange(3, device=x.device)
    for diagonal in range(rows + cols - 1):
        i = torch.arange(max(0, diagonal - cols + 1), min(rows, diagonal + 1), device=x.device)
        j = diagonal - i
        windows = x[:, :, (i[:, None] + offsets)[:, :, None], (j[:, None] + offsets)[:, None, :]]
        x[:, :, i + 2, j + 2] = (windows * w[:, :, None]).sum(dim=(3, 4))
    return x


def ar_perturbations(coefficients: Tensor, start: Tensor, crop: int, eps: float) -> Tensor:
    """``ARProcessPerturb3Channel.generate`` batched, with p=2: the AR recursion over the
    starting noise, its first ``crop`` rows and columns cut off, scaled to L2 norm ``eps``."""
    delta = ar_noise(coefficients, start)[:, :, crop:, crop:]
    return delta * (eps / delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1))


GEN_TRIALS, GEN_NORM_BOUND, CANDIDATES, MAX_ROUNDS = 3, 50.0, 256, 200
"""The authors' autoregressive_param_finder.py: a sampled process is kept only when none of
``--num_gen_trials`` (3) generated signals is NaN or has a norm above
``--gen_norm_upper_bound`` (50); candidates are tried ``CANDIDATES`` at a time."""


def random_coefficients(k: int, c: int, gen: torch.Generator) -> Tensor:
    """k processes of c channels drawn as ``ARProcessPerturb3Channel.__init__`` does with
    ``b=None`` (standard normal, the current pixel's coefficient 0, each channel's window
    divided by its sum), kept only when they do not diverge (``autoregressive_param_finder``'s
    first test; its second, a response of at least 10 to every other process's filter, is
    left out: it needs up to a million samples)."""
    kept: list[Tensor] = []
    for _ in range(MAX_ROUNDS):
        b = torch.randn((CANDIDATES, c, 3, 3), generator=gen)
        b[:, :, 2, 2] = 0
        b = b / b.sum(dim=(2, 3), keepdim=True)
        start = torch.randn((CANDIDATES * GEN_TRIALS, c, 36, 36), generator=gen)
        signal = ar_noise(b.repeat_interleave(GEN_TRIALS, 0), start)[:, :, 4:, 4:]
        norms = signal.flatten(1).norm(dim=1).view(CANDIDATES, GEN_TRIALS)
        stable = (~torch.isnan(norms) & (norms <= GEN_NORM_BOUND)).all(dim=1)
        kept.extend(b[stable])
        if len(kept) >= k:
            return torch.stack(kept[:k])
    raise PatchbenchError(f"patch.params.coefficients: random found only {len(kept)} stable "
                          f"AR processes of {k} in {MAX_ROUNDS * CANDIDATES} draws")


class AR(SampleWise):
    """AR (Sandoval-Segura et al., NeurIPS 2022): a fixed autoregressive process per class
    generates fresh noise for every training image, scaled to L2 norm 1: an availability
    poison that a simple filter separates and a network learns first."""

    name = "ar"
    Params = ARParams

    def build(self, data: DataBundle, device: torch.device) -> None:
        p = self.params
        c, h, w, k = self.channels, self.height, self.width, self.num_classes
        gen = torch.Generator().manual_seed(p.seed)
        if p.coefficients == "cifar10":
            if (k, c) != (10, 3):
                raise PatchbenchError(
                    "patch.params.coefficients: cifar10 holds the authors' 10 processes of "
                    f"3 channels; the dataset has {k} classes of {c} channels (use random)")
            coef = torch.tensor(CIFAR10_COEFFICIENTS)
        else:
            coef = random_coefficients(k, c, gen)
        self.coefficients = coef.float().to(device)
        labels = self.labels.to(device)
        out = []
        for start in range(0, len(labels), CHUNK):
            y = labels[start:start + CHUNK]
            noise = torch.randn((len(y), c, h + p.crop, w + p.crop), generator=gen).to(device)
            out.append(ar_perturbations(self.coefficients[y], noise, p.crop, p.eps))
        self.patterns = torch.cat(out)

    def deltas(self, rows: Tensor) -> Tensor:
        return self.patterns[rows]
