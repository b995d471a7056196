"""Attack success rate, with the denominator stated."""

from __future__ import annotations

from patchbench.components import Metric
from patchbench.evaluation import EvalContext, accuracy


class AttackSuccessRate(Metric):
    """Fraction of triggered test images predicted as the attacker's target (denominator:
    test images whose true class differs from their target, so target-class images never
    count as successes). None for patch generators without a target."""

    name = "attack_success_rate"
    needs_patch = True
    higher_is_better = False  # for the defender: lower means the model ignores the trigger
    may_be_undefined = True
    short = "ASR"

    def compute(self, ctx: EvalContext) -> float | None:
        patch, d = ctx.patch, ctx.data
        if not hasattr(patch, "target_for"):
            return None
        target = patch.target_for(d.y_test)
        keep = target != d.y_test
        preds = ctx.cached("attack_success_rate", lambda: ctx.predict(
            len(d.y_test), lambda s, g: patch.stamp(ctx.normalize(d.x_test[s]), target[s], g),
            "attack_success_rate"))
        return accuracy(preds[keep], target[keep])
