"""`patchbench preview`: what the model sees, un-normalized for display."""

from __future__ import annotations

from pathlib import Path

import torch

from ..boundary import check_apply, check_images
from ..components import Augmentation, DataBundle, PatchGenerator
from ..evaluation import patch_only, stamp


Pipeline = tuple[str, list[Augmentation], bool]
"""A training-batch row: its label (which arms), the arms' augmentations in order, and
whether they run before the patch (``augment_order: before_patch``)."""


def preview_rows(data: DataBundle, patch: PatchGenerator, n: int, seed: int = 0,
                 training: list[Pipeline] | None = None
                 ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Normalized images per row (clean, image+patch, patch-only, a training batch) and the
    labels of the columns. A sample-wise patch shows poisoned training images, each with its
    own pattern (the one it trains with) in every row. ``training``: one training-batch row
    per augmentation pipeline, as the trainer prepares a batch (default: one row, no
    augmentations), each from the same patch draws."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data.y_train), generator=gen)
    if patch.sample_wise:
        order = order[patch.poison_mask(order, "train")]
    idx = order[:n]
    normalize = data.normalizer(torch.device("cpu"))
    clean, y = normalize(data.x_train[idx]), data.y_train[idx]
    own = idx if patch.sample_wise else None
    state = gen.get_state()
    batches = {}
    for label, augs, augment_first in training or [("training batch", [], False)]:
        gen.set_state(state)
        x = augment(augs, clean, gen) if augment_first else clean
        x, _ = check_apply(patch, x, y, patch.apply(x, y, idx, "train", gen),
                           len(data.classes), labels_in_range=False)
        batches[label] = x if augment_first else augment(augs, x, gen)
    return {"clean": clean, "image + patch": stamp(patch, clean, y, gen, own),
            "patch only": patch_only(patch, y, data.image_shape, gen, own),
            **batches}, y


def augment(augs: list[Augmentation], x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    for aug in augs:
        x = check_images(aug, "apply", x, aug.apply(x, gen))
    return x


def save_preview(data: DataBundle, patch: PatchGenerator, out: Path, n: int = 8,
                 title: str = "", training: list[Pipeline] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, labels = preview_rows(data, patch, n, training=training)
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
