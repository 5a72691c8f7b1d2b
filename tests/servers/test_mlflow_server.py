"""The tracking and registry code against a real `mlflow server` (PostgreSQL backend, S3 artifacts) over HTTP.

Covers the happy path (parent + step runs, metrics over time, artifacts, lineage, model logging,
registration, promotion by margin, loading by alias) and the faults the pipeline must survive: the server
down when a step starts, the server killed and restarted mid-run, and two registrations racing.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import boto3
import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from otdistill.tracking import (
    Lineage,
    PromotionDecision,
    TrackingConfig,
    TrackingServerUnavailableError,
    log_lineage,
    log_student_model,
    read_lineage,
    register_and_promote,
    resolve_alias,
    start_pipeline_run,
    step_run,
)
from otdistill.tracking.registry import STATUS_TAG
from tests.servers.processes import MlflowServer, ServerStack

LINEAGE = Lineage(
    data_hash="sha256:" + "ab" * 32,
    teacher_id="pypi:gemma-3-270m",
    teacher_revision="sha256:" + "cd" * 32,
    student_id="pypi:smollm2-135m-instruct",
    student_revision="sha256:" + "ef" * 32,
    loss="multilevelot",
    code_version="0123456789abcdef0123456789abcdef01234567",
    container_image="registry.example.com/otdistill/cpu:0.1.0",
)


def client_for(config: TrackingConfig) -> MlflowClient:
    return MlflowClient(tracking_uri=config.tracking_uri, registry_uri=config.tracking_uri)


def versions(config: TrackingConfig) -> dict[str, dict[str, str]]:
    found = client_for(config).search_model_versions(f"name='{config.registered_model_name}'")
    return {str(mv.version): dict(mv.tags) for mv in found}


def log_student_run(config: TrackingConfig, student_dir: Path, rouge: float) -> tuple[str, str]:
    """A pipeline run whose `register` step logs the student; returns (run_id, model_uri)."""
    with (
        start_pipeline_run(config, "distill", params={"loss": "multilevelot"}) as parent,
        step_run(parent, "register") as step,
    ):
        log_lineage(parent, LINEAGE)
        step.log_metrics({"rougeLsum": rouge})
        info = log_student_model(
            step,
            student_dir,
            task="dialogsum",
            input_example={"dialogue": "#Person1#: Hi.\n#Person2#: Hello."},
        )
    return step.run_id, info.model_uri


def test_pipeline_run_logs_steps_metrics_artifacts_lineage(
    tracking_config: TrackingConfig, server_stack: ServerStack, tmp_path: Path
) -> None:
    report = tmp_path / "data_report.json"
    report.write_text('{"train_examples": 12, "dropped": 1}')
    with start_pipeline_run(
        tracking_config, "distill-dialogsum", pipeline_run_id="kfp-run-1", params={"train": {"lr": 1e-4}}
    ) as parent:
        log_lineage(parent, LINEAGE)
        parent.log_config({"train": {"lr": 1e-4, "epochs": 2}, "loss": {"top_k": 50}})
        with step_run(parent, "data") as data_step:
            data_step.log_artifact(report)
        with step_run(parent, "train", params={"epochs": 2}) as train_step:
            log_lineage(train_step, LINEAGE)
            for step in range(5):
                train_step.log_metrics({"loss": 2.0 - 0.1 * step, "lr": 1e-4}, step=step)
            mlflow.log_metric("fluent_metric", 1.5)  # the step run is MLflow's active run
        with step_run(parent, "evaluate") as eval_step:
            eval_step.log_dict({"rougeLsum": 0.21, "n": 50}, "eval_report.json")

    client = client_for(tracking_config)
    parent_run = client.get_run(parent.run_id)
    assert parent_run.info.status == "FINISHED"
    assert parent_run.data.params["train.lr"] == "0.0001"
    assert read_lineage(parent) == {
        "data_hash": LINEAGE.data_hash,
        "teacher_id": LINEAGE.teacher_id,
        "teacher_revision": LINEAGE.teacher_revision,
        "student_id": LINEAGE.student_id,
        "student_revision": LINEAGE.student_revision,
        "loss": "multilevelot",
        "code_version": LINEAGE.code_version,
        "container_image": LINEAGE.container_image,
    }
    assert parent_run.data.tags["mlflow.source.git.commit"] == LINEAGE.code_version

    children = client.search_runs(
        [parent.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.run_id}'"
    )
    assert sorted(r.info.run_name for r in children) == ["data", "evaluate", "train"]
    assert all(r.info.status == "FINISHED" for r in children)

    history = client.get_metric_history(train_step.run_id, "loss")
    assert [m.step for m in history] == [0, 1, 2, 3, 4]
    assert [round(m.value, 6) for m in history] == [2.0, 1.9, 1.8, 1.7, 1.6]
    assert client.get_run(train_step.run_id).data.metrics["fluent_metric"] == 1.5
    assert [a.path for a in client.list_artifacts(data_step.run_id)] == ["data_report.json"]
    assert [a.path for a in client.list_artifacts(eval_step.run_id)] == ["eval_report.json"]
    assert "config.yaml" in [a.path for a in client.list_artifacts(parent.run_id)]

    # The same Kubeflow run id finds the same parent run (a retried first step must not fork the run).
    with start_pipeline_run(tracking_config, "distill-dialogsum", pipeline_run_id="kfp-run-1") as again:
        assert again.run_id == parent.run_id

    # Artifacts went through the server's proxy into the S3 bucket, not to a local directory.
    s3 = boto3.client(
        "s3",
        endpoint_url=server_stack.s3.endpoint,
        aws_access_key_id=server_stack.s3.access_key,
        aws_secret_access_key=server_stack.s3.secret_key,
        region_name="us-east-1",
    )
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=server_stack.s3.bucket).get("Contents", [])]
    assert any(k.endswith(f"{data_step.run_id}/artifacts/data_report.json") for k in keys), keys


def test_register_promote_by_margin_and_load_by_alias(
    tracking_config: TrackingConfig, tiny_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    _, student_dir = tiny_pair
    run_a, uri_a = log_student_run(tracking_config, student_dir, 0.30)
    first = register_and_promote(run_a, 0.30, tracking_config, model_uri=uri_a)
    assert (first.promoted, first.status, first.champion_version) == (True, "promoted", None)

    # Better, but not by more than the 0.01 margin: registered, not promoted.
    run_b, _ = log_student_run(tracking_config, student_dir, 0.305)
    second = register_and_promote(run_b, 0.305, tracking_config)  # default URI: runs:/<id>/student
    assert (second.promoted, second.status) == (False, "rejected")
    assert second.champion_version == first.version and second.champion_value == pytest.approx(0.30)
    assert "not more than the margin" in second.reason

    run_c, uri_c = log_student_run(tracking_config, student_dir, 0.35)
    third = register_and_promote(run_c, 0.35, tracking_config, model_uri=uri_c)
    assert third.promoted and third.champion_version == first.version

    client = client_for(tracking_config)
    name = tracking_config.registered_model_name
    assert client.get_model_version_by_alias(name, "champion").version == third.version
    tags = versions(tracking_config)
    assert {v: t[STATUS_TAG] for v, t in tags.items()} == {"1": "promoted", "2": "rejected", "3": "promoted"}
    # The parent run's lineage travels with every version into the registry.
    assert tags["3"]["otdistill.lineage.teacher_revision"] == LINEAGE.teacher_revision
    assert tags["3"]["otdistill.lineage.code_version"] == LINEAGE.code_version
    assert client.get_run(run_b).data.tags[STATUS_TAG] == "rejected"
    decision_file = mlflow.artifacts.download_artifacts(
        run_id=run_b, artifact_path="promotion_decision.json", tracking_uri=tracking_config.tracking_uri
    )
    assert '"promoted": false' in Path(decision_file).read_text()

    hf_dir = resolve_alias(name, "champion", tracking_config, tmp_path / "champion")
    model = AutoModelForCausalLM.from_pretrained(hf_dir)
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    original = load_file(str(student_dir / "model.safetensors"))
    for key, tensor in model.state_dict().items():
        if key in original:
            assert torch.equal(tensor, original[key]), key
    reference = AutoTokenizer.from_pretrained(student_dir)
    text = "#Person1#: Hello, how are you?"
    assert tokenizer(text)["input_ids"] == reference(text)["input_ids"]
    assert tokenizer.chat_template == reference.chat_template
    assert '"version": "3"' in (tmp_path / "champion" / "registered_model.json").read_text()


def test_server_down_when_step_starts_fails_fast_without_registering(
    tracking_config: TrackingConfig, mlflow_server: MlflowServer, tiny_pair: tuple[Path, Path]
) -> None:
    _, student_dir = tiny_pair
    run_id, model_uri = log_student_run(tracking_config, student_dir, 0.4)
    with start_pipeline_run(tracking_config, "before-outage") as parent:
        pass
    mlflow_server.stop()
    started = time.monotonic()
    with pytest.raises(TrackingServerUnavailableError, match=mlflow_server.uri.replace(".", r"\.")):
        register_and_promote(run_id, 0.4, tracking_config, model_uri=model_uri)
    register_elapsed = time.monotonic() - started
    started = time.monotonic()
    with pytest.raises(TrackingServerUnavailableError), step_run(parent, "train"):
        pytest.fail("the step body must not run while the server is down")
    step_elapsed = time.monotonic() - started
    # Bounded by the preflight budget (5 s), not by MLflow's default minutes of retries.
    assert register_elapsed < tracking_config.preflight_timeout_s + 3, register_elapsed
    assert step_elapsed < tracking_config.preflight_timeout_s + 3, step_elapsed

    mlflow_server.start()
    assert versions(tracking_config) == {}
    children = client_for(tracking_config).search_runs(
        [parent.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.run_id}'"
    )
    assert children == []


def test_server_restart_mid_run_keeps_metrics(
    tracking_config: TrackingConfig, mlflow_server: MlflowServer
) -> None:
    restarted = threading.Event()
    errors: list[BaseException] = []

    def restart_later() -> None:
        try:
            time.sleep(1.0)  # the next log call meets a dead server and has to wait through retries
            mlflow_server.start()
            restarted.set()
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    with start_pipeline_run(tracking_config, "restart") as parent, step_run(parent, "train") as train:
        for step in range(5):
            train.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
        mlflow_server.kill()
        assert not mlflow_server.process.running
        thread = threading.Thread(target=restart_later)
        thread.start()
        try:
            for step in range(5, 10):
                train.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
        finally:
            thread.join(timeout=120)
        assert not errors, errors
        assert restarted.is_set()
        mlflow.log_metric("after_restart", 1.0)

    client = client_for(tracking_config)
    history = client.get_metric_history(train.run_id, "loss")
    assert sorted(m.step for m in history) == list(range(10))
    assert {m.step: round(m.value, 6) for m in history} == {s: round(1.0 / (s + 1), 6) for s in range(10)}
    run = client.get_run(train.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["after_restart"] == 1.0
    assert client.get_run(parent.run_id).info.status == "FINISHED"


@pytest.mark.parametrize("first_is_better", [True, False])
def test_concurrent_registrations_end_with_one_champion_and_no_lost_version(
    tracking_config: TrackingConfig, tiny_pair: tuple[Path, Path], first_is_better: bool
) -> None:
    _, student_dir = tiny_pair
    base_run, base_uri = log_student_run(tracking_config, student_dir, 0.20)
    baseline = register_and_promote(base_run, 0.20, tracking_config, model_uri=base_uri)
    assert baseline.promoted

    values = (0.40, 0.30) if first_is_better else (0.30, 0.40)
    barrier = threading.Barrier(2)
    decisions: list[PromotionDecision] = []
    errors: list[BaseException] = []

    def register(value: float) -> None:
        try:
            barrier.wait(timeout=30)
            decisions.append(register_and_promote(base_run, value, tracking_config, model_uri=base_uri))
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=register, args=(v,)) for v in values]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len(decisions) == 2

    by_value = {d.candidate_value: d for d in decisions}
    winner, loser = by_value[0.40], by_value[0.30]
    assert winner.promoted and not loser.promoted
    assert loser.status in ("rejected", "superseded")
    tags = versions(tracking_config)
    assert set(tags) == {baseline.version, winner.version, loser.version}  # no version lost
    assert tags[winner.version][STATUS_TAG] == "promoted"
    assert tags[loser.version][STATUS_TAG] == loser.status
    champion = client_for(tracking_config).get_model_version_by_alias(
        tracking_config.registered_model_name, "champion"
    )
    assert champion.version == winner.version
