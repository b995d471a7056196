"""Every extension point of patchbench, one hook per component kind.

Each hook fires once, when the plugin manager builds the component registry (the first
time the CLI or the API needs a component). A hook receives ``register``, a callback owned by
the host: call it with each component class the plugin provides. Because the host owns the
callback, it records which plugin, distribution and version gave each component.

A plugin is a module (or object) with functions decorated by :data:`patchbench.hookimpl`,
exposed to patchbench through the ``patchbench`` entry-point group::

    [project.entry-points.patchbench]
    my_plugin = "my_package.plugin"
"""

from __future__ import annotations

from typing import Callable

import pluggy

hookspec = pluggy.HookspecMarker("patchbench")

Register = Callable[[type], None]


@hookspec
def register_datasets(register: Register) -> None:
    """Register dataset classes (subclasses of :class:`patchbench.components.Dataset`).

    Fires once when the registry is built. A dataset returns its train and test images as
    uint8 tensors plus the normalization the paper's patch is expressed in.
    """


@hookspec
def register_patches(register: Register) -> None:
    """Register patch generators (subclasses of :class:`patchbench.components.PatchGenerator`).

    Fires once when the registry is built. A patch generator modifies a batch of normalized
    images on the device with tensor ops, and can stamp a chosen class's patch for evaluation.
    """


@hookspec
def register_architectures(register: Register) -> None:
    """Register architectures (subclasses of :class:`patchbench.components.Architecture`).

    Fires once when the registry is built. An architecture builds an ``nn.Module`` that maps
    a batch of images to class logits. A name used as ``name:variant`` in a spec (for example
    ``timm:resnet18``) is looked up as ``name`` and receives ``variant``.
    """


@hookspec
def register_schedules(register: Register) -> None:
    """Register learning-rate schedules (subclasses of :class:`patchbench.components.Schedule`).

    Fires once when the registry is built. A schedule is a pure function of the global step.
    """


@hookspec
def register_metrics(register: Register) -> None:
    """Register metrics (subclasses of :class:`patchbench.components.Metric`).

    Fires once when the registry is built. Metrics are evaluated after each epoch; each
    documents its exact denominator.
    """


@hookspec
def register_regularizers(register: Register) -> None:
    """Register regularizers (subclasses of :class:`patchbench.components.Regularizer`).

    Fires once when the registry is built. A regularizer attaches to a model for training
    (for example activation noise through forward hooks) and is told the current epoch.
    """


@hookspec
def register_optimizers(register: Register) -> None:
    """Register optimizers (subclasses of :class:`patchbench.components.Optimizer`).

    Fires once when the registry is built. An optimizer builds a ``torch.optim.Optimizer``
    for a model's parameters and takes one training step with it, given a function that
    runs the forward pass and returns the loss (SAM calls it twice).
    """


@hookspec
def register_augmentations(register: Register) -> None:
    """Register augmentations (subclasses of :class:`patchbench.components.Augmentation`).

    Fires once when the registry is built. An augmentation transforms a batch of normalized
    training images on the device with batched tensor ops (random crop, flip); evaluation
    never sees it.
    """


@hookspec
def register_perturbations(register: Register) -> None:
    """Register perturbations (subclasses of :class:`patchbench.components.Perturbation`).

    Fires once when the registry is built. A perturbation changes each training batch
    against the current model just before the optimizer step (adversarial training's PGD).
    """


@hookspec
def register_trackers(register: Register) -> None:
    """Register trackers (subclasses of :class:`patchbench.components.Tracker`).

    Fires once when the registry is built. A tracker sends each trial's params, per-epoch
    metrics and final results to an experiment tracker (TensorBoard, MLflow, W&B, ...); the
    driver feeds it, off the training loop, and a spec names it under ``tracking:``.
    """
