"""The whole DAG, locally (kfp.local SubprocessRunner + SQLite MLflow), with the tiny random model pair.

Run 1 registers v1 and, with no champion yet, promotes it (the SFT baseline is switched off here: random
tiny models all score 0, so "beats the SFT baseline" could never hold; that case is tested in
tests/steps). Run 2, same config: every work step is a cache hit, only the run-scoped steps execute and
`score_champion` (the champion is new: v1, whose score on these rows v1's own registration recorded, so
nothing is generated); v2 is registered for the new pipeline run and, scoring exactly like the champion,
is not promoted. Run 3 changes only the promotion margin and the validation rows: the training split's
preparation, training, the teacher cache and distillation are all cache hits (cache keys hold only what
changes a step's output). Then the champion is loaded as models:/name@champion and generates. Each run's
terminal output is one line per step event (started / finished / cached), the executor output is in the
run's log file.
"""

from __future__ import annotations

import io
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.pipeline.conftest import TinyRun

ROOT = Path(__file__).resolve().parents[2]
WORK_STEPS = {
    "prepare_data",
    "prepare_validation_data",
    "train_teacher",
    "cache_teacher",
    "distill_student",
    "evaluate",
}
# The DAG's steps as the terminal names them (their display names).
DISPLAYED = {
    s.replace("_", "-")
    for s in WORK_STEPS | {"open_run", "reference_model", "score_champion", "register_and_promote"}
}
RUN_SCOPED = {"open-run", "register-and-promote"}  # never cached: they take the run id / write the registry
# Steps whose output a new promotion margin and other validation rows cannot change.
TRAINING_SIDE = {"prepare-data", "reference-model", "train-teacher", "cache-teacher", "distill-student"}
STEP_LINE = re.compile(r"  \[(\d+)/(\d+)\] (\S+) +(started|finished in \d+ s|cached)")


