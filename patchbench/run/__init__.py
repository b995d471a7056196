"""Stage 4, the run: drive a grid from a resolved spec to stored records.

``driver`` (:func:`run_spec`) plans the grid, skips what is done, preflights, hands
``jobs`` to an executor (``executors``: local, or ``ray_executor``), stores each record
(``records``: results with their provenance) as it arrives and shows ``progress``.
"""

from .driver import run_spec

__all__ = ["run_spec"]
