"""Preflight: do the spec's components fit the data and each other, before anything trains?

:func:`check_inputs`: each architecture is built and run forward once on a small batch of the
dataset's input shape (eval mode, CPU, no grad). A model that cannot take the inputs (a
vision transformer built for 224x224 given 32x32 images) is bad input: one line naming the
field and, where the architecture knows it, what to set, exit 2, no failed trials recorded.
It runs inside a forked RNG, so the global state that trials' initialization uses is the same
as without it. :func:`preflight`: each patch, augmentation and regularizer is set up once.

Errors that look like a bug in a component (a TypeError, a NameError) are left to the trials,
which record them with their tracebacks.
"""

from __future__ import annotations

from typing import Any

import torch

from ..boundary import check_apply
from ..components import DataBundle
from ..errors import PatchbenchError
from ..plugins import Registry
from ..spec import Spec

INPUT_ERRORS = (RuntimeError, AssertionError, ValueError, IndexError)
"""What models raise for inputs of the wrong shape: torch's shape checks (RuntimeError), timm's
``_assert`` (AssertionError), einops and size checks (ValueError, IndexError)."""
BATCH_PATCHED = 64
"""Images in the one patched batch ``validate`` tries on stand-in data."""
BATCH = 2  # BatchNorm in eval mode takes any batch; 2 keeps a squeeze(0) bug visible


def shape_text(image_shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in image_shape)


def check_inputs(spec: Spec, image_shape: tuple[int, ...], num_classes: int,
                 registry: Registry, spec_path: str) -> None:
    """Raise PatchbenchError naming ``architectures[i]`` for the first architecture that cannot
    take a batch of ``image_shape`` inputs."""
    with torch.random.fork_rng(devices=[]):
        for i, ref in enumerate(spec.architectures):
            arch = registry.build("architectures", ref.name, ref.params)
            where = f"{spec_path}: architectures[{i}] ({arch.label()})"
            try:
                problem = _forward_problem(arch, num_classes, image_shape)
            except PatchbenchError as exc:  # from build: its message names the field itself
                raise PatchbenchError(f"{spec_path}: {exc}") from None
            if problem is None:
                continue
            hint = arch.fit_inputs(num_classes, image_shape)
            todo = "; ".join(f"set architectures[{i}].params.{k}: {_yaml(v)}"
                             for k, v in hint.items())
            raise PatchbenchError(f"{where}: cannot take {shape_text(image_shape)} inputs: "
                                  f"{problem}" + (f"; {todo}" if todo else ""))


def _forward_problem(arch: Any, num_classes: int, image_shape: tuple[int, ...]) -> str | None:
    """Why one forward pass fails on such inputs, in one line; None when it works or when the
    failure looks like a bug (left to the trials)."""
    try:
        model = arch.build(num_classes, image_shape)
    except PatchbenchError:
        raise
    except Exception:  # noqa: BLE001 - a model that cannot even be built fails as itself
        return None
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, *image_shape, generator=gen)
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    except INPUT_ERRORS as exc:
        lines = str(exc).strip().splitlines()
        return (lines[0].rstrip(".") if lines else type(exc).__name__) or type(exc).__name__
    except Exception:  # noqa: BLE001 - see the module docstring
        return None
    return None


def _yaml(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def check_declared_inputs(spec: Spec, registry: Registry, spec_path: str) -> None:
    """``check_inputs`` and :func:`check_declared_patches` for ``validate``, which loads no
    data: on the inputs the dataset declares (the built-ins do), else not at all."""
    dataset = registry.build("datasets", spec.dataset.name, spec.dataset.params)
    declared = dataset.declared_inputs()
    if declared is not None:
        check_inputs(spec, declared[0], declared[1], registry, spec_path)
        check_declared_patches(spec, declared[0], declared[1], registry, spec_path)


def stand_in_data(image_shape: tuple[int, ...], num_classes: int, n: int = 256) -> DataBundle:
    """Random uint8 inputs of a declared shape, every class present: what ``validate`` sets
    patch generators up on instead of the dataset it does not load."""
    n = max(n, 8 * num_classes)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (2 * n, *image_shape), generator=gen, dtype=torch.uint8)
    y = torch.arange(2 * n) % num_classes
    channels = image_shape[0]
    return DataBundle(x[:n], y[:n], x[n:], y[n:], (0.5,) * channels, (0.25,) * channels,
                      [str(c) for c in range(num_classes)])


def check_declared_patches(spec: Spec, image_shape: tuple[int, ...], num_classes: int,
                           registry: Registry, spec_path: str) -> None:
    """Each patch generator's ``setup`` and ``apply`` on one training batch of stand-in data
    of the declared shape, its output checked as a run checks it: a patch larger than the
    images is bad input found by ``validate``. A bug is left to the trials (as
    :func:`preflight`)."""
    if not spec.patches:
        return
    data, cpu = stand_in_data(image_shape, num_classes), torch.device("cpu")
    idx = torch.arange(min(BATCH_PATCHED, len(data.y_train)))
    x, y = data.normalizer(cpu)(data.x_train[idx]), data.y_train[idx]
    with torch.random.fork_rng(devices=[]):
        for i, ref in enumerate(spec.patches):
            patch = registry.build("patches", ref.name, ref.params)
            try:
                patch.setup(data, cpu)
                out = patch.apply(x.clone(), y.clone(), idx, "train",
                                  torch.Generator().manual_seed(0))
                check_apply(patch, x, y, out, num_classes, labels_in_range=True)
            except PatchbenchError as exc:
                where = f"patch[{i}] ({ref.name})" if len(spec.patches) > 1 else \
                    f"patch ({ref.name})"
                raise PatchbenchError(f"{spec_path}: {where} on {shape_text(image_shape)} "
                                      f"inputs: {exc}") from None
            except Exception:  # noqa: BLE001 - see the module docstring
                continue


def preflight(spec: Spec, data: DataBundle, registry: Registry, spec_path: str) -> None:
    """Set up each patch, augmentation and perturbation and attach each arm's regularizers to each
    architecture once, before any training, so components that do not fit together (a patch
    too large for the images, a crop of feature vectors, activation noise on a model without
    ReLUs) are bad input found in seconds, with exit 2,
    not failed trials found hours in. A bug is left to the trial that meets it, which records
    it with its traceback while the rest of the grid trains."""
    cpu = torch.device("cpu")
    try:
        with torch.random.fork_rng(devices=[]):  # the trials' RNG is not this check's
            for ref in spec.patches:
                registry.build("patches", ref.name, ref.params).setup(data, cpu)
            for aug in (a for arm in spec.arms for a in arm.augmentations):
                registry.build("augmentations", aug.name, aug.params).setup(data, cpu)
            for ref in (arm.perturbation for arm in spec.arms if arm.perturbation):
                registry.build("perturbations", ref.name, ref.params).setup(data, cpu)
            for arch in spec.architectures:
                model = registry.build("architectures", arch.name, arch.params).build(
                    data.num_classes, data.image_shape)
                for reg in (r for arm in spec.arms for r in arm.regularizers):
                    registry.build("regularizers", reg.name, reg.params).attach(model)
    except PatchbenchError as exc:
        raise PatchbenchError(f"{spec_path}: {exc}") from None
    except Exception:  # noqa: BLE001 - see the docstring
        pass
