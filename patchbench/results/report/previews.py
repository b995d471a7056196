"""The preview grid of patched inputs, rebuilt from the spec stored in the records.

A report is made where the results are, which may not be where the data is: whatever stops the
preview (a dataset that is not here, a plugin that is not installed, feature vectors instead
of images) becomes a note on the page instead of an error.
"""

from __future__ import annotations

import base64
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ...crafting import use_crafted
from ...errors import PatchbenchError
from ...plugins import Registry
from ...spec import Spec
from ..preview import save_preview


@dataclass
class Preview:
    patch: str
    data_uri: str


def previews(spec: dict[str, Any], registry: Registry, n: int = 8,
             artifacts: dict[str, str] | None = None) -> tuple[list[Preview], str]:
    """One PNG (as a data: URI) per patch generator of the spec, or none and why not."""
    import torch

    try:
        parsed = Spec.model_validate(spec)
    except ValidationError as exc:
        return [], (f"the stored spec does not validate with this version of patchbench "
                    f"({exc.error_count()} problems)")
    if not parsed.patches:
        return [], "the spec has no patch generator"
    try:
        entry = registry.get("datasets", parsed.dataset.name)
        params = dict(parsed.dataset.params)
        # Never download while making a page: a missing dataset is only a missing preview.
        if "download" in entry.cls.Params.model_fields:
            params["download"] = False
        data = registry.build("datasets", parsed.dataset.name, params).load()
        if len(data.image_shape) != 3:
            return [], (f"{parsed.dataset.name} gives feature vectors of shape "
                        f"{tuple(data.image_shape)}, not images")
        out = []
        with tempfile.TemporaryDirectory() as tmp:
            for ref in parsed.patches:
                patch = registry.build("patches", ref.name, ref.params)
                use_crafted(patch, artifacts or {}, torch.device("cpu"))
                patch.setup(data, torch.device("cpu"))
                png = Path(tmp) / f"{ref.name}.png"
                save_preview(data, patch, png, n, title=f"{parsed.name}: {ref.name}")
                out.append(Preview(ref.name, "data:image/png;base64,"
                                   + base64.b64encode(png.read_bytes()).decode()))
        return out, ""
    except (PatchbenchError, ValidationError) as exc:
        return [], f"not drawn here: {str(exc).splitlines()[0]}"
