"""Benchmark specs as pydantic models: what a YAML spec may say, field by field.

Unknown keys are errors; floats are finite and fit float32. Component params are checked
later, against each component's own ``Params``, by :mod:`patchbench.spec.resolve`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, PositiveInt, PrivateAttr, field_validator,
                      model_validator)

from ..components import finite_float32


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


class OptimizerRef(Strict):
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


class DefenseOf(Strict):
    """Which defense an arm adds to which arm (``defense: {name: jpeg, of: large_lr}``)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    of: str


class Arm(Strict):
    """One training recipe of the grid."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    optimizer: OptimizerRef
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
    perturbation: ComponentRef | None = None
    """Changes each training batch against the model before the optimizer step (pgd:
    adversarial training); none by default."""
    defense: DefenseOf | None = None
    """This arm is arm ``of`` with defense ``name`` added (set by the spec's ``defenses``):
    the leaderboard's defense gain compares the two, paired by seed."""


RECIPE_DEFAULTS = {"augmentations": [], "augment_order": None, "label_smoothing": 0.0,
                   "perturbation": None, "defense": None}
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

    def steps_per_epoch(self, n_train: int) -> int:
        """Optimizer steps in an epoch of ``n_train`` images: the last batch may be short."""
        return -(-n_train // self.batch_size)


DEFAULT_LEARNED_METRIC = "patch_only_acc"
"""The metric whose threshold defines "learned" when a spec names none (and for records
written before specs could name one)."""
NOT_SCIENCE = {"output": "where results go", "execution": "where trials run",
               "reduced_spec": "the pointer to a reduced variant",
               "tracking": "where results are also sent (TensorBoard, MLflow, W&B)"}
"""Top-level fields that change no number: left out of the spec hash and of the differences
the leaderboard names, and not sweepable."""
MAX_SPEC_BYTES = 1 << 20
MAX_YAML_DEPTH = 32
"""A spec is a few levels deep; far deeper input is hostile (5,000 levels overflow the
Python stack in the YAML composer)."""


SLURM_NAME = r"^[A-Za-z0-9_.+-]+$"
"""A partition, account or QOS name as Slurm spells them."""
SBATCH_SET_BY = {
    "partition": "execution.partition", "time": "execution.time", "mem": "execution.mem",
    "account": "execution.account", "qos": "execution.qos",
    "cpus-per-task": "execution.cpus_per_trial", "gpus-per-node": "execution.gpus_per_trial",
    "array": "execution.array_parallelism", "output": "the job's log, under --out",
    "error": "the job's log, under --out", "signal": "the requeue signal",
    "open-mode": "the job's log", "job-name": "the spec's name"}
"""sbatch options that the execution settings or the Slurm executor itself set."""


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

    executor: Literal["local", "ray", "slurm"] = "local"
    """local: one trial after another in this process; ray: Ray core tasks; slurm: one
    Slurm job per trial, submitted as a job array through submitit."""
    address: str | None = None
    """Ray: a running cluster to join (default: $RAY_ADDRESS, else a local Ray is started)."""
    cpus_per_trial: float = Field(1.0, gt=0, le=1024)
    """Ray and Slurm: CPUs reserved per trial (Slurm: whole CPUs); torch threads follow it
    unless training.threads is set."""
    gpus_per_trial: float | None = Field(None, ge=0, le=64)
    """Ray: GPUs per trial, fractions pack trials on one GPU (0.25: four). Default: 1 when
    the cluster has GPUs and training.device is not cpu, else 0. Slurm: whole GPUs per job;
    default 1 when training.device is cuda, else 0."""
    max_retries: int = Field(3, ge=0, le=100)
    """Ray: how often a trial whose worker or node died is started again (it resumes from
    its last epoch checkpoint). Slurm: how often a job that reached its time limit is
    requeued (preemptions do not count)."""
    partition: str | None = Field(None, pattern=SLURM_NAME)
    """Slurm: the partition the jobs go to (default: the cluster's default partition)."""
    time: int = Field(60, ge=1, le=525_600)
    """Slurm: each job's time limit in minutes. A job that reaches it is requeued and
    resumes from its last epoch checkpoint."""
    mem: str | None = Field(None, pattern=r"^[1-9][0-9]*[KMGT]?$")
    """Slurm: memory per job, in sbatch's --mem syntax (16G, 4000M; default: the
    partition's)."""
    account: str | None = Field(None, pattern=SLURM_NAME)
    """Slurm: the account the jobs are charged to."""
    qos: str | None = Field(None, pattern=SLURM_NAME)
    """Slurm: the quality of service of the jobs."""
    sbatch_options: dict[str, str | int | bool] = Field(default_factory=dict)
    """Slurm: further sbatch options, by their long name without dashes
    (``{constraint: a100, exclusive: true}``); false leaves an option out."""
    array_parallelism: int = Field(64, ge=1, le=100_000)
    """Slurm: at most this many of the grid's jobs run at once (the array's %limit)."""

    @field_validator("sbatch_options")
    @classmethod
    def _sbatch_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not re.fullmatch(r"[a-z][a-z0-9_-]*", name):
                raise ValueError(f"{name!r} is not an sbatch option's long name (e.g. "
                                 "constraint, exclusive, mail-type)")
            setting = SBATCH_SET_BY.get(name.replace("_", "-"))
            if setting:
                raise ValueError(f"{name!r} is set by patchbench ({setting}); leave it out")
        return value


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
    tracking: list[ComponentRef] = Field(default_factory=list)
    """Trackers that also receive the results (``tensorboard``, ``mlflow``, ``wandb``, a
    plugin's), each with its params; ``run --track NAME`` adds one. Not part of the science."""
    reduced_spec: str | None = None
    """A cheaper variant of this benchmark (a path, relative to the working directory) that
    `run` names when this grid would take more than a day on the device at hand."""
    sweep: dict[str, list[Any]] = Field(default_factory=dict)
    """Field paths (the ``--set`` syntax, arms by name) to the values each takes; the grid
    runs every combination (see :mod:`patchbench.spec.sweep`)."""
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

    @field_validator("arms")
    @classmethod
    def _defended_arms(cls, arms: list[Arm]) -> list[Arm]:
        plain = {a.name for a in arms if a.defense is None}
        for a in arms:
            if a.defense is not None and a.defense.of not in plain:
                raise ValueError(f"arm {a.name!r}: defense.of {a.defense.of!r} is not an arm "
                                 f"without a defense; allowed: {', '.join(sorted(plain))}")
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

    def component_refs(self) -> list[tuple[str, str, ComponentRef | OptimizerRef]]:
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
            if arm.perturbation is not None:
                refs.append((f"arms[{i}].perturbation", "perturbations", arm.perturbation))
        refs += [(f"evaluation.metrics[{i}]", "metrics", m)
                 for i, m in enumerate(self.evaluation.metrics)]
        return refs
