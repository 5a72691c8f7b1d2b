"""The local runner's config adaptation and its printed summary (the full run is test_e2e.py)."""

from __future__ import annotations

from pathlib import Path

from otdistill.config import RunConfig
from otdistill.pipelines.local import LocalRunResult, local_config
from otdistill.steps.common import COMPONENT_IMAGE

ROOT = Path(__file__).resolve().parents[2]


def test_local_config_uses_sqlite_under_the_run_dir_and_absolute_paths(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(ROOT)
    cfg = RunConfig.from_yaml(ROOT / "configs" / "quickstart.yaml")
    local = local_config(cfg, tmp_path)
    assert local.tracking.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert Path(local.data.source).is_absolute() and Path(local.data.source).is_dir()
    assert local.teacher.source == "pypi:gemma-3-270m"  # not a path: unchanged
    assert local.cluster.image == COMPONENT_IMAGE
    explicit = cfg.with_overrides({"tracking.tracking_uri": "http://mlflow:5000"})
    assert local_config(explicit, tmp_path).tracking.tracking_uri == "http://mlflow:5000"


def test_summary_prints_scores_run_model_and_ui_command(tmp_path: Path) -> None:
    result = LocalRunResult(
        run_dir=tmp_path,
        tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
        artifact_root=tmp_path / "mlartifacts",
        pipeline_run_id="local-1",
        mlflow_run_id="abc123",
        experiment_id="1",
        metric="rougeLsum",
        scores={"teacher": 0.31, "sft_baseline": 0.22, "distilled": 0.25},
        model_uri="models:/m/3",
        champion_uri="models:/m@champion",
        status="promoted",
        reason="beats",
        seconds=600,
    )
    text = result.summary()
    assert "teacher                rougeLsum = 0.3100" in text
    assert "SFT baseline student   rougeLsum = 0.2200" in text
    assert "distilled student      rougeLsum = 0.2500" in text
    assert "abc123" in text and "models:/m/3 -> promoted" in text
    assert f"mlflow ui --backend-store-uri sqlite:///{tmp_path}/mlflow.db" in text


def test_docker_runner_mounts_a_cache_inside_the_run_dir_once(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from otdistill.pipelines.containers import docker_runner

    run_dir = tmp_path / "run"
    data = run_dir / "data"  # a local source inside the run dir: the run dir's mount shows it
    data.mkdir(parents=True)
    outside = tmp_path / "teacher"
    outside.mkdir()
    monkeypatch.setenv("OTDISTILL_CACHE", str(run_dir / "cache"))
    cfg = RunConfig.from_yaml(ROOT / "configs" / "tiny.yaml").with_overrides(
        {"data.source": str(data), "teacher.source": str(outside)}
    )
    mounts = docker_runner(cfg, run_dir, "local-1").container_run_args["mounts"]
    targets = [m["Target"] for m in mounts]
    assert targets == [str(run_dir.resolve()), str(outside.resolve())]
    assert [m["ReadOnly"] for m in mounts] == [False, True]
