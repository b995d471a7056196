"""`patchbench preview`: what the model sees, un-normalized for display."""

from __future__ import annotations

from pathlib import Path

import torch

from ..components import DataBundle, PatchGenerator
from ..evaluation import patch_only, stamp


def preview_rows(data: DataBundle, patch: PatchGenerator, n: int, seed: int = 0
                 ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Normalized images per row (clean, image+patch, patch-only, a training batch) and the
    labels of the columns. A sample-wise patch shows poisoned training images, each with its
    own pattern (the one it trains with) in every row."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data.y_train), generator=gen)
    if patch.sample_wise:
        order = order[patch.poison_mask(order, "train")]
    idx = order[:n]
    normalize = data.normalizer(torch.device("cpu"))
    clean, y = normalize(data.x_train[idx]), data.y_train[idx]
    own = idx if patch.sample_wise else None
    train_x, _ = patch.apply(clean, y, idx, "train", gen)
    return {"clean": clean, "image + patch": stamp(patch, clean, y, gen, own),
            "patch only": patch_only(patch, y, data.image_shape, gen, own),
            "training batch": train_x}, y


def save_preview(data: DataBundle, patch: PatchGenerator, out: Path, n: int = 8,
                 title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, labels = preview_rows(data, patch, n)
    n = len(labels)  # fewer where a sample-wise poison has fewer poisoned images
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    fig, axes = plt.subplots(len(rows), n, figsize=(1.3 * n, 1.45 * len(rows)), squeeze=False)
    for r, (label, x) in enumerate(rows.items()):
        images = (x * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()
        for c in range(n):
            ax = axes[r][c]
            ax.imshow(images[c] if images.shape[-1] == 3 else images[c, ..., 0],
                      interpolation="nearest", cmap=None if images.shape[-1] == 3 else "gray")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(label, fontsize=8)
    for c in range(n):
        axes[0][c].set_title(data.classes[int(labels[c])], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