@pytest.mark.e2e
def test_whole_pipeline_locally_with_tiny_models(
    tiny_run: TinyRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    from otdistill.pipelines.local import run_local
    from otdistill.tracking import TrackingConfig, resolve_alias

    cfg, first, run_dir = tiny_run.cfg, tiny_run.result, tiny_run.run_dir  # run 1: the shared fixture
    monkeypatch.setenv("OTDISTILL_CACHE", str(tiny_run.model_cache))
    # as a run leaves it (the fixture restored MLflow's URIs; the autouse fixture restores them after this
    # test): MLflow's table and model lookups go through the fluent API's tracking URI
    mlflow.set_tracking_uri(first.tracking_uri)
    started = time.monotonic() - tiny_run.seconds
    print(tiny_run.terminal + first.summary())
    events = _step_lines(tiny_run.terminal, first.log_path)
    ran = [s for s, what in events if what == "started"]
    assert sorted(ran) == sorted(s for s, what in events if what == "finished") and set(ran) >= DISPLAYED
    assert len(ran) == len(set(ran)) == len(events) // 2  # each step once, started then finished
    assert first.log_path == run_dir / "logs" / f"{first.pipeline_run_id}.log"
    logged = first.log_path.read_text(encoding="utf-8")
    assert "Got executor_input" in logged and '"parameterValues"' in logged  # kfp.local's output, all of it
    assert "distill: 100%" in logged and "generate distilled: 100%" in logged  # progress bars: final states
    name = cfg.tracking.registered_model_name
    client = MlflowClient(tracking_uri=first.tracking_uri, registry_uri=first.tracking_uri)

    assert set(first.scores) == {"teacher", "base_student", "distilled"}
    assert first.model_uri == f"models:/{name}/1" and first.status == "promoted"
    assert first.champion_uri == f"models:/{name}@champion (version 1)"
    parent = client.get_run(first.mlflow_run_id)
    assert parent.info.status == "FINISHED"
    assert "config.yaml" in {a.path for a in client.list_artifacts(first.mlflow_run_id)}
    steps = _steps(client, first.experiment_id, first.mlflow_run_id)
    assert (
        WORK_STEPS | {"reference_model", "register_and_promote"}
        >= steps
        >= WORK_STEPS | {"register_and_promote"}
    )
    v1 = client.get_model_version(name, "1")
    assert v1.tags["otdistill.lineage.data_hash"] == parent.data.tags["otdistill.lineage.data_hash"]
    assert len(v1.tags["otdistill.lineage.data_hash"]) == 64
    assert v1.tags["otdistill.lineage.loss"] == "multilevel_ot"
    assert v1.tags["otdistill.gate.baseline"] == ""  # no SFT baseline in this run
    assert "otdistill.eval.distilled.rougeLsum" in v1.tags
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    _check_what_the_mlflow_ui_shows(client, first.experiment_id, first.mlflow_run_id, v1)

    terminal = io.StringIO()
    second = run_local(cfg, run_dir, terminal=terminal)
    print(terminal.getvalue() + second.summary())
    events = _step_lines(terminal.getvalue(), second.log_path)
    # the champion is new (v1): score_champion runs, and reuses v1's score recorded on these rows
    assert {s for s, what in events if what == "cached"} == DISPLAYED - RUN_SCOPED - {"score-champion"}
    finished = {s for s, what in events if what == "finished"}
    assert finished == RUN_SCOPED | {"score-champion", "close-run"}
    assert second.log_path != first.log_path and second.log_path.exists()
    assert second.mlflow_run_id != first.mlflow_run_id
    assert second.scores == first.scores  # the cached evaluation's scores, on the new parent run
    assert _steps(client, second.experiment_id, second.mlflow_run_id) == {
        "score_champion",
        "register_and_promote",
    }
    (scoring,) = [
        r
        for r in client.search_runs(
            [second.experiment_id], f"tags.`mlflow.parentRunId` = '{second.mlflow_run_id}'"
        )
        if r.data.tags["otdistill.step"] == "score_champion"
    ]
    assert scoring.data.tags["otdistill.champion.source"] == "recorded"
    assert scoring.data.tags["otdistill.champion.version"] == "1"
    assert second.model_uri == f"models:/{name}/2" and second.status == "rejected"
    v2 = client.get_model_version(name, "2")
    assert v2.tags["otdistill.gate.champion_version"] == "1"
    assert v2.tags["otdistill.gate.beats_champion"] == "False"
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    assert str(client.get_model_version_by_alias(name, "challenger").version) == "2"

    # run 3: only gate and validation settings change; nothing on the training side runs again
    third_cfg = cfg.with_overrides({"tracking.promotion_margin": 0.5, "validation.limit": 3})
    terminal = io.StringIO()
    third = run_local(third_cfg, run_dir, terminal=terminal)
    print(terminal.getvalue() + third.summary())
    events = _step_lines(terminal.getvalue(), third.log_path)
    cached = {s for s, what in events if what == "cached"}
    assert cached == TRAINING_SIDE, cached
    assert {s for s, what in events if what == "finished"} == DISPLAYED - TRAINING_SIDE | {"close-run"}
    assert third.model_uri == f"models:/{name}/3"
    elapsed = time.monotonic() - started
    print(f"three local runs: {elapsed:.0f} s")

    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf_dir = resolve_alias(
        name, "champion", TrackingConfig(tracking_uri=first.tracking_uri), tmp_path / "champ"
    )
    model = AutoModelForCausalLM.from_pretrained(hf_dir)
    tok = AutoTokenizer.from_pretrained(hf_dir)
    ids = tok("#Person1#: Hello, how are you?", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]
    assert isinstance(tok.decode(out[0]), str)
    os.environ.pop("OTDISTILL_PIPELINE_RUN_ID", None)


def _check_what_the_mlflow_ui_shows(client: Any, experiment_id: str, parent_id: str, version: Any) -> None:
    """The MLflow store after a local run, read back through the client as the UI reads it: datasets,
    system metrics, metric names in `/` groups, the version's description, its logged model's metrics,
    and the predictions table."""
    runs = {
        r.data.tags["otdistill.step"]: client.get_run(r.info.run_id)
        for r in client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")
    }
    data_hash = version.tags["otdistill.lineage.data_hash"]
    (train,) = runs["prepare_data"].inputs.dataset_inputs
    assert (train.dataset.name, train.dataset.digest) == ("dialogsum/train", data_hash[:16])
    profile = json.loads(train.dataset.profile)
    assert profile["content_sha256"] == data_hash and profile["rows"] == 8 and profile["split"] == "train"
    assert {t.key: t.value for t in train.tags}["mlflow.data.context"] == "training"
    (validation,) = runs["prepare_validation_data"].inputs.dataset_inputs
    (evaluated,) = runs["evaluate"].inputs.dataset_inputs
    assert validation.dataset.digest == evaluated.dataset.digest
    assert {t.key: t.value for t in evaluated.tags}["mlflow.data.context"] == "evaluation"
    for step in ("train_teacher", "cache_teacher", "distill_student"):  # the training snapshot they read
        digests = [d.dataset.digest for d in runs[step].inputs.dataset_inputs]
        assert digests == [train.dataset.digest], step
    for step in ("train_teacher", "cache_teacher", "distill_student", "evaluate"):
        assert any(k.startswith("system/cpu_") for k in runs[step].data.metrics), step
    groups = ("train/", "val/", "eval/", "gate/", "data/", "cache/", "system/")
    for run in [*runs.values(), client.get_run(parent_id)]:
        odd = [k for k in run.data.metrics if not k.startswith(groups)]
        assert not odd, (run.data.tags.get("otdistill.step", "parent"), odd)
    assert "train/loss" in runs["distill_student"].data.metrics
    assert "eval/distilled/rougeLsum" in runs["evaluate"].data.metrics
    assert {"gate/candidate", "gate/promoted"} <= set(client.get_run(parent_id).data.metrics)
    text = version.description
    assert f"| Training data (sha256 of the kept rows) | `{data_hash}` |" in text
    assert "| Loss | `multilevel_ot` |" in text and "**Decision: promoted**" in text
    model = client.get_logged_model(version.source.removeprefix("models:/"))
    assert {"eval/distilled/rougeLsum", "gate/promoted"} <= {m.key for m in model.metrics}
    table = client.load_table(
        experiment_id, "eval/distilled/predictions_table.json", run_ids=[runs["evaluate"].info.run_id]
    )
    assert len(table) == 4 and {"prompt", "prediction", "references", "rougeLsum"} <= set(table.columns)


def _step_lines(shown: str, log_path: Path | None) -> list[tuple[str, str]]:
    """(step, started|finished|cached) for each line a run showed; every line but the header must be one."""
    header, *lines = shown.splitlines()
    assert header.endswith(f": step logs in {log_path}")
    assert "executor_input" not in shown and "{" not in shown
    events, totals = [], set()
    for line in lines:
        match = STEP_LINE.fullmatch(line)
        assert match, f"not a step line: {line!r}"
        totals.add(int(match[2]))
        events.append((match[3], match[4].split()[0]))
    assert totals == {len({s for s, _ in events})}  # "[i/N]": N is the number of steps shown
    return events


def _steps(client: object, experiment_id: str, parent_run_id: str) -> set[str]:
    runs = client.search_runs(  # type: ignore[attr-defined]
        [experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'"
    )
    return {r.data.tags.get("otdistill.step") for r in runs}
