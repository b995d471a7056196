"""Stage 1, the spec: YAML in, a validated, resolved grid of trials out.

``load_spec`` reads a file (``loading``: safe YAML, ``--set`` paths, validation against the
``models``, ``resolve`` against the registry, ``sweep`` expansion); ``plan`` lists its trials;
``spec_hash`` names its science (``hashing``). Nothing here trains or reads results.
"""

from .hashing import resolved_dict, spec_hash
from .loading import load_spec
from .models import Arm, ComponentRef, OptimizerRef, Spec
from .paths import apply_override
from .plan import Trial, plan, plan_trials
from .resolve import resolve

__all__ = ["Spec", "Arm", "ComponentRef", "OptimizerRef", "Trial", "load_spec", "apply_override",
           "resolve", "resolved_dict", "spec_hash", "plan", "plan_trials"]
