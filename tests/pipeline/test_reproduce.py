"""`otdistill reproduce` (issue 16) on the tiny pipeline: the shared local run registers v1 (`tiny_run`), then

* with the run directory's models and KFP artifacts deleted (only the MLflow store kept: `mlflow.db` and
  `mlartifacts/`), `otdistill reproduce models:/<name>/1 --local` rebuilds it and reports bit-for-bit on
  CPU, with the verdict and both run ids tagged on the new parent run;
* tampered data (one character of a used row) and a data directory that is gone are refused before anything
  runs, naming the hash mismatch / the path;
* `--host` submits the rebuilt config (pinned, deterministic, no step cache, the recorded images) to a
  mocked kfp.Client (no KFP API server runs here), with a `--set` deviation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest
import yaml

from otdistill import cli
from otdistill.config import RunConfig
from otdistill.steps.common import RUN_ID_ENV
from tests.pipeline.conftest import TinyRun


@dataclass(frozen=True)
class Registered:
    tracking_uri: str
    name: str
    run_dir: Path
    data_dir: Path
    tmp: Path
    parent_run_id: str
    experiment_id: str


@pytest.fixture
def registered(tiny_run: TinyRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Registered:
    """The shared tiny run (tests/pipeline/conftest.py): v1 registered from a writable copy of the data."""
    monkeypatch.setenv("OTDISTILL_CACHE", str(tiny_run.model_cache))
    monkeypatch.setenv(RUN_ID_ENV, "")  # a local rebuild sets it; restored afterwards
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return Registered(
        tracking_uri=tiny_run.result.tracking_uri,
        name=tiny_run.cfg.tracking.registered_model_name,
        run_dir=tiny_run.run_dir,
        data_dir=tiny_run.data_dir,
        tmp=tmp_path,
        parent_run_id=tiny_run.result.mlflow_run_id,
        experiment_id=tiny_run.result.experiment_id,
    )


def _client(reg: Registered):  # type: ignore[no-untyped-def]
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=reg.tracking_uri, registry_uri=reg.tracking_uri)


def _reproduce(reg: Registered, *extra: str) -> int:
    ref = f"models:/{reg.name}/1"
    return cli.main(["reproduce", ref, "--tracking-uri", reg.tracking_uri, *extra])


@pytest.mark.e2e
def test_tampered_or_missing_data_is_refused_naming_it(
    registered: Registered, capsys: pytest.CaptureFixture[str]
) -> None:
    runs_before = len(_client(registered).search_runs([registered.experiment_id]))
    # an alias no version holds (the statistical gate may promote nothing): the versions are listed
    ref = f"models:/{registered.name}@nobody"
    assert cli.main(["reproduce", ref, "--tracking-uri", registered.tracking_uri, "--local"]) == 1
    err = capsys.readouterr().err
    assert "no version holds that alias" in err and f"models:/{registered.name}/1: " in err
    train = registered.data_dir / "train.jsonl"
    original = train.read_bytes()
    first, rest = original.split(b"\n", 1)
    row = json.loads(first)
    row["summary"] = row["summary"] + " (edited)"
    try:
        train.write_bytes(json.dumps(row).encode() + b"\n" + rest)
        assert _reproduce(registered, "--local", "--run-dir", str(registered.tmp / "refused")) == 1
        err = capsys.readouterr().err
        assert "data hash mismatch" in err and "train split" in err and str(registered.data_dir) in err
        recorded = _client(registered).get_model_version(registered.name, "1").tags
        assert recorded["otdistill.lineage.data_hash"] in err
    finally:
        train.write_bytes(original)
    moved = registered.tmp / "data-moved-away"
    registered.data_dir.rename(moved)
    try:
        assert _reproduce(registered, "--local", "--run-dir", str(registered.tmp / "refused")) == 1
        err = capsys.readouterr().err
        assert f"the local path {registered.data_dir} recorded as the data source does not exist" in err
    finally:
        moved.rename(registered.data_dir)
    # refused before anything ran: no new MLflow run
    assert len(_client(registered).search_runs([registered.experiment_id])) == runs_before
    assert not (registered.tmp / "refused").exists()


@pytest.mark.e2e
def test_submit_to_a_cluster_pins_and_records_the_deviation(
    registered: Registered, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import mlflow

    from tests.cli.test_cli import _client as kfp_client

    client = kfp_client()
    seen: dict[str, str] = {}
    client.upload_pipeline_version.side_effect = lambda path, name, **kw: (
        seen.update(text=Path(path).read_text(encoding="utf-8")) or mock.DEFAULT
    )
    with mock.patch("kfp.Client", return_value=client):
        code = _reproduce(registered, "--host", "https://kfp.example", "--set", "eval.max_new_tokens=4")
    assert code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "deviation eval.max_new_tokens = 4 (--set)" in out
    assert "pinned    distill.deterministic: False -> True" in out
    assert "submitted KFP run run-123" in out and "no verdict yet" in out
    kwargs = client.run_pipeline.call_args.kwargs
    assert kwargs["job_name"] == f"reproduce-{registered.name}-v1"
    doc = next(yaml.safe_load_all(seen["text"]))
    params = doc["root"]["inputDefinitions"]["parameters"]
    assert params["registered_model_name"]["defaultValue"] == f"{registered.name}-reproduction"
    tasks = doc["components"]["comp-exit-handler-1"]["dag"]["tasks"]
    assert not [t for t, spec in tasks.items() if spec.get("cachingOptions", {}).get("enableCache")]
    base = tasks["open-run"]["inputs"]["parameters"]["base_config"]["runtimeValue"]["constant"]
    rebuilt = RunConfig.from_json(base)
    recorded = RunConfig.from_yaml(
        mlflow.artifacts.download_artifacts(
            run_id=registered.parent_run_id,
            artifact_path="config.yaml",
            dst_path=str(tmp_path),
            tracking_uri=registered.tracking_uri,
        )
    )
    assert rebuilt.distill.deterministic and rebuilt.teacher_sft.deterministic
    assert rebuilt.eval.max_new_tokens == 4 != recorded.eval.max_new_tokens
    assert (rebuilt.distill.seed, rebuilt.teacher, rebuilt.data) == (
        recorded.distill.seed,
        recorded.teacher,
        recorded.data,
    )
    assert rebuilt.cluster.image == recorded.cluster.image  # the recorded images


@pytest.mark.e2e
def test_rebuild_from_the_mlflow_store_alone_is_bit_for_bit(
    registered: Registered, capsys: pytest.CaptureFixture[str]
) -> None:
    from otdistill.models.weights_hash import WEIGHTS_SHA256_TAG

    kept = {"mlflow.db", "mlartifacts"}
    # the models, KFP artifacts and step cache, logs and config go (test_e2e.py's later runs of the same
    # run directory use them: they are moved away for the rebuild and put back afterwards)
    away = registered.tmp / "moved-away"
    away.mkdir()
    for item in list(registered.run_dir.iterdir()):
        if item.name not in kept:
            item.rename(away / item.name)
    try:
        assert {p.name for p in registered.run_dir.iterdir()} == kept
        code = _reproduce(registered, "--local", "--run-dir", str(registered.tmp / "rebuild"))
    finally:
        for item in away.iterdir():
            item.rename(registered.run_dir / item.name)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "verdict: bit-for-bit" in out, out

    client = _client(registered)
    v1 = client.get_model_version(registered.name, "1")
    rebuild = max(
        client.search_model_versions(f"name='{registered.name}-reproduction'"), key=lambda v: int(v.version)
    )
    assert len(v1.tags[WEIGHTS_SHA256_TAG]) == 64
    assert rebuild.tags[WEIGHTS_SHA256_TAG] == v1.tags[WEIGHTS_SHA256_TAG]
    new_parent = client.get_run(rebuild.tags["otdistill.parent_run_id"])
    tags = new_parent.data.tags
    assert tags["otdistill.reproduce.verdict"] == "bit-for-bit"
    assert tags["otdistill.reproduce.original_run_id"] == registered.parent_run_id
    assert tags["otdistill.reproduce.rebuild_run_id"] == new_parent.info.run_id != registered.parent_run_id
    assert tags["otdistill.reproduce.deviations"] == "{}"
    assert new_parent.info.status == "FINISHED"
    # every step ran again (nothing came from a step cache): the rebuild trained its own student
    steps = {
        r.data.tags.get("otdistill.step")
        for r in client.search_runs(
            [registered.experiment_id], f"tags.`mlflow.parentRunId` = '{new_parent.info.run_id}'"
        )
    }
    assert {"prepare_data", "train_teacher", "cache_teacher", "distill_student", "evaluate"} <= steps
