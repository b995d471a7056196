"""Built-in trackers, each behind its optional extra: TensorBoard (``.[tensorboard]``),
MLflow (``.[mlflow]``) and Weights & Biases (``.[wandb]``). Their packages are imported when
a grid uses them, so that patchbench runs, and lists them, without any of the three."""

from __future__ import annotations

from .. import hookimpl
from .mlflow_tracker import Mlflow
from .tb_tracker import TensorBoard
from .wandb_tracker import Wandb


@hookimpl
def register_trackers(register) -> None:
    for cls in (TensorBoard, Mlflow, Wandb):
        register(cls)
