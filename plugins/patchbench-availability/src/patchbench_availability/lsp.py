"""LSP: linearly separable synthetic perturbations (Yu et al., "Availability Attacks Create
Shortcuts", KDD 2022), after the authors' ``synthetic_perturbations/cifar_train.py`` (the block
under ``if(not args.clean)``) and ``synthetic_perturbations/util.py``
(``comput_l2norm_lim``, ``normalize_l2norm``) in dayu11/Availability-Attacks-Create-Shortcuts.

The authors draw one point per training image from scikit-learn's ``make_classification``
(``n_features = n_informative = (32 / patchsize)**2 * 3``, ``n_redundant = n_repeated = 0``,
``n_clusters_per_class = 1``, ``class_sep = 10``, ``flip_y = 0``), give each training image of
class c its own point of class c, reshape the point to a (H/p, W/p, 3) grid, repeat every
grid cell over a p x p block, crop to the image, and scale every image's noise to the L2
norm ``sqrt((eps / 255)**2 * 3 * 32 * 32)`` on pixels in [0, 1] (``--eps 6``,
``--patchsize 8``: a 4 x 4 x 3 grid of 8 x 8 blocks, L2 norm 1.304).

This module reimplements ``make_classification``'s cluster construction (one cluster per
class) with a seeded ``numpy.random.RandomState``, without scikit-learn: the centroids are
distinct vertices of the hypercube {-class_sep, +class_sep}^d; each class has its own random
linear map ``A_c`` with entries uniform in [-1, 1); a point of class c is ``z @ A_c +
centroid_c`` with z standard normal. Left out, because they do not change the distribution:
``make_classification``'s shuffles of the samples and of the feature order (the vertices and
the ``A_c`` are i.i.d. over the features). Not reproduced: the authors store the poisoned
images as uint8 (a truncation after ``clip``); here the poisoned images stay float.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from patchbench.components import DataBundle
from patchbench.errors import PatchbenchError

from .base import AvailabilityParams, SampleWise


class LSPParams(AvailabilityParams):
    eps: float = Field(6.0, gt=0)
    """Budget in 1/255 pixel units, as the authors' --eps (6): each image's noise has the L2
    norm of an L-inf noise of eps/255 on every pixel, sqrt((eps/255)^2 * C*H*W) (1.304 on
    32x32 RGB), on pixels in [0, 1], before clipping."""
    patch_size: int = Field(8, ge=1)
    """Side of the blocks each noise coordinate is repeated over (the authors' --patchsize,
    8: a 4x4 grid on 32x32 images)."""
    class_sep: float = Field(10.0, gt=0)
    """Half the side of the hypercube whose vertices are the class centroids
    (make_classification's class_sep, 10. in the authors' call)."""


def distinct_vertices(rng: np.random.RandomState, k: int, d: int) -> np.ndarray:
    """``k`` distinct random vertices of {0, 1}^d (make_classification's
    ``_generate_hypercube`` draws distinct ones; here: redraw duplicates until none)."""
    bits = rng.randint(2, size=(k, d))
    while True:
        _, first = np.unique(bits, axis=0, return_index=True)
        duplicate = np.setdiff1d(np.arange(k), first)
        if not len(duplicate):
            return bits
        bits[duplicate] = rng.randint(2, size=(len(duplicate), d))


class LSP(SampleWise):
    """LSP (Yu et al., KDD 2022): each training image gets its own point of its class's
    Gaussian cluster, upsampled into blocks and scaled to a fixed L2 norm: linearly
    separable noise as an availability poison."""

    name = "lsp"
    Params = LSPParams

    def build(self, data: DataBundle, device: torch.device) -> None:
        p = self.params
        c, h, w = self.channels, self.height, self.width
        gh, gw = math.ceil(h / p.patch_size), math.ceil(w / p.patch_size)
        d, k = gh * gw * c, self.num_classes
        if k > 2 ** min(d, 62):
            raise PatchbenchError(
                f"patch.params.patch_size: {p.patch_size} leaves {d} noise coordinates on "
                f"{c}x{h}x{w} images, too few for {k} distinct class centroids (2^{d})")
        rng = np.random.RandomState(p.seed)
        centroids = (2.0 * distinct_vertices(rng, k, d) - 1.0) * p.class_sep
        maps = 2.0 * rng.uniform(size=(k, d, d)) - 1.0
        labels = self.labels.cpu().numpy()
        z = rng.standard_normal(size=(len(labels), d))
        points = np.empty_like(z)
        for cls in range(k):  # one matrix product per class
            rows = labels == cls
            points[rows] = z[rows] @ maps[cls] + centroids[cls]
        # the authors' layout: a point is a (grid_h, grid_w, channels) array
        grid = torch.from_numpy(points).view(-1, gh, gw, c).permute(0, 3, 1, 2)
        # L2 norm of the upsampled, cropped noise: block (i, j) covers rows[i] * cols[j] pixels
        rows_kept = torch.clamp(h - p.patch_size * torch.arange(gh), max=p.patch_size)
        cols_kept = torch.clamp(w - p.patch_size * torch.arange(gw), max=p.patch_size)
        cover = (rows_kept[:, None] * cols_kept[None, :]).double()
        norms = (grid.square() * cover).sum(dim=(1, 2, 3)).sqrt()
        budget = math.sqrt((p.eps / 255) ** 2 * c * h * w)
        self.budget = budget
        self.grid = (grid * (budget / norms).view(-1, 1, 1, 1)).float().contiguous().to(device)

    def deltas(self, rows: Tensor) -> Tensor:
        s = self.params.patch_size
        grid = self.grid[rows]
        up = grid.repeat_interleave(s, dim=2).repeat_interleave(s, dim=3)
        return up[:, :, : self.height, : self.width]
