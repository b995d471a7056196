"""Built-in datasets: `synthetic` (no download, seconds to train), `cifar10` and `cifar100`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from .. import hookimpl
from ..components import DataBundle, Dataset, Params
from ..errors import PatchbenchError

# The authors' normalization (PAPER.md): the patch is written in these units.
CIFAR_MEAN = tuple(v / 255 for v in (125.3, 123.0, 113.9))
CIFAR_STD = tuple(v / 255 for v in (63.0, 62.1, 66.7))
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck"]
CIFAR100_CLASSES = tuple("""
apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly
camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile
cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp
lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree
orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine possum
rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake spider
squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor train
trout tulip turtle wardrobe whale willow_tree wolf woman worm""".split())
"""CIFAR-100's fine labels in label order (torchvision's ``CIFAR100.classes``)."""
DATA_DIR_ENV = "PATCHBENCH_DATA_DIR"


class SyntheticParams(Params):
    n_train: int = Field(2000, ge=10)
    n_test: int = Field(500, ge=10)
    num_classes: int = Field(10, ge=2)
    image_size: int = Field(32, ge=8)
    noise: float = Field(0.5, ge=0)
    """Per-pixel noise relative to the class templates' contrast."""
    max_shift: int = Field(3, ge=0)
    """Random translation of each image's template, in pixels."""
    seed: int = 0


class Synthetic(Dataset):
    """Class-conditional 32x32 RGB images drawn from a seed: a smooth per-class template,
    randomly shifted, plus noise. Learnable in a few epochs; no download."""

    name = "synthetic"
    Params = SyntheticParams

    def declared_inputs(self) -> tuple[tuple[int, ...], int]:
        return (3, self.params.image_size, self.params.image_size), self.params.num_classes

    def load(self) -> DataBundle:
        p = self.params
        gen = torch.Generator().manual_seed(p.seed)
        coarse = torch.randn(p.num_classes, 3, 4, 4, generator=gen)
        pad = p.max_shift
        size = p.image_size + 2 * pad
        templates = F.interpolate(coarse, size=(size, size), mode="bicubic",
                                  align_corners=False)

        def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
            y = torch.arange(n) % p.num_classes
            y = y[torch.randperm(n, generator=gen)]
            dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
            dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
            rows = (dy[:, None] + torch.arange(p.image_size))[:, None, :, None]
            cols = (dx[:, None] + torch.arange(p.image_size))[:, None, None, :]
            chans = torch.arange(3)[None, :, None, None]
            x = templates[y][torch.arange(n)[:, None, None, None], chans, rows, cols]
            x = x + p.noise * torch.randn(x.shape, generator=gen)
            img = (128 + 48 * x).round().clamp(0, 255).to(torch.uint8)
            return img, y.long()

        x_train, y_train = draw(p.n_train)
        x_test, y_test = draw(p.n_test)
        xf = x_train.float() / 255
        mean = tuple(xf.mean(dim=(0, 2, 3)).tolist())
        std = tuple(xf.std(dim=(0, 2, 3)).tolist())
        return DataBundle(x_train, y_train, x_test, y_test, mean, std,
                          [f"class{i}" for i in range(p.num_classes)])


class CifarParams(Params):
    data_dir: str | None = None
    """Folder holding the npz (cifar10.npz, cifar100.npz). Default: $PATCHBENCH_DATA_DIR,
    else the user cache."""
    train_size: int | None = Field(None, ge=1, le=50000)
    """Use a random subset of this many training images (reduced protocols)."""
    test_size: int | None = Field(None, ge=1, le=10000)
    """Evaluate on a random subset of this many test images (faster CPU protocols)."""
    subset_seed: int = 0
    download: bool = True
    """Download with torchvision when the npz is missing."""


Cifar10Params = CifarParams  # the name plugins and tests know


def default_data_dir() -> Path:
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "patchbench"


