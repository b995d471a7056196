"""Whole files or none: every file patchbench writes (checkpoints, exports, artifacts)
goes through :func:`write_atomically`, so a kill or a full disk never leaves a partial file
in place of a good one."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from .errors import NoSpace


def write_atomically(path: Path, data: bytes | memoryview, hint: str = "") -> None:
    """``data`` to ``path`` through a temporary file and a rename; lack of space is
    :class:`NoSpace` naming ``path``, and the partial temporary file is removed."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise NoSpace(f"{path}: cannot write: no space left on the device"
                          + (f"; {hint}" if hint else "")) from None
        raise
