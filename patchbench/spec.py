"""Benchmark specs: YAML, validated by pydantic, with every component's params checked.

Errors name the file and the YAML path (``arms[1].schedule.params.milestones: ...``).
"""

from __future__ import annotations

import hashlib
import json
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PositiveInt, PrivateAttr, ValidationError,
                      field_validator, model_validator)

from .components import finite_float32
from .errors import PatchbenchError, SpecError
from .plugins import Registry, get_registry


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _finite_float32(cls, value: Any) -> Any:
        # Floats of the spec itself (component params are checked by their own Params,
        # which name the param).
        return finite_float32(value) if isinstance(value, float) else value


class ComponentRef(Strict):
    """A component by name with its params; a bare string is a name with default params."""

    name: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class Optimizer(Strict):
    """The arm's optimizer: a component (``name``, default sgd), the base LR the schedule
    scales, and the optimizer's params as further keys of the same mapping
    (``{name: adamw, lr: 1.0e-3, weight_decay: 0.05}``). ``resolve`` validates those keys
    against the optimizer's Params and stores them with their defaults filled in."""

    model_config = ConfigDict(extra="allow")

    name: str = Field("sgd", min_length=1)
    lr: float = Field(gt=0)

    @property
    def params(self) -> dict[str, Any]:
        """Every key but ``name`` and ``lr``: the optimizer's params."""
        return dict(self.__pydantic_extra__ or {})

    @params.setter
    def params(self, value: dict[str, Any]) -> None:
        self.__pydantic_extra__ = dict(value)


AUGMENT_ORDERS = {"after_patch": "poison, then augment, as BackdoorBench",
                  "before_patch": "augment the clean image, then patch it"}