def _download(torchvision_class: str, folder: Path, npz: Path) -> None:
    import torchvision.datasets

    cls = getattr(torchvision.datasets, torchvision_class)
    folder.mkdir(parents=True, exist_ok=True)
    train = cls(str(folder), train=True, download=True)
    test = cls(str(folder), train=False, download=True)
    tmp = npz.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, x_train=train.data, y_train=np.asarray(train.targets, np.int64),
                        x_test=test.data, y_test=np.asarray(test.targets, np.int64))
    tmp.replace(npz)


class CifarNpz(Dataset):
    """A CIFAR dataset read from an npz in the data directory (x_train, y_train, x_test,
    y_test; HWC uint8 images, int64 labels), written once from torchvision's download when
    missing. Subclasses name the file, the torchvision class and the classes."""

    Params = CifarParams
    filename: ClassVar[str]
    title: ClassVar[str]
    torchvision_class: ClassVar[str]
    classes: ClassVar[tuple[str, ...]]

    def path(self) -> Path:
        folder = Path(self.params.data_dir).expanduser() if self.params.data_dir \
            else default_data_dir()
        return folder / self.filename

    def declared_inputs(self) -> tuple[tuple[int, ...], int]:
        return (3, 32, 32), len(self.classes)

    def load(self) -> DataBundle:
        npz = self.path()
        where = (f"put {self.filename} there, or set {DATA_DIR_ENV} or dataset.params.data_dir "
                 "to the folder that holds it")
        if not npz.exists():
            if not self.params.download:
                raise PatchbenchError(f"{self.title} not found: {npz} does not exist; {where}")
            try:
                _download(self.torchvision_class, npz.parent, npz)
            except Exception as exc:
                raise PatchbenchError(
                    f"{self.title} not found at {npz} and the download failed "
                    f"({type(exc).__name__}: {exc}); {where}") from None
        try:
            with np.load(npz, allow_pickle=False) as f:
                arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
        except (KeyError, ValueError, OSError) as exc:
            raise PatchbenchError(f"{npz}: not a valid {self.filename} ({exc})") from None
        x_train = torch.from_numpy(arrays["x_train"]).permute(0, 3, 1, 2).contiguous()
        y_train = torch.from_numpy(arrays["y_train"]).long()
        x_test = torch.from_numpy(arrays["x_test"]).permute(0, 3, 1, 2).contiguous()
        y_test = torch.from_numpy(arrays["y_test"]).long()
        gen = torch.Generator().manual_seed(self.params.subset_seed)
        if self.params.train_size is not None:
            keep = torch.randperm(len(y_train), generator=gen)[: self.params.train_size]
            x_train, y_train = x_train[keep], y_train[keep]
        if self.params.test_size is not None:
            keep = torch.randperm(len(y_test), generator=gen)[: self.params.test_size]
            x_test, y_test = x_test[keep], y_test[keep]
        # The authors normalize CIFAR-100 with CIFAR-10's statistics too (train_util.py).
        return DataBundle(x_train, y_train, x_test, y_test, CIFAR_MEAN, CIFAR_STD,
                          list(self.classes))


class Cifar10(CifarNpz):
    """CIFAR-10 from cifar10.npz in the data directory (downloaded once with torchvision)."""

    name = "cifar10"
    filename = "cifar10.npz"
    title = "CIFAR-10"
    torchvision_class = "CIFAR10"
    classes = tuple(CIFAR_CLASSES)


class Cifar100(CifarNpz):
    """CIFAR-100 (fine labels) from cifar100.npz in the data directory (downloaded once with
    torchvision)."""

    name = "cifar100"
    filename = "cifar100.npz"
    title = "CIFAR-100"
    torchvision_class = "CIFAR100"
    classes = CIFAR100_CLASSES


@hookimpl
def register_datasets(register) -> None:
    register(Synthetic)
    register(Cifar10)
    register(Cifar100)
