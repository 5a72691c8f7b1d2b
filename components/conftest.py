"""Fixtures for the component tests: each test calls its component's Python function (`.python_func`) on
temporary artifacts, with the tiny model pair, real task rows and a SQLite MLflow store.

Upstream artifacts are produced once per session by calling the upstream components' functions the same
way, so a component test gets real inputs, not hand-made stand-ins.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kfp import dsl

from otdistill.config import RunConfig
from otdistill.steps.common import RUN_ID_ENV
from otdistill.tracking.runs import open_pipeline_run

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "dialogsum"


@dataclass
class Env:
    cfg: RunConfig
    root: Path

    def section(self, step: str) -> str:
        return self.cfg.section_json(step)

    def artifact(self, cls: type[dsl.Artifact], name: str) -> dsl.Artifact:
        """An output artifact whose path is a fresh directory-to-be under the session's root."""
        return cls(name=name, uri=str(self.root / "artifacts" / name))

    def no_test_data(self, name: str) -> dsl.Dataset:
        """`prepare_test_data`'s artifact when no test source is given (what a sweep without one passes
        every evaluation)."""
        from otdistill.components.prepare_test_data.component import prepare_test_data

        data = self.artifact(dsl.Dataset, name)
        prepare_test_data.python_func(
            config=self.section("prepare_validation_data"),
            source="",
            split="test",
            rows=0,
            data=data,
            data_report=self.artifact(dsl.Artifact, f"{name}-report"),
        )
        return data


@pytest.fixture(scope="session")
def env(tiny_pair: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    teacher, student = tiny_pair
    root = tmp_path_factory.mktemp("components")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.create_experiment("components", artifact_location=(root / "mlartifacts").as_uri())
    train = {
        "loss": "none",
        "max_steps": 1,
        "per_device_batch_size": 4,
        "save_steps": 1000,
        "precision": "fp32",
    }
    cfg = RunConfig.from_dict(
        {
            "name": "components",
            "teacher": {"source": str(teacher)},
            "student": {"source": str(student)},
            "data": {"task": "dialogsum", "source": str(SHARED), "limit": 4, "max_length": 160},
            "validation": {"split": "validation", "limit": 2},
            "teacher_sft": train,
            "sft_baseline": train,
            "distill": {**train, "loss": "multilevel_ot", "top_k": 8},
            "eval": {"max_new_tokens": 4, "batch_size": 2, "device": "cpu", "progress": False},
            "tracking": {"tracking_uri": uri, "experiment": "components", "registered_model_name": "comp"},
        }
    )
    old = os.environ.get(RUN_ID_ENV)
    os.environ[RUN_ID_ENV] = "components-session"
    # What `open_run` does first in a pipeline: the steps find this parent by the run id.
    open_pipeline_run(cfg.tracking, "components", pipeline_run_id="components-session")
    yield Env(cfg, root)
    if old is None:
        os.environ.pop(RUN_ID_ENV, None)
    else:
        os.environ[RUN_ID_ENV] = old


@dataclass
class Upstream:
    train: dsl.Dataset
    validation: dsl.Dataset
    data_hash: str
    teacher: dsl.Model
    student: dsl.Model
    cache: dsl.Dataset
    distilled: dsl.Model


@pytest.fixture(scope="session")
def upstream(env: Env) -> Upstream:
    """The DAG's intermediate artifacts, made by the components themselves (in order)."""
    from otdistill.components.cache_teacher.component import cache_teacher
    from otdistill.components.distill_student.component import distill_student
    from otdistill.components.prepare_data.component import prepare_data
    from otdistill.components.reference_model.component import reference_model

    train, val = env.artifact(dsl.Dataset, "up-train"), env.artifact(dsl.Dataset, "up-val")
    data_hash = prepare_data.python_func(
        config=env.section("prepare_data"),
        split="train",
        data=train,
        data_report=env.artifact(dsl.Artifact, "up-report"),
        metrics=env.artifact(dsl.Metrics, "up-metrics"),
    )
    prepare_data.python_func(
        config=env.section("prepare_validation_data"),
        split="validation",
        data=val,
        data_report=env.artifact(dsl.Artifact, "up-val-report"),
        metrics=env.artifact(dsl.Metrics, "up-val-metrics"),
    )
    teacher, student = env.artifact(dsl.Model, "up-teacher"), env.artifact(dsl.Model, "up-student")
    reference_model.python_func(config=env.section("reference_model"), role="teacher", model=teacher)
    reference_model.python_func(config=env.section("reference_model"), role="student", model=student)
    cache = env.artifact(dsl.Dataset, "up-cache")
    cache_teacher.python_func(
        config=env.section("cache_teacher"), teacher_model=teacher, train_data=train, teacher_cache=cache
    )
    distilled = env.artifact(dsl.Model, "up-distilled")
    distill_student.python_func(  # as the pipeline calls it for a loss reading the cache: no teacher_model
        config=env.section("distill_student"),
        teacher_cache=cache,
        train_data=train,
        student_model=distilled,
        metrics=env.artifact(dsl.Metrics, "up-distill-metrics"),
    )
    return Upstream(train, val, data_hash, teacher, student, cache, distilled)
