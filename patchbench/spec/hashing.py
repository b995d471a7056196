"""The spec hash: identical science, identical hash, whatever the version of patchbench
that wrote the spec (fields added later leave the hash alone while they hold their default)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .models import NOT_SCIENCE, RECIPE_DEFAULTS, Spec


def resolved_dict(spec: Spec) -> dict[str, Any]:
    return spec.model_dump(mode="json")


def spec_hash(spec: Spec) -> str:
    """Hash of the resolved spec minus where results go, where trials run and the pointer to
    a reduced variant: identical science, identical hash."""
    data = resolved_dict(spec)
    for key in NOT_SCIENCE:
        data.pop(key, None)
    if not data.get("sweep"):  # no sweep: hashes stay as before sweeps existed
        data.pop("sweep", None)
    if data["evaluation"].get("learned_metric") is None:  # the default: hashes stay as before
        data["evaluation"].pop("learned_metric", None)
    for arm in data["arms"]:  # the same for the recipe options that came later
        for key, default in RECIPE_DEFAULTS.items():
            if arm.get(key) == default:
                arm.pop(key)
        if arm["optimizer"].get("name") == "sgd":
            arm["optimizer"].pop("name")
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]

