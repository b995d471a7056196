"""Built-in architectures: the authors' WideResNet and any timm model (`timm:<name>`)."""

from __future__ import annotations

import difflib
import math
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import Tensor, nn

from .. import hookimpl
from ..components import Architecture, Params, image_dims
from ..errors import PatchbenchError


class BasicBlock(nn.Module):
    """Pre-activation block of the authors' models/wideresnet.py, with their dropout: between
    the two convolutions (after the second ReLU), while training only."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = self.built_dropout = dropout  # the `dropout` regularizer may set it
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.equal_in_out = in_planes == out_planes
        self.shortcut = None if self.equal_in_out else \
            nn.Conv2d(in_planes, out_planes, 1, stride, 0, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.equal_in_out:
            out = self.relu1(self.bn1(x))
        else:
            # As in the authors' code, the projection shortcut sees the activated input.
            x = out = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(out)))
        if self.dropout > 0:  # no op (and no RNG draw) at rate 0, as in the authors' code
            out = F.dropout(out, p=self.dropout, training=self.training)
        out = self.conv2(out)
        return (x if self.shortcut is None else self.shortcut(x)) + out


class WideResNet(nn.Module):
    def __init__(self, depth: int, width: int, num_classes: int, in_channels: int = 3,
                 dropout: float = 0.0):
        super().__init__()
        n = (depth - 4) // 6
        channels = [16, 16 * width, 32 * width, 64 * width]
        self.conv1 = nn.Conv2d(in_channels, channels[0], 3, 1, 1, bias=False)
        blocks = []
        for i, stride in enumerate((1, 2, 2)):
            blocks += [BasicBlock(channels[i] if j == 0 else channels[i + 1], channels[i + 1],
                                  stride if j == 0 else 1, dropout) for j in range(n)]
        self.blocks = nn.Sequential(*blocks)
        self.bn1 = nn.BatchNorm2d(channels[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(channels[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.blocks(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


class WRNParams(Params):
    added_later = ("dropout",)

    depth: int = 16
    width: int = Field(10, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout rate inside each block, between its two convolutions, while training (the
    authors' plain-CIFAR script: 0.4 when enabled; their patch experiment: none)."""

    @field_validator("depth")
    @classmethod
    def _depth(cls, value: int) -> int:
        if value < 10 or (value - 4) % 6:
            raise ValueError("depth must be 6n+4 with n >= 1 (10, 16, 22, 28, ...)")
        return value


class WRN(Architecture):
    """WideResNet-depth-width as in the authors' code: pre-activation blocks, He-normal init."""

    name = "wrn"
    Params = WRNParams

    def build(self, num_classes: int, image_shape: tuple[int, int, int]) -> nn.Module:
        channels = image_dims(image_shape, "architectures", self.label())[0]
        return WideResNet(self.params.depth, self.params.width, num_classes, channels,
                          self.params.dropout)

    def label(self) -> str:
        base = f"wrn-{self.params.depth}-{self.params.width}"
        return f"{base}-drop{self.params.dropout:g}" if self.params.dropout else base


class TimmParams(Params):
    added_later = ("img_size", "patch_size", "drop_path_rate", "kwargs")

    adapt_stem: bool = True
    """Replace an ImageNet stem by a 3x3 stride-1 conv and drop the stem max-pool."""
    drop_rate: float = Field(0.0, ge=0, lt=1)
    img_size: int | None = Field(None, ge=1)
    """Input size the model is built for (vision transformers: set it to the images' size,
    e.g. 32). None: timm's default for the model."""
    patch_size: int | None = Field(None, ge=1)
    """Vision transformers: pixels per patch side (e.g. 4 for 32x32 images). None: timm's."""
    drop_path_rate: float | None = Field(None, ge=0, lt=1)
    """Stochastic depth rate. None: timm's default for the model."""
    kwargs: dict[str, Any] = Field(default_factory=dict)
    """Other arguments of timm.create_model, passed as given (e.g. depth: 4 for a shallower
    ViT); the names above and num_classes, in_chans, pretrained are not allowed here."""

    @field_validator("kwargs")
    @classmethod
    def _kwargs(cls, value: dict[str, Any]) -> dict[str, Any]:
        owned = {"num_classes", "in_chans", "pretrained", "pretrained_cfg", "checkpoint_path",
                 "pretrained_cfg_overlay", "drop_rate", "img_size", "patch_size",
                 "drop_path_rate"}
        clash = sorted(owned & set(value))
        if clash:
            raise ValueError(f"{', '.join(clash)}: not allowed in kwargs (set by patchbench or "
                             "a param of its own)")
        return value

    def create_args(self) -> dict[str, Any]:
        """The creation arguments beyond today's (drop_rate), only those set, so that models
        built without them are unchanged."""
        extra = {k: getattr(self, k) for k in ("img_size", "patch_size", "drop_path_rate")
                 if getattr(self, k) is not None}
        return {**extra, **self.kwargs}