class Arm(Strict):
    """One training recipe of the grid."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    optimizer: Optimizer
    schedule: ComponentRef = ComponentRef(name="constant")
    regularizers: list[ComponentRef] = Field(default_factory=list)
    augmentations: list[ComponentRef] = Field(default_factory=list)
    """Applied in order to each training batch (never in evaluation)."""
    augment_order: Literal["after_patch", "before_patch"] | None = None
    """Where augmentation goes relative to the patch; required when both are used."""
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    """Cross-entropy against (1 - s) * one-hot + s / classes (0: plain cross-entropy)."""
    control: bool = False
    """Also train this arm without the patch, to measure the patch cost."""


RECIPE_DEFAULTS = {"augmentations": [], "augment_order": None, "label_smoothing": 0.0}
"""Arm fields whose default is the recipe of specs written before they existed: dropped
from the hash while they hold it."""


class Training(Strict):
    epochs: PositiveInt
    batch_size: PositiveInt = 128
    precision: Literal["fp32", "bf16"] = "fp32"
    channels_last: bool = False
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    threads: PositiveInt | None = None
    """CPU threads; default: every core this process may use."""
    deterministic: bool = True


DEFAULT_LEARNED_METRIC = "patch_only_acc"
MAX_SPEC_BYTES = 1 << 20
MAX_YAML_DEPTH = 32
"""A spec is a few levels deep; far deeper input is hostile (5,000 levels overflow the
Python stack in the YAML composer)."""


class Evaluation(Strict):
    metrics: list[ComponentRef] = Field(min_length=1)
    every: PositiveInt = 1
    """Evaluate after every k-th epoch (the last epoch is always evaluated)."""
    batch_size: PositiveInt = 1000
    patch_learned_threshold: float = Field(0.9, gt=0, le=1)
    learned_metric: str | None = None
    """The metric whose first value >= the threshold is the epoch the pattern was learned
    (a metric's name, or its key when listed twice). Default: patch_only_acc."""
    seed: int = 0
    """Seed of the evaluation sets' random draws (patch signs, patch-only labels)."""

    def metric_keys(self) -> list[str]:
        """The name each metric's values are stored under: its name, or, for a metric
        listed more than once, its name with its params (``patch_only_acc(n=37)``)."""
        names = [m.name for m in self.metrics]
        return [m.name if names.count(m.name) == 1 else
                f"{m.name}({','.join(f'{k}={v}' for k, v in sorted(m.params.items()))})"
                for m in self.metrics]

    @property
    def learned_key(self) -> str:
        return self.learned_metric or DEFAULT_LEARNED_METRIC


class Execution(Strict):
    """Where trials run. Not part of the science: excluded from the spec hash."""

    executor: Literal["local", "ray"] = "local"
    """local: one trial after another in this process; ray: Ray core tasks."""
    address: str | None = None
    """Ray: a running cluster to join (default: $RAY_ADDRESS, else a local Ray is started)."""
    cpus_per_trial: float = Field(1.0, gt=0, le=1024)
    """Ray: CPUs reserved per trial; torch threads follow it unless training.threads is set."""
    gpus_per_trial: float | None = Field(None, ge=0, le=64)
    """Ray: GPUs per trial, fractions pack trials on one GPU (0.25: four). Default: 1 when
    the cluster has GPUs and training.device is not cpu, else 0."""
    max_retries: int = Field(3, ge=0, le=100)
    """Ray: how often a trial whose worker or node died is started again (it resumes from
    its last epoch checkpoint)."""


class Output(Strict):
    dir: Path | None = None
    """Default: runs/<benchmark name>, relative to the working directory."""


class Spec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    version: str
    description: str = ""
    dataset: ComponentRef
    patch: ComponentRef | list[ComponentRef] | None = None
    """One patch generator, or a list: each is a dimension of the grid."""
    architectures: list[ComponentRef] = Field(min_length=1)
    arms: list[Arm] = Field(min_length=1)
    training: Training
    evaluation: Evaluation
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    output: Output = Output()
    execution: Execution = Execution()
    reduced_spec: str | None = None
    """A cheaper variant of this benchmark (a path, relative to the working directory) that
    `run` names when this grid would take more than a day on the device at hand."""
    sweep: dict[str, list[Any]] = Field(default_factory=dict)
    """Field paths (the ``--set`` syntax, arms by name) to the values each takes; the grid
    runs every combination (see ``sweep.py``)."""
    _sweep_points: list[Any] = PrivateAttr(default_factory=list)
    """Each combination's resolved spec, made by ``load_spec`` from the raw spec."""

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
            else value

    @field_validator("version")
    @classmethod
    def _version_positive(cls, value: str) -> str:
        parts = value.split(".")
        if not all(p.isdigit() for p in parts) or int(parts[0]) < 1:
            raise ValueError("must be a number >= 1 (1, 2, ... or 1.1)")
        return value

    @field_validator("arms")
    @classmethod
    def _unique_arms(cls, arms: list[Arm]) -> list[Arm]:
        names = [a.name for a in arms]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"arm names must be unique; repeated: {', '.join(dup)}")
        return arms

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError("seeds must be unique")
        return seeds

    @field_validator("patch")
    @classmethod
    def _unique_patches(cls, value: Any) -> Any:
        if isinstance(value, list):
            names = [p.name for p in value]
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"each patch generator may appear once; repeated: "
                                 f"{', '.join(dup)}")
            if not value:
                raise ValueError("an empty list: omit `patch` for a grid without a patch")
        return value

    @property
    def patches(self) -> list[ComponentRef]:
        if self.patch is None:
            return []
        return self.patch if isinstance(self.patch, list) else [self.patch]

    def patch_ref(self, name: str) -> ComponentRef:
        return next(p for p in self.patches if p.name == name)

    @property
    def out_dir(self) -> Path:
        return self.output.dir or Path("runs") / self.name

    def component_refs(self) -> list[tuple[str, str, ComponentRef | Optimizer]]:
        """(YAML path, kind, ref) for every component the spec names. An arm's optimizer is
        its own ref: its params are the keys of its mapping, not a ``params`` key."""
        refs = [("dataset", "datasets", self.dataset)]
        if isinstance(self.patch, list):
            refs += [(f"patch[{i}]", "patches", p) for i, p in enumerate(self.patch)]
        elif self.patch is not None:
            refs.append(("patch", "patches", self.patch))
        refs += [(f"architectures[{i}]", "architectures", a)
                 for i, a in enumerate(self.architectures)]
        for i, arm in enumerate(self.arms):
            refs.append((f"arms[{i}].optimizer", "optimizers", arm.optimizer))
            refs.append((f"arms[{i}].schedule", "schedules", arm.schedule))
            refs += [(f"arms[{i}].regularizers[{j}]", "regularizers", r)
                     for j, r in enumerate(arm.regularizers)]
            refs += [(f"arms[{i}].augmentations[{j}]", "augmentations", a)
                     for j, a in enumerate(arm.augmentations)]
        refs += [(f"evaluation.metrics[{i}]", "metrics", m)
                 for i, m in enumerate(self.evaluation.metrics)]
        return refs


