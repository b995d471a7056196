"""OPS: the one-pixel shortcut (Wu et al., "One-Pixel Shortcut: on the Learning Preference
of Deep Neural Networks", ICLR 2023), after the authors' ``perturb.py`` (``pixel_search``,
with ``sparsity=1``, the default of ``main.py`` and of the README's command) in
cychomatica/One-Pixel-Shotcut.

For each class in order 0, 1, ..., the search scores every (pixel position, colour) pair,
the colours being the 2^C corners of the RGB cube (channel 0 is the colour index's most
significant bit, as ``channel_value[0] = pixel_value // 2 // 2``): with ``D = |colour -
x[:, row, col, :]|`` over the class's clean training images (pixels in [0, 1]), the score is
``mean(D) / std(D)`` over all those images and channels together (numpy's population std).
Pairs already chosen by an earlier class are excluded; the class takes the pair of highest
score (the first one, in the authors' (position, colour) order, on a tie). A poisoned image of
class c then has that pixel set to that colour (the authors' perturbation ``colour - x`` added
to x), everything else untouched.

Computed here exactly from integer sums of the uint8 images (one pass per class and
colour-bit, no per-sample loop), so a pixel constant over a class (std 0) is recognized
exactly; it scores +inf, as numpy's division by zero ranks it above every finite score.
"""

from __future__ import annotations

import torch
from torch import Tensor

from patchbench.components import DataBundle

from .base import Availability

CHUNK = 4096
"""Training images summed at once in the search."""


def ops_scores(x: Tensor, y: Tensor, num_classes: int) -> Tensor:
    """The authors' criterion mean(D) / std(D) for every class, pixel and corner colour:
    (K, H * W, 2^C) in float64, from uint8 images ``x`` (N, C, H, W) and labels ``y``."""
    n, c, h, w = x.shape
    s1 = torch.zeros((num_classes, c, h, w), dtype=torch.int64)
    s2 = torch.zeros_like(s1)
    for start in range(0, n, CHUNK):
        q = x[start:start + CHUNK].long()
        s1.index_add_(0, y[start:start + CHUNK], q)
        s2.index_add_(0, y[start:start + CHUNK], q * q)
    count = torch.bincount(y, minlength=num_classes).view(-1, 1, 1, 1)
    # |v - q| is q where the colour's channel is 0 and 255 - q where it is 1 (in 1/255)
    sums = torch.stack([s1, 255 * count - s1])  # (bit, K, C, H, W)
    squares = torch.stack([s2, 255 ** 2 * count - 2 * 255 * s1 + s2])
    scores = []
    for colour in range(2 ** c):
        bits = [(colour >> (c - 1 - ch)) & 1 for ch in range(c)]
        total = sum(sums[b, :, ch] for ch, b in enumerate(bits))  # (K, H, W)
        total2 = sum(squares[b, :, ch] for ch, b in enumerate(bits))
        m = count.view(-1, 1, 1) * c
        spread = m * total2 - total * total  # (m * std)^2, exact in integers
        score = total.double() / spread.double().sqrt()  # = mean / std
        score = torch.where(spread == 0, torch.full_like(score, float("inf")), score)
        scores.append(score.flatten(1))
    return torch.stack(scores, dim=2)


def ops_search(x: Tensor, y: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """The authors' greedy search: for classes 0, 1, ... the best (position, colour) pair not
    taken by an earlier class. Returns each class's flat pixel position and colour index."""
    scores = ops_scores(x, y, num_classes)
    colours = scores.shape[2]
    taken = torch.zeros(scores.shape[1:], dtype=torch.bool)
    positions, chosen = [], []
    for cls in range(num_classes):  # sequential: a class excludes the pairs before it
        score = torch.where(taken, torch.full_like(scores[cls], -1.0), scores[cls])
        best = int(torch.argmax(score.flatten()))
        positions.append(best // colours)
        chosen.append(best % colours)
        taken.view(-1)[best] = True
    return torch.tensor(positions), torch.tensor(chosen)


class OPS(Availability):
    """OPS (Wu et al., ICLR 2023): one pixel per class, set to a corner of the RGB cube, at
    the position and colour the authors' search finds on the clean training set; class-wise."""

    name = "ops"

    def build(self, data: DataBundle, device: torch.device) -> None:
        c = self.channels
        positions, colours = ops_search(data.x_train.cpu(), data.y_train.cpu().long(),
                                        self.num_classes)
        self.rows = (positions // self.width).to(device)
        self.cols = (positions % self.width).to(device)
        bits = torch.tensor([[(v >> (c - 1 - ch)) & 1 for ch in range(c)]
                             for v in colours.tolist()], dtype=torch.float32)
        self.colours = bits.to(device)  # (K, C) on pixels in [0, 1]
        self.values = (self.colours - self.mean.view(1, -1)) / self.std.view(1, -1)

    def stamp(self, x: Tensor, cls: Tensor, gen: torch.Generator) -> Tensor:
        x = x.clone()
        n = torch.arange(len(x), device=x.device)
        x[n, :, self.rows[cls], self.cols[cls]] = self.values[cls]
        return x

    def apply(self, x: Tensor, y: Tensor, idx: Tensor, split: str,
              gen: torch.Generator) -> tuple[Tensor, Tensor]:
        if split != "train":  # the test set is never poisoned (poison_exactly)
            return x, y
        mask = self.poison_mask(idx, split)
        return torch.where(mask.view(-1, 1, 1, 1), self.stamp(x, y, gen), x), y

    def patch_only(self, cls: Tensor, image_shape: tuple[int, int, int],
                   gen: torch.Generator) -> Tensor:
        return self.stamp(self.blank(len(cls), image_shape), cls, gen)
