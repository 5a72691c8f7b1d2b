"""Compile the pipeline for every shipped config and check the result against KFP's protobuf schemas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import json_format
from kfp.kubernetes import kubernetes_executor_config_pb2 as k8s_pb2
from kfp.pipeline_spec import pipeline_spec_pb2

from otdistill.config import PIPELINE_PARAMETERS, RunConfig, SecretEnv, Toleration
from otdistill.pipelines.submit import compile_pipeline

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted([*(ROOT / "configs").glob("*.yaml"), *(ROOT / "configs" / "paper").glob("*.yaml")])


def _parse(path: Path) -> tuple[pipeline_spec_pb2.PipelineSpec, dict[str, k8s_pb2.KubernetesExecutorConfig]]:
    docs = list(yaml.safe_load_all(path.read_text()))
    assert len(docs) == 2, "expected the pipeline spec and the platform spec"
    spec = json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec())
    platform = json_format.ParseDict(docs[1], pipeline_spec_pb2.PlatformSpec())
    executors = platform.platforms["kubernetes"].deployment_spec.executors
    out = {}
    for name, struct in executors.items():
        out[name] = json_format.ParseDict(
            json_format.MessageToDict(struct), k8s_pb2.KubernetesExecutorConfig()
        )
    return spec, out


def _tasks(spec: pipeline_spec_pb2.PipelineSpec) -> dict[str, Any]:
    """Every task of the root DAG and of the condition sub-DAGs, by name."""
    tasks = dict(spec.root.dag.tasks)
    for comp in spec.components.values():
        if comp.HasField("dag"):
            tasks.update(dict(comp.dag.tasks))
    return tasks


def _executor(spec: pipeline_spec_pb2.PipelineSpec, task: Any) -> str:
    return spec.components[task.component_ref.name].executor_label


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_every_config_compiles_to_a_valid_spec(path: Path, tmp_path: Path) -> None:
    cfg = RunConfig.from_yaml(path)
    spec, executors = _parse(compile_pipeline(cfg, tmp_path / "p.yaml"))
    assert set(spec.root.input_definitions.parameters) == set(PIPELINE_PARAMETERS)
    tasks = _tasks(spec)
    assert {"open-run", "prepare-data", "cache-teacher", "distill-student", "evaluate"} <= set(tasks)
    gpu_tasks = {"train-sft", "train-sft-2", "cache-teacher", "distill-student", "evaluate"}
    for name in gpu_tasks:
        task = tasks[name]
        res = spec.deployment_spec.fields["executors"].struct_value.fields[_executor(spec, task)]
        container = res.struct_value.fields["container"].struct_value.fields
        acc = container["resources"].struct_value.fields["accelerator"].struct_value.fields
        assert acc["resourceType"].string_value == cfg.cluster.accelerator
        assert acc["resourceCount"].string_value == str(cfg.cluster.gpus)
        assert task.retry_policy.max_retry_count == cfg.cluster.retry.num_retries
        k8s = executors[_executor(spec, task)]
        assert [t.key for t in k8s.tolerations] == [t.key for t in cfg.cluster.gpu_tolerations]
        assert dict(k8s.node_selector.labels) == cfg.cluster.gpu_node_selector
    # caching: on for the work, off for the run-scoped steps
    assert tasks["prepare-data"].caching_options.enable_cache is cfg.steps.enable_caching
    assert not tasks["open-run"].caching_options.enable_cache
    assert not tasks["register-and-promote"].caching_options.enable_cache
    for name, k8s in executors.items():
        assert [s.secret_name for s in k8s.secret_as_env] == [s.name for s in cfg.cluster.secrets], name
        assert k8s.active_deadline_seconds > 0
        assert [f.name for f in k8s.field_path_as_env] == ["OTDISTILL_PIPELINE_RUN_ID"]
        if cfg.cluster.model_cache_pvc:
            assert [m.constant for m in k8s.pvc_mount] == [cfg.cluster.model_cache_pvc]


def test_cluster_settings_come_from_the_config(tmp_path: Path) -> None:
    cfg = RunConfig()
    cfg.cluster.image = "registry.example/otd:1"
    cfg.cluster.gpus = 4
    cfg.cluster.accelerator = "amd.com/gpu"
    cfg.cluster.gpu_node_selector = {"pool": "a100"}
    cfg.cluster.gpu_tolerations = [
        Toleration(key="dedicated", operator="Equal", value="ml", effect="NoSchedule")
    ]
    cfg.cluster.secrets = [SecretEnv(name="mlflow", keys={"user": "MLFLOW_TRACKING_USERNAME"})]
    cfg.cluster.model_cache_pvc = "cache-pvc"
    cfg.cluster.timeouts = {"distill_student": 1234}
    cfg.cluster.retry.num_retries = 5
    cfg.steps.enable_caching = False
    spec, executors = _parse(compile_pipeline(cfg, tmp_path / "p.yaml"))
    tasks = _tasks(spec)
    distill = tasks["distill-student"]
    assert distill.retry_policy.max_retry_count == 5
    assert not distill.caching_options.enable_cache
    k8s = executors[_executor(spec, distill)]
    assert k8s.active_deadline_seconds == 1234
    assert k8s.tolerations[0].value == "ml" and k8s.tolerations[0].operator == "Equal"
    assert dict(k8s.node_selector.labels) == {"pool": "a100"}
    assert k8s.secret_as_env[0].key_to_env[0].env_var == "MLFLOW_TRACKING_USERNAME"
    assert k8s.pvc_mount[0].mount_path == cfg.cluster.model_cache_path
    text = (tmp_path / "p.yaml").read_text()
    assert "registry.example/otd:1" in text and "amd.com/gpu" in text
    # CPU steps: no accelerator, no toleration, no retry
    prep = tasks["prepare-data"]
    assert not prep.HasField("retry_policy")
    assert not executors[_executor(spec, prep)].tolerations


def test_optional_steps_are_compile_time_switches(tmp_path: Path) -> None:
    cfg = RunConfig()
    spec, _ = _parse(compile_pipeline(cfg, tmp_path / "full.yaml"))
    assert {"train-sft", "train-sft-2"} <= set(_tasks(spec)) and "reference-model" not in _tasks(spec)
    cfg.steps.skip_teacher_sft = True
    cfg.steps.skip_sft_baseline = True
    spec, _ = _parse(compile_pipeline(cfg, tmp_path / "skip.yaml"))
    tasks = _tasks(spec)
    assert "train-sft" not in tasks and {"reference-model", "reference-model-2"} <= set(tasks)
    # the reference steps are CPU steps: no accelerator is requested for a skipped step
    assert not tasks["reference-model"].HasField("retry_policy")


def test_every_step_runs_inside_the_exit_handler(tmp_path: Path) -> None:
    """`close_run` is the exit task: it runs when the group of all other steps is done, whatever its state."""
    spec, executors = _parse(compile_pipeline(RunConfig(), tmp_path / "p.yaml"))
    root = dict(spec.root.dag.tasks)
    assert set(root) == {"close-run", "exit-handler-1"}
    close = root["close-run"]
    strategy = pipeline_spec_pb2.PipelineTaskSpec.TriggerPolicy.TriggerStrategy
    assert close.trigger_policy.strategy == strategy.ALL_UPSTREAM_TASKS_COMPLETED
    assert close.inputs.parameters["status"].task_final_status.producer_task == "exit-handler-1"
    assert not close.caching_options.enable_cache
    body = spec.components[root["exit-handler-1"].component_ref.name].dag.tasks
    assert {"open-run", "prepare-data", "cache-teacher", "evaluate", "register-and-promote"} <= set(body)
    k8s = executors[_executor(spec, close)]
    assert [f.name for f in k8s.field_path_as_env] == ["OTDISTILL_PIPELINE_RUN_ID"]


def test_several_gpus_run_the_training_steps_on_that_many_processes(tmp_path: Path) -> None:
    """`cluster.gpus: 2`: each training task asks for 2 GPUs and a memory /dev/shm (NCCL), and the config
    section it is handed (what `open_run` cuts from the compiled config) makes its step launch 2 processes."""
    from otdistill.training.launch import training_processes

    cfg = RunConfig()
    cfg.cluster.gpus = 2
    spec, executors = _parse(compile_pipeline(cfg, tmp_path / "p.yaml"))
    tasks = _tasks(spec)
    compiled = tasks["open-run"].inputs.parameters["base_config"].runtime_value.constant.string_value
    base = RunConfig.from_json(compiled)
    for name, step in [
        ("train-sft", "train_teacher"),
        ("train-sft-2", "train_sft_baseline"),
        ("distill-student", "distill_student"),
    ]:
        task = tasks[name]
        res = spec.deployment_spec.fields["executors"].struct_value.fields[_executor(spec, task)]
        container = res.struct_value.fields["container"].struct_value.fields
        acc = container["resources"].struct_value.fields["accelerator"].struct_value.fields
        assert acc["resourceCount"].string_value == "2", name
        shm = executors[_executor(spec, task)].empty_dir_mounts
        assert [(m.mount_path, m.medium) for m in shm] == [("/dev/shm", "Memory")], name
        section = RunConfig.from_json(base.section_json(step))
        assert training_processes(section.cluster.gpus) == 2, name
    # one GPU: no extra shared memory, one process
    assert not executors[_executor(spec, tasks["prepare-data"])].empty_dir_mounts
    assert training_processes(RunConfig().cluster.gpus) == 1


def test_validation_data_reaches_only_the_training_steps_that_validate(tmp_path: Path) -> None:
    """An input is part of a step's cache key: without `eval_every_steps` no training step takes the
    validation rows, so new validation rows re-run no training."""
    spec, _ = _parse(compile_pipeline(RunConfig(), tmp_path / "off.yaml"))
    tasks = _tasks(spec)
    for name in ("train-sft", "train-sft-2", "distill-student"):
        assert "validation_data" not in tasks[name].inputs.artifacts, name
    on = {"eval_every_steps": 5}
    cfg = RunConfig.from_dict({"sft_baseline": on, "distill": on})
    tasks = _tasks(_parse(compile_pipeline(cfg, tmp_path / "on.yaml"))[0])
    assert "validation_data" not in tasks["train-sft"].inputs.artifacts  # teacher SFT does not validate
    for name in ("train-sft-2", "distill-student"):
        source = tasks[name].inputs.artifacts["validation_data"].task_output_artifact
        assert source.producer_task == "prepare-data-2" and source.output_artifact_key == "data", name


def _producer(task: Any, name: str) -> str | None:
    """The task that produces `task`'s input artifact `name` (None: the task has no such input)."""
    if name not in task.inputs.artifacts:
        return None
    return str(task.inputs.artifacts[name].task_output_artifact.producer_task)


@pytest.mark.parametrize(("loss", "live"), [("multilevel_ot", False), ("uld", False), ("kl", True)])
def test_the_teacher_model_reaches_distillation_only_for_a_live_teacher(
    loss: str, live: bool, tmp_path: Path
) -> None:
    """KFP's launcher downloads every input artifact in full before a step starts: a loss that reads the
    teacher cache gets the teacher's tokenizer and record from the cache artifact, not the teacher model;
    the cache and evaluation steps run the teacher and keep it."""
    cfg = RunConfig.from_dict({"distill": {"loss": loss}})
    tasks = _tasks(_parse(compile_pipeline(cfg, tmp_path / "p.yaml"))[0])
    assert _producer(tasks["distill-student"], "teacher_model") == ("train-sft" if live else None)
    assert _producer(tasks["distill-student"], "teacher_cache") == "cache-teacher"
    for name in ("cache-teacher", "evaluate"):
        assert _producer(tasks[name], "teacher_model") == "train-sft", name
