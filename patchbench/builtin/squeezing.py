"""Built-in image squeezing (Liu et al. 2023, "Image Shortcut Squeezing", liuzrcc/
ImageShortcutSqueezing; APBench's gray and jpeg): grayscale and JPEG compression of each
training image, as PIL does them on the 8-bit images those references train from.

Both turn the batch back into 8-bit pixels first (the normalization undone, rounded), as
the references squeeze the stored 8-bit poisoned images; the result is normalized again.
Grayscale is PIL's integer luma (ITU-R 601-2) on the device; JPEG goes through torchvision's
libjpeg encoder and decoder (nvJPEG on a CUDA device): the same codec as PIL, so the same
quantization tables for a quality.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from .. import hookimpl
from ..components import Augmentation, DataBundle, Params, image_dims
from ..errors import PatchbenchError

LUMA = (19595, 38470, 7471)
"""PIL's RGB -> L weights in 1/65536 (0.299, 0.587, 0.114), rounded as PIL rounds them."""


class Pixels:
    """Normalized float images <-> 8-bit pixels of the dataset's normalization."""

    def __init__(self, data: DataBundle, device: torch.device):
        spatial = [1] * (len(data.image_shape) - 1)
        self.mean = torch.tensor(data.mean, device=device).view(1, -1, *spatial)
        self.std = torch.tensor(data.std, device=device).view(1, -1, *spatial)

    def to_uint8(self, x: Tensor) -> Tensor:
        return ((x.float() * self.std + self.mean) * 255).round().clamp(0, 255).to(torch.uint8)

    def to_normalized(self, pixels: Tensor, dtype: torch.dtype) -> Tensor:
        return ((pixels.float() / 255 - self.mean) / self.std).to(dtype)


def _rgb_images(data: DataBundle, name: str) -> None:
    channels, _, _ = image_dims(data.image_shape, "augmentations", f"augmentation {name!r}")
    if channels != 3:
        raise PatchbenchError(f"augmentations: {name} takes RGB images; this dataset's have "
                              f"{channels} channels")


class Grayscale(Augmentation):
    """Grayscale, kept as 3 channels: PIL's luma L = 0.299 R + 0.587 G + 0.114 B of the 8-bit
    image in every channel (ISS's and APBench's gray)."""

    name = "grayscale"
    pixels: Pixels

    def setup(self, data: DataBundle, device: torch.device) -> None:
        _rgb_images(data, self.name)
        self.pixels = Pixels(data, device)

    def apply(self, x: Tensor, gen: torch.Generator) -> Tensor:
        rgb = self.pixels.to_uint8(x).int()
        weights = torch.tensor(LUMA, device=x.device, dtype=torch.int32).view(1, 3, 1, 1)
        luma = ((rgb * weights).sum(1, keepdim=True) + 0x8000) >> 16
        return self.pixels.to_normalized(luma.expand_as(rgb), x.dtype)


class JpegParams(Params):
    quality: int = Field(10, ge=1, le=100)
    """JPEG quality 1-100 (ISS's and APBench's setting: 10)."""


class Jpeg(Augmentation):
    """JPEG compression of each image at a quality (default 10, ISS's JPEG-10), then decoded:
    libjpeg through torchvision, as PIL encodes."""

    name = "jpeg"
    Params = JpegParams
    pixels: Pixels

    def setup(self, data: DataBundle, device: torch.device) -> None:
        _rgb_images(data, self.name)
        self.pixels = Pixels(data, device)

    def apply(self, x: Tensor, gen: torch.Generator) -> Tensor:
        from torchvision.io import decode_jpeg, encode_jpeg

        pixels = self.pixels.to_uint8(x)
        # The list API: one call into the codec for the whole batch (its loop is C++).
        encoded = encode_jpeg(list(pixels.contiguous().unbind()), quality=self.params.quality)
        if x.device.type != "cuda":
            encoded = [e.cpu() for e in encoded]
        decoded = torch.stack(decode_jpeg(encoded, device=x.device))
        return self.pixels.to_normalized(decoded, x.dtype)


@hookimpl
def register_augmentations(register) -> None:
    register(Grayscale)
    register(Jpeg)
