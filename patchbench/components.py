"""The plugin API in one import: the interface of every component kind.

Plugins import what they implement from here (``from patchbench.components import
PatchGenerator, Params``). The bases are defined in :mod:`patchbench.kinds`, and
:class:`Metric` with the :class:`~patchbench.evaluation.EvalContext` it computes from in
:mod:`patchbench.evaluation`; this module names them together, with the table of kinds the
host registers them under.
"""

from __future__ import annotations

from .data import DataBundle, image_dims
from .evaluation import Metric
from .kinds import (Architecture, Augmentation, Component, Dataset, FixedSubsetPatch,
                    LabelMixing, Optimizer, Params, PatchGenerator, Perturbation, Regularizer,
                    Schedule, finite_float32)
from .tracking import TrackedTrial, Tracker, TrackingContext

KINDS: dict[str, type[Component]] = {
    cls.kind: cls
    for cls in (Dataset, PatchGenerator, Architecture, Schedule, Metric, Regularizer,
                Optimizer, Augmentation, Perturbation, Tracker)
}

KIND_ALIASES: dict[str, str] = {"patch": "patches", "dataset": "datasets",
                                "architecture": "architectures", "schedule": "schedules",
                                "metric": "metrics", "regularizer": "regularizers",
                                "optimizer": "optimizers", "augmentation": "augmentations",
                                "perturbation": "perturbations", "tracker": "trackers"}


def singular(kind: str) -> str:
    return {"patches": "patch generator"}.get(kind, kind[:-1])


__all__ = ["Params", "Component", "DataBundle", "Dataset", "PatchGenerator", "FixedSubsetPatch",
           "Architecture", "Schedule", "Regularizer", "Metric", "Optimizer", "Augmentation",
           "LabelMixing", "Perturbation", "Tracker", "TrackedTrial", "TrackingContext",
           "KINDS", "KIND_ALIASES", "image_dims", "finite_float32", "singular"]
