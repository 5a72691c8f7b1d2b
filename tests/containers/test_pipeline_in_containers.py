"""The whole DAG in containers: every step in the built CPU image (kfp.local DockerRunner, host network)
against `mlflow server` from the MLflow image, on PostgreSQL and an S3 artifact store, as the manifests
deploy it; then the champion served by `mlflow models serve` from the CPU image and asked over HTTP.

The server runs MLflow's basic-auth app as the Deployment does; the admin provisions the pipeline's user
and every step logs in as it. Run 1 registers v1 and promotes it to @champion, its artifacts landing in
the S3 bucket (through the server's proxied artifact store: the steps hold no store credentials). Run 2,
nothing changed: every work step is a cache hit (no step container runs for it), only the run-scoped
steps execute.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException

from otdistill.config import RunConfig, load_config
from otdistill.tracking.access import as_user, provision_pipeline_identity
from tests.containers.conftest import docker
from tests.pipeline.test_e2e import WORK_STEPS, _steps
from tests.servers.processes import ServerStack, free_port, http_ok

ROOT = Path(__file__).resolve().parents[2]
DIALOGSUM = ROOT.parent / "shared" / "data" / "dialogsum"


@dataclass
class Runs:
    cfg: RunConfig
    first: object
    second: object
    seconds: tuple[float, float]
    run_dir: Path


@pytest.fixture(scope="module")
def runs(
    container_stack: ServerStack,
    tiny_pair: tuple[Path, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Runs]:
    from otdistill.pipelines.local import run_local

    teacher, student = tiny_pair
    cfg = load_config(
        ROOT / "configs" / "tiny.yaml",
        {
            "name": "tiny-containers",
            "teacher.source": str(teacher),
            "student.source": str(student),
            "data.source": str(DIALOGSUM),
            "steps.skip_sft_baseline": True,
            "tracking.tracking_uri": container_stack.mlflow.uri,
            "tracking.experiment": "otdistill-containers",
            "tracking.registered_model_name": "otdistill-containers-student",
        },
    )
    run_dir = tmp_path_factory.mktemp("containers-run")
    # The server runs basic-auth: the steps log in as the pipeline's user, whose credentials reach every
    # step container as environment (MLFLOW_TRACKING_USERNAME / _PASSWORD; on a cluster from the Secret
    # in cluster.secrets). The admin provisions it first, as on a cluster.
    mlflow_server = container_stack.mlflow
    with as_user(mlflow_server.admin):
        provision_pipeline_identity(mlflow_server.uri, container_stack.pipeline, [cfg.tracking])
    with as_user(container_stack.pipeline):
        started = time.monotonic()
        first = run_local(cfg, run_dir, runner="docker")
        print(first.summary())
        middle = time.monotonic()
        second = run_local(cfg, run_dir, runner="docker")
        print(second.summary())
        done = time.monotonic()
        print(f"container e2e: run 1 {middle - started:.0f} s, run 2 (cached) {done - middle:.0f} s")
        yield Runs(cfg, first, second, (middle - started, done - middle), run_dir)


def test_first_run_registers_a_champion_with_its_artifacts_in_s3(
    runs: Runs, container_stack: ServerStack
) -> None:
    import boto3
    from mlflow.tracking import MlflowClient

    first, name = runs.first, runs.cfg.tracking.registered_model_name
    client = MlflowClient(tracking_uri=first.tracking_uri, registry_uri=first.tracking_uri)
    assert first.model_uri == f"models:/{name}/1" and first.status == "promoted"
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    assert client.get_run(first.mlflow_run_id).info.status == "FINISHED"
    assert (
        WORK_STEPS | {"reference_model", "register_and_promote"}
        >= _steps(client, first.experiment_id, first.mlflow_run_id)
        >= WORK_STEPS | {"register_and_promote"}
    )
    # Every step ran in the CPU image: the steps record the image they ran in as lineage.
    v1 = client.get_model_version(name, "1")
    assert v1.tags["otdistill.lineage.container_image"] == runs.cfg.cluster.image

    s3 = container_stack.s3
    bucket = boto3.client(
        "s3",
        endpoint_url=s3.endpoint,
        aws_access_key_id=s3.access_key,
        aws_secret_access_key=s3.secret_key,
        region_name="us-east-1",
    )
    keys = [
        o["Key"]
        for page in bucket.get_paginator("list_objects_v2").paginate(Bucket=s3.bucket, Prefix="artifacts/")
        for o in page.get("Contents", [])
    ]
    experiment = f"artifacts/{first.experiment_id}/"
    assert any(k.startswith(experiment) and k.endswith("config.yaml") for k in keys), keys[:20]
    weights = [k for k in keys if k.startswith(experiment) and k.endswith(".safetensors")]
    assert weights, "the registered student's weights are not in the S3 bucket"


def test_the_steps_ran_as_the_pipeline_user_and_no_password_reached_a_file(
    runs: Runs, container_stack: ServerStack
) -> None:
    """The steps registered and promoted as the pipeline's user (a reader may not: so the grants the
    admin provisioned were what the DAG needed); its password, which every step container had in its
    environment, is in no log, KFP output or report the runs wrote."""
    from mlflow.tracking import MlflowClient

    first, name = runs.first, runs.cfg.tracking.registered_model_name
    client = MlflowClient(tracking_uri=first.tracking_uri, registry_uri=first.tracking_uri)
    assert first.status == "promoted"
    with as_user(container_stack.reader):
        with pytest.raises(MlflowException) as denied:
            client.set_registered_model_alias(name, "champion", "1")
        assert denied.value.error_code == "PERMISSION_DENIED"
    secret = container_stack.pipeline.password.encode()
    files = [p for p in runs.run_dir.rglob("*") if p.is_file() and p.stat().st_size < 50_000_000]
    assert files and not [p for p in files if secret in p.read_bytes()]


def test_second_run_with_nothing_changed_is_all_cache_hits(runs: Runs) -> None:
    from mlflow.tracking import MlflowClient

    second = runs.second
    client = MlflowClient(tracking_uri=second.tracking_uri, registry_uri=second.tracking_uri)
    assert second.scores == runs.first.scores
    # the champion is new (v1): score_champion runs, reusing the score v1's registration recorded
    assert _steps(client, second.experiment_id, second.mlflow_run_id) == {
        "score_champion",
        "register_and_promote",
    }
    assert runs.seconds[1] < runs.seconds[0]


def test_champion_served_from_the_image_answers_a_raw_dialogue(
    runs: Runs, container_stack: ServerStack, built_images: dict[str, str]
) -> None:
    """`mlflow models serve -m models:/<name>@champion` in the CPU image; a REST request whose body is a raw
    validation dialogue gets back only the generated summary, not the prompt."""
    name = runs.cfg.tracking.registered_model_name
    port = free_port()
    container = f"otdistill-test-serve-{port}"
    # Serving logs in as a reader: READ is all it needs (credentials passed by name, not on the command line).
    with as_user(container_stack.reader):
        docker(
            "run", "-d", "--rm", "--name", container, "--network=host",
            "-e", f"MLFLOW_TRACKING_URI={container_stack.mlflow.uri}",
            "-e", "MLFLOW_TRACKING_USERNAME", "-e", "MLFLOW_TRACKING_PASSWORD",
            built_images["cpu"],
            "mlflow", "models", "serve", "-m", f"models:/{name}@champion", "--env-manager", "local",
            "--host", "127.0.0.1", "--port", str(port),
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not http_ok(f"http://127.0.0.1:{port}/ping"):
            running = docker("ps", "-q", "-f", f"name={container}", check=False).stdout.strip()
            logs = docker("logs", container, check=False)
            assert running and time.monotonic() < deadline, (logs.stdout + logs.stderr)[-3000:]
            time.sleep(1)
        rows = [json.loads(line) for line in (DIALOGSUM / "validation.jsonl").read_text().splitlines()[-2:]]
        body = json.dumps({"dataframe_records": [{"dialogue": r["dialogue"]} for r in rows]}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=120) as resp:
            answer = json.loads(resp.read())
    finally:
        docker("rm", "-f", container, check=False)
    predictions = answer["predictions"]
    assert len(predictions) == len(rows)
    for row, prediction in zip(rows, predictions, strict=True):
        assert isinstance(prediction, str), prediction
        assert row["dialogue"][:40] not in prediction, "the served model returned the prompt"
