"""The patchbench plugin: registered through the `patchbench` entry-point group."""

from patchbench import hookimpl

from .metrics import AttackSuccessRate
from .triggers import SIG, BadNets, Blend, WaNet


@hookimpl
def register_patches(register):
    for cls in (BadNets, Blend, SIG, WaNet):
        register(cls)


@hookimpl
def register_metrics(register):
    register(AttackSuccessRate)
