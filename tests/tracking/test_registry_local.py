"""Promotion rules on a real local MLflow store (SQLite + file artifacts), no server needed.

The HTTP server path, faults and races are in tests/servers; here: metric direction, margins, a champion
without a recorded metric, invalid metrics, and the errors a caller meets when it misuses the API.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from otdistill.tracking import (
    TrackingConfig,
    TrackingError,
    log_student_model,
    register_and_promote,
    resolve_alias,
    start_pipeline_run,
    step_run,
)
from otdistill.tracking.registry import STATUS_TAG

DIALOGUE = {"dialogue": "#Person1#: Hello, how are you?\n#Person2#: Fine, thanks."}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlflow-local")


@pytest.fixture(scope="module")
def logged(store: Path, tiny_pair: tuple[Path, Path]) -> tuple[str, str, TrackingConfig]:
    """One logged tiny student (run_id, model_uri) in a local store, registered under several names."""
    config = TrackingConfig(
        tracking_uri=f"sqlite:///{store}/mlflow.db",
        artifact_location=(store / "artifacts").as_uri(),
        experiment="local",
        race_settle_s=0.0,
    )
    with start_pipeline_run(config, "local") as parent, step_run(parent, "register") as step:
        info = log_student_model(step, tiny_pair[1], task="dialogsum", input_example=DIALOGUE)
    return step.run_id, info.model_uri, config


def test_logged_student_takes_the_raw_input_with_the_evaluation_params(
    logged: tuple[str, str, TrackingConfig],
) -> None:
    import mlflow

    _, model_uri, config = logged
    mlflow.set_tracking_uri(config.tracking_uri)
    signature = mlflow.models.get_model_info(model_uri).signature
    assert signature is not None and signature.params is not None
    params = {p.name: p.default for p in signature.params.params}
    assert params == {"max_new_tokens": 128, "max_prompt_tokens": 1024, "batch_size": 16}  # EvalConfig()
    assert signature.inputs.input_names() == ["dialogue"]
    assert signature.inputs.input_types()[0].name == "string"


def named(config: TrackingConfig, name: str, **changes: object) -> TrackingConfig:
    fields = {**config.__dict__, "registered_model_name": name, **changes}
    return TrackingConfig(**fields)  # type: ignore[arg-type]


def test_lower_is_better_metric_promotes_a_lower_value(logged: tuple[str, str, TrackingConfig]) -> None:
    run_id, uri, base = logged
    config = named(base, "perplexity-model", promotion_metric="perplexity", greater_is_better=False)
    assert register_and_promote(run_id, 12.0, config, model_uri=uri).promoted
    worse = register_and_promote(run_id, 12.5, config, model_uri=uri)
    assert not worse.promoted and "improvement -0.5" in worse.reason
    better = register_and_promote(run_id, 11.0, config, model_uri=uri)
    assert better.promoted and better.champion_value == 12.0
    client = MlflowClient(config.tracking_uri)
    assert str(client.get_model_version_by_alias("perplexity-model", "champion").version) == better.version


def test_margin_is_strict(logged: tuple[str, str, TrackingConfig]) -> None:
    run_id, uri, base = logged
    config = named(base, "margin-model", promotion_margin=0.05)
    register_and_promote(run_id, 0.5, config, model_uri=uri)
    assert not register_and_promote(run_id, 0.55, config, model_uri=uri).promoted  # exactly the margin
    assert register_and_promote(run_id, 0.56, config, model_uri=uri).promoted


def test_equal_score_without_margin_keeps_champion(logged: tuple[str, str, TrackingConfig]) -> None:
    run_id, uri, base = logged
    config = named(base, "equal-model")
    first = register_and_promote(run_id, 0.5, config, model_uri=uri)
    second = register_and_promote(run_id, 0.5, config, model_uri=uri)
    assert not second.promoted and second.champion_version == first.version


def test_champion_without_recorded_metric_is_not_replaced_automatically(
    logged: tuple[str, str, TrackingConfig],
) -> None:
    run_id, uri, base = logged
    config = named(base, "manual-model", promotion_metric="never_logged_metric")
    client = MlflowClient(config.tracking_uri)
    manual = mlflow.register_model(uri, "manual-model")  # registered by hand: no metric tag
    client.set_registered_model_alias("manual-model", "champion", manual.version)
    decision = register_and_promote(run_id, 0.9, config, model_uri=uri)
    assert not decision.promoted and "no recorded never_logged_metric" in decision.reason
    assert client.get_model_version_by_alias("manual-model", "champion").version == manual.version
    assert client.get_model_version("manual-model", decision.version).tags[STATUS_TAG] == "rejected"


def test_non_finite_metric_registers_nothing(logged: tuple[str, str, TrackingConfig]) -> None:
    run_id, uri, base = logged
    config = named(base, "nan-model")
    with pytest.raises(ValueError, match="finite"):
        register_and_promote(run_id, float("nan"), config, model_uri=uri)
    assert MlflowClient(config.tracking_uri).search_model_versions("name='nan-model'") == []


def test_resolve_alias_errors_and_model_logging_outside_step(
    logged: tuple[str, str, TrackingConfig], tiny_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    run_id, _, base = logged
    with pytest.raises(TrackingError, match="holds alias 'champion'"):
        resolve_alias("never-registered", "champion", base, tmp_path)
    with start_pipeline_run(base, "outside") as parent:
        with pytest.raises(TrackingError, match="inside the step_run block"):
            log_student_model(parent, tiny_pair[1], task="dialogsum", input_example=DIALOGUE)
        with step_run(parent, "s") as step, pytest.raises(FileNotFoundError, match="not a Hugging Face"):
            log_student_model(step, tmp_path, task="dialogsum", input_example=DIALOGUE)
