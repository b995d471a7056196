"""The patchbench plugin: registered through the `patchbench` entry-point group."""

from patchbench import hookimpl

from .ar import AR
from .em import EM
from .lsp import LSP
from .ops import OPS


@hookimpl
def register_patches(register):
    for cls in (EM, LSP, AR, OPS):
        register(cls)