def _get_module(model: nn.Module, dotted: str) -> nn.Module | None:
    try:
        return model.get_submodule(dotted)
    except AttributeError:
        return None


def _set_module(model: nn.Module, dotted: str, module: nn.Module) -> None:
    parent, _, child = dotted.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def adapt_stem(model: nn.Module) -> bool:
    """Make an ImageNet stem suit 32x32 inputs; return whether anything changed."""
    first = (getattr(model, "pretrained_cfg", None) or {}).get("first_conv")
    changed = False
    conv = _get_module(model, first) if isinstance(first, str) else None
    if isinstance(conv, nn.Conv2d) and not first.startswith("patch_embed") and \
            (conv.stride != (1, 1) or conv.kernel_size != (3, 3)):
        _set_module(model, first, nn.Conv2d(conv.in_channels, conv.out_channels, 3, 1, 1,
                                            bias=conv.bias is not None))
        changed = True
    for name in ("maxpool", "stem.pool", "stem.maxpool"):
        if isinstance(_get_module(model, name), nn.MaxPool2d):
            _set_module(model, name, nn.Identity())
            changed = True
    return changed


class Timm(Architecture):
    """Any timm model, as `timm:<model name>`, randomly initialized, stem adapted to 32x32."""

    name = "timm"
    Params = TimmParams
    accepts_variant = True

    @classmethod
    def check_variant(cls, variant: str) -> None:
        import timm

        available = timm.list_models()
        if variant not in available:
            close = difflib.get_close_matches(variant, available, n=5, cutoff=0.6)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise PatchbenchError(f"unknown timm model {variant!r}{hint} "
                                  "(`python -c 'import timm; print(timm.list_models())'` "
                                  "lists them)")

    def label(self) -> str:
        extra = self.params.create_args()
        args = ",".join(f"{k}={v}" for k, v in sorted(extra.items()))
        return f"timm:{self.variant}({args})" if extra else f"timm:{self.variant}"

    def build(self, num_classes: int, image_shape: tuple[int, int, int]) -> nn.Module:
        return self._create(self.params.create_args(), num_classes, image_shape)

    def fit_inputs(self, num_classes: int, image_shape: tuple[int, ...]) -> dict[str, Any]:
        """img_size = the images' size, when the model then takes them (vision transformers
        are built for a fixed size, 224 by default)."""
        if len(image_shape) != 3 or image_shape[1] != image_shape[2] or \
                self.params.img_size == image_shape[1]:
            return {}
        size = image_shape[1]
        try:
            model = self._create({**self.params.create_args(), "img_size": size}, num_classes,
                                 image_shape).eval()
            with torch.no_grad():
                model(torch.zeros(2, *image_shape))
        except Exception:  # noqa: BLE001 - then img_size is not the answer
            return {}
        return {"img_size": size}

    def _create(self, extra: dict[str, Any], num_classes: int,
                image_shape: tuple[int, int, int]) -> nn.Module:
        import timm

        self.check_variant(self.variant or "")
        channels = image_dims(image_shape, "architectures", f"timm:{self.variant}")[0]
        try:
            model = timm.create_model(self.variant, pretrained=False, num_classes=num_classes,
                                      in_chans=channels, drop_rate=self.params.drop_rate,
                                      **extra)
        except TypeError as exc:
            if not extra or "argument" not in str(exc):
                raise
            # A creation argument this model does not take is bad input, not a bug.
            raise PatchbenchError(
                f"architectures: timm:{self.variant} does not take {', '.join(sorted(extra))} "
                f"({exc}); remove it from its params") from None
        if self.params.adapt_stem:
            adapt_stem(model)
        return model


@hookimpl
def register_architectures(register) -> None:
    register(WRN)
    register(Timm)
