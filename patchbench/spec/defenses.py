"""A spec's ``defenses``: each defense crossed with every arm, as arms of their own.

A defense adds to an arm's recipe: augmentations before the arm's own (image squeezing, as
ISS and APBench squeeze before crop and flip), after them (cutout, which APBench applies
last), and a perturbation (adversarial training). ``large_lr`` with defense ``jpeg`` becomes
the arm ``large_lr-jpeg``, marked ``defense: {name: jpeg, of: large_lr}`` so the leaderboard
pairs it with ``large_lr`` for the defense gain. The expansion happens on the raw spec,
after ``--set`` and before validation, so a derived arm is validated and hashed like any
other and the resolved spec lists it.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import Field, ValidationError, model_validator

from ..errors import SpecError, render_errors
from .models import ComponentRef, Strict


class Defense(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    before: list[ComponentRef] = Field(default_factory=list)
    """Augmentations put before the arm's own (on the poisoned image)."""
    after: list[ComponentRef] = Field(default_factory=list)
    """Augmentations put after the arm's own."""
    perturbation: ComponentRef | None = None
    """A perturbation (pgd) for every training batch."""
    control: bool | None = None
    """Also train the defended arm without the patch (default: as the arm says)."""

    @model_validator(mode="after")
    def _does_something(self) -> "Defense":
        if not (self.before or self.after or self.perturbation):
            raise ValueError("a defense needs at least one of before, after, perturbation")
        return self


class Defenses(Strict):
    defenses: list[Defense] = Field(default_factory=list)


def expand_defenses(data: dict[str, Any], source: str) -> None:
    """Replace ``data['defenses']`` by one arm per arm and defense, each after its arm."""
    if "defenses" not in data:
        return
    try:
        defenses = Defenses.model_validate({"defenses": data.pop("defenses")}).defenses
    except ValidationError as exc:
        raise SpecError(source, render_errors(exc, Defenses)) from None
    names = [d.name for d in defenses]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise SpecError(source, [f"defenses: names must be unique; repeated: "
                                 f"{', '.join(repeated)}"])
    arms = data.get("arms")
    if not isinstance(arms, list) or not all(isinstance(a, dict) for a in arms):
        return  # the spec's own validation names what is wrong with arms
    out, problems = [], []
    for arm in arms:
        out.append(arm)
        if arm.get("defense") is not None:
            continue
        for i, d in enumerate(defenses):
            derived, why = _defended(arm, d)
            if why:
                problems.append(f"defenses[{i}] ({d.name}) with arm {arm.get('name')!r}: {why}")
            else:
                out.append(derived)
    if problems:
        raise SpecError(source, problems)
    data["arms"] = out


def _defended(arm: dict[str, Any], d: Defense) -> tuple[dict[str, Any], str | None]:
    derived = copy.deepcopy(arm)
    derived["name"] = f"{arm.get('name')}-{d.name}"
    derived["defense"] = {"name": d.name, "of": arm.get("name")}
    own = list(arm.get("augmentations") or [])
    added = d.before or d.after
    derived["augmentations"] = [r.model_dump() for r in d.before] + own + \
        [r.model_dump() for r in d.after]
    if added:
        if arm.get("augment_order") == "before_patch":
            return derived, ("the arm augments before the patch, but a defense acts on the "
                             "poisoned image; allowed: augment_order after_patch")
        derived["augment_order"] = "after_patch"
    if d.perturbation is not None:
        if arm.get("perturbation") is not None:
            return derived, "the arm has a perturbation already; allowed: one per arm"
        derived["perturbation"] = d.perturbation.model_dump()
    if d.control is not None:
        derived["control"] = d.control
    return derived, None
