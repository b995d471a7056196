"""How much of the lwm patch's class signal survives bf16 rounding (the first conv's input
under bf16 autocast), for the paper's patch (sep 0.1) and the reduced CPU protocol's (0.3).

    python benchmarks/bf16_signal.py

The patch pixels are z + s * c * zeta_y (z ~ 1.25 N(0, 1) shared by all classes, zeta_y ~
U[-sep, sep] per class, s = +-1, c = 1 on patched images and 1.75 a, a ~ U[0, 1], on
patch-only images). Autocast rounds that sum to bf16 before the first convolution. Printed:
the rounding error relative to the class signal (c * zeta_y), and how often the rounded
patch is still nearest, among every class and sign, to its own class's fp32 pattern, on the
patch-only inputs (the hardest case: small a) as well as the patched ones. CPU, < 1 s.
"""

from __future__ import annotations

import argparse

import torch

from patchbench.builtin.patches import LWMPatch, LWMParams
from patchbench.components import DataBundle


def lwm_patterns(sep: float, classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """z and zeta exactly as the lwm generator draws them (its seed 2)."""
    data = DataBundle(torch.zeros(classes, 3, 32, 32, dtype=torch.uint8),
                      torch.arange(classes), torch.zeros(classes, 3, 32, 32, dtype=torch.uint8),
                      torch.arange(classes), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25),
                      [str(c) for c in range(classes)])
    patch = LWMPatch(LWMParams(sep=sep))
    patch.setup(data, torch.device("cpu"))
    return patch.z.flatten(), patch.zeta[:, 0].flatten(1)


def measure(sep: float, draws: int, gen: torch.Generator) -> dict[str, float]:
    z, zeta = lwm_patterns(sep)
    classes = zeta.shape[0]
    y = torch.randint(classes, (draws,), generator=gen)
    sign = torch.randint(0, 2, (draws,), generator=gen) * 2.0 - 1.0
    out = {}
    for kind, coef in (("patched", sign),
                       ("patch-only", sign * 1.75 * torch.rand(draws, generator=gen))):
        signal = coef[:, None] * zeta[y]
        x = z + signal
        rounded = x.bfloat16().float()
        err = (rounded - x).norm(dim=1) / signal.norm(dim=1)
        # Nearest of the 2 * classes fp32 patterns z +- c * zeta_k at the input's own scale c.
        cand = z + coef.abs()[:, None, None] * torch.cat([zeta, -zeta])[None]
        nearest = (rounded[:, None] - cand).norm(dim=2).argmin(dim=1) % classes
        nearest_fp32 = (x[:, None] - cand).norm(dim=2).argmin(dim=1) % classes
        out[f"{kind}: rounding error / class signal, median"] = err.median().item()
        out[f"{kind}: rounding error / class signal, 99th pct"] = err.quantile(0.99).item()
        out[f"{kind}: nearest class pattern is its own, bf16"] = (nearest == y).float().mean().item()
        out[f"{kind}: nearest class pattern is its own, fp32"] = \
            (nearest_fp32 == y).float().mean().item()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draws", type=int, default=200_000)
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(0)
    for sep in (0.1, 0.3):
        print(f"sep {sep} ({args.draws:,} draws)")
        for key, value in measure(sep, args.draws, gen).items():
            print(f"  {key:52s} {value:.4f}")


if __name__ == "__main__":
    main()
