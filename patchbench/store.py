"""The result store for your own code: ``Store.in_dir("runs/smoke").records()`` gives every
usable trial record of an output directory, ``load_records`` those of several. Defined in
:mod:`patchbench.results.store`; this module is its stable public name."""

from .results.store import STORE_NAME, Store, load_records, read_export, write_export

__all__ = ["STORE_NAME", "Store", "load_records", "read_export", "write_export"]