# ---------------------------------------------------------------- error rendering

def format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model class found by walking ``loc`` from ``model`` (for 'allowed' hints)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(part)
        if field is None:
            return None
        current = _unwrap(field.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    for arg in (typing.get_args(annotation) or ()):
        inner = _unwrap(arg)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            return inner
    return annotation


def render_errors(exc: ValidationError, model: type[BaseModel], prefix: str = ""
                  ) -> list[str]:
    """One line per pydantic error: ``path: message``, with allowed keys for unknown keys."""
    lines = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        path = format_loc(loc)
        path = f"{prefix}.{path}" if prefix and path else (prefix or path)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            parent = _model_at(model, loc[:-1])
            allowed = ", ".join(parent.model_fields) if parent else ""
            msg = f"unknown key; allowed: {allowed}" if allowed else "unknown key"
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif "input" in err and err["type"] not in ("model_type", "dict_type"):
            msg = f"{msg} (got {err['input']!r})"
        lines.append(f"{path or '(top level)'}: {msg}")
    return lines


# ---------------------------------------------------------------- overrides

def _parse_path(key: str, what: str | None = None) -> list[str | int]:
    parts: list[str | int] = []
    for raw in key.replace("[", ".").replace("]", "").split("."):
        if raw == "":
            raise PatchbenchError(f"{what or '--set ' + key}: empty path segment")
        parts.append(int(raw) if raw.isdigit() else raw)
    return parts


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply ``a.b[1].c=value`` (value parsed as YAML) to the raw spec mapping.

    A list of arms can also be indexed by arm name: ``arms.small_lr.optimizer.lr=0.01``.
    """
    if "=" not in assignment:
        raise PatchbenchError(f"--set {assignment}: expected KEY=VALUE")
    key, raw = assignment.split("=", 1)
    if len(raw) > MAX_SPEC_BYTES:
        raise PatchbenchError(f"--set {key}: the value is {len(raw):,} characters; at most "
                              f"{MAX_SPEC_BYTES:,} are allowed")
    try:
        value = safe_yaml(raw)
    except TooDeep as exc:
        raise PatchbenchError(f"--set {key}: {exc.problem}") from None
    except yaml.YAMLError:
        value = raw
    key = key.strip()
    if key.startswith(SWEEP_PREFIX) and len(key) > len(SWEEP_PREFIX):
        # The rest of the key is one swept path (it holds dots itself): one key of `sweep`.
        sweep = data.setdefault("sweep", {})
        if sweep is None:
            sweep = data["sweep"] = {}
        if not isinstance(sweep, dict):
            raise PatchbenchError(f"--set {key}: sweep is not a mapping")
        sweep[key[len(SWEEP_PREFIX):]] = value
        return
    set_path(data, key, value, f"--set {key}")


SWEEP_PREFIX = "sweep."


def set_path(data: dict[str, Any], key: str, value: Any, what: str) -> None:
    """Set the field at ``key`` (``a.b[1].c``, arms by name) of the raw spec mapping to
    ``value``; ``what`` starts the error messages (``--set KEY``)."""
    path = _parse_path(key, what)
    node: Any = data
    for i, part in enumerate(path):
        last = i == len(path) - 1
        where = format_loc(tuple(path[: i + 1]))
        if isinstance(node, list):
            if isinstance(part, str):
                named = [j for j, item in enumerate(node)
                         if isinstance(item, dict) and item.get("name") == part]
                if not named:
                    raise PatchbenchError(f"{what}: no item named {part!r} at {where}")
                part = named[0]
            if not 0 <= part < len(node):
                raise PatchbenchError(
                    f"{what}: index {part} out of range at {where} (length {len(node)})")
        elif isinstance(node, dict):
            if isinstance(part, int):
                part = str(part)
            if not last and node.get(part) is None:
                node[part] = {}
        else:
            raise PatchbenchError(f"{what}: {format_loc(tuple(path[:i]))} is not a mapping "
                                  "or a list")
        if last:
            node[part] = value
        else:
            if isinstance(node[part], str) and isinstance(path[i + 1], str):
                node[part] = {"name": node[part]}  # expand a bare component name
            node = node[part]


# ---------------------------------------------------------------- loading

class TooDeep(yaml.YAMLError):
    def __init__(self, mark: Any):
        super().__init__()
        self.problem_mark = mark
        self.problem = f"nested deeper than {MAX_YAML_DEPTH} levels"


def safe_yaml(text: str) -> Any:
    """``yaml.safe_load`` after measuring the nesting with the (iterative) event parser: the
    composer recurses per level and would overflow the stack on hostile input."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise TooDeep(event.start_mark)
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
    return yaml.safe_load(text)


def load_spec(path: str | Path, overrides: list[str] = (), registry: Registry | None = None
              ) -> Spec:
    """Read, override, validate and resolve a spec; raise SpecError with one line per problem."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise PatchbenchError(f"{source}: no such file") from None
    except (IsADirectoryError, UnicodeDecodeError, PermissionError) as exc:
        raise PatchbenchError(f"{source}: cannot read spec: {exc}") from None
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError(source, [f"the spec is {len(text):,} characters; at most "
                                 f"{MAX_SPEC_BYTES:,} are allowed"])
    try:
        data = safe_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(source, [f"invalid YAML: {where}{problem}"]) from None
    if not isinstance(data, dict):
        raise SpecError(source, ["the spec must be a YAML mapping (key: value)"])
    for assignment in overrides:
        apply_override(data, assignment)
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(source, render_errors(exc, Spec)) from None
    resolve(spec, source, registry or get_registry())
    if spec.sweep:
        from .sweep import expand

        spec._sweep_points = expand(data, spec, source, registry or get_registry())
    return spec


def resolve(spec: Spec, source: str, registry: Registry) -> None:
    """Check every component name exists and its params validate; store the validated params."""
    problems: list[str] = []
    for where, kind, ref in spec.component_refs():
        try:
            entry = registry.get(kind, ref.name)
        except PatchbenchError as exc:
            problems.append(f"{where}.name: {exc}")
            continue
        flat = isinstance(ref, Optimizer)
        try:
            params = entry.cls.Params(**ref.params)
        except ValidationError as exc:
            lines = render_errors(exc, entry.cls.Params,
                                  prefix=where if flat else f"{where}.params")
            problems += [line.replace("unknown key; allowed: ", "unknown key; allowed: name, lr, ")
                         for line in lines] if flat else lines
            continue
        ref.params = params.model_dump(mode="json")  # defaults filled in: the resolved spec
    if not problems:
        problems += _metric_problems(spec.evaluation)
        problems += _augment_order_problems(spec)
    if not problems:
        seen: dict[str, int] = {}
        for i, ref in enumerate(spec.architectures):
            label = registry.build("architectures", ref.name, ref.params).label()
            if label in seen:
                problems.append(f"architectures[{i}]: the same model as "
                                f"architectures[{seen[label]}] ({label})")
            seen.setdefault(label, i)
    if problems:
        raise SpecError(source, problems)


def _augment_order_problems(spec: Spec) -> list[str]:
    """With a patch and augmentation, the order between them is a choice the spec must state:
    it decides whether the patch is cropped and flipped with the image."""
    if not spec.patches:
        return []
    allowed = ", ".join(f"{k} ({v})" for k, v in AUGMENT_ORDERS.items())
    return [f"arms[{i}].augment_order: required when the spec has a patch and the arm has "
            f"augmentations; allowed: {allowed}"
            for i, arm in enumerate(spec.arms) if arm.augmentations and arm.augment_order is None]


def _metric_problems(evaluation: Evaluation) -> list[str]:
    """A metric listed twice must differ in its params; ``learned_metric`` must be listed."""
    keys, problems = evaluation.metric_keys(), []
    for i, key in enumerate(keys):
        if key in keys[:i]:
            problems.append(f"evaluation.metrics[{i}]: the same metric and params as "
                            f"evaluation.metrics[{keys.index(key)}] ({key})")
    chosen = evaluation.learned_metric
    if chosen is not None and chosen not in keys:
        problems.append(f"evaluation.learned_metric: {chosen!r} is not among the metrics; "
                        f"allowed: {', '.join(keys)}")
    return problems


def resolved_dict(spec: Spec) -> dict[str, Any]:
    return spec.model_dump(mode="json")


def spec_hash(spec: Spec) -> str:
    """Hash of the resolved spec minus where results go, where trials run and the pointer to
    a reduced variant: identical science, identical hash."""
    data = resolved_dict(spec)
    data.pop("output", None)
    data.pop("execution", None)
    data.pop("reduced_spec", None)
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


__all__ = ["Spec", "Arm", "ComponentRef", "load_spec", "apply_override", "spec_hash"]
