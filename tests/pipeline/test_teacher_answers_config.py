"""The authors' recipe as configuration: the `targets` section, its validation, and the trunk that gets the
`teacher_answers` step only when asked (its default leaves configs, cache keys and compiled pipelines as
they were)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from otdistill.config import STEP_SECTIONS, ConfigError, RunConfig, load_config
from otdistill.pipelines.submit import compile_pipeline
from otdistill.sweep.config import load_sweep

ROOT = Path(__file__).resolve().parents[2]
RECIPE = {"steps.skip_teacher_sft": True, "targets.source": "teacher", "targets.few_shot": 2}


def _tasks(path: Path) -> dict[str, Any]:
    """Every task of the compiled pipeline's DAGs, by name."""
    spec = next(yaml.safe_load_all(path.read_text()))
    tasks = dict(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        tasks.update(comp.get("dag", {}).get("tasks", {}))
    return tasks


def _artifact_producer(task: dict[str, Any], name: str) -> str:
    return str(task["inputs"]["artifacts"][name]["taskOutputArtifact"]["producerTask"])


def _consumers(tasks: dict[str, Any], producer: str, output: str) -> set[str]:
    """The tasks (or loops) that take the artifact `output` of task `producer`."""
    return {
        name
        for name, task in tasks.items()
        for spec in task.get("inputs", {}).get("artifacts", {}).values()
        if spec.get("taskOutputArtifact") == {"producerTask": producer, "outputArtifactKey": output}
    }


def test_the_default_targets_leave_the_config_as_it_was() -> None:
    cfg = load_config(ROOT / "configs" / "tiny.yaml")
    assert cfg.targets.source == "gold" and "targets" not in cfg.to_dict()
    assert '"targets"' not in cfg.to_json()  # open_run's input (`base_config`): the whole config
    for step in set(STEP_SECTIONS) - {"teacher_answers", "open_run"}:
        assert '"targets"' not in cfg.section_json(step), step
    recipe = cfg.with_overrides(RECIPE)
    assert recipe.to_dict()["targets"]["few_shot"] == 2
    assert RunConfig.from_json(recipe.to_json()) == recipe  # the section round-trips when set
    assert recipe.section_json("cache_teacher") == cfg.with_overrides(
        {"steps.skip_teacher_sft": True}
    ).section_json("cache_teacher")  # the cache's key moves with its data artifact, not with this section
    assert '"few_shot": 2' in recipe.section_json("teacher_answers")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"targets.source": "teacher", "steps.skip_teacher_sft": True},
            r"targets.source is 'teacher', but the teacher cannot answer.*targets.few_shot",
        ),
        ({"targets.few_shot": 2}, r"targets.few_shot is 2, but targets.source is 'gold'"),
        ({**RECIPE, "targets.few_shot": 8}, r"targets.few_shot \(8\) must be smaller than data.limit \(8\)"),
        ({**RECIPE, "targets.few_shot": -1}, r"targets.few_shot must be >= 0"),
        ({**RECIPE, "targets.source": "silver"}, r"targets.source: 'silver' is not one of 'gold', 'teacher'"),
        ({**RECIPE, "targets.max_new_tokens": 0}, r"targets.max_new_tokens must be >= 1"),
        ({**RECIPE, "targets.shots": 2}, r"unknown key\(s\) in targets: shots"),
    ],
)
def test_targets_validation_names_the_field(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(ROOT / "configs" / "tiny.yaml", overrides)


def test_a_tuned_teacher_may_answer_zero_shot() -> None:
    cfg = load_config(ROOT / "configs" / "tiny.yaml", {"targets.source": "teacher"})
    assert cfg.targets.from_teacher and cfg.targets.few_shot == 0 and not cfg.steps.skip_teacher_sft


def test_the_trunk_has_the_teacher_answers_step_only_when_asked(tmp_path: Path) -> None:
    cfg = load_config(ROOT / "configs" / "tiny.yaml")
    gold = _tasks(compile_pipeline(cfg, tmp_path / "gold.yaml"))
    assert "teacher-answers" not in gold
    assert _artifact_producer(gold["cache-teacher"], "train_data") == "prepare-data"
    recipe = _tasks(compile_pipeline(cfg.with_overrides(RECIPE), tmp_path / "recipe.yaml"))
    answers = recipe["teacher-answers"]
    assert _artifact_producer(answers, "teacher_model") == "reference-model"
    assert _artifact_producer(answers, "train_data") == "prepare-data"
    for consumer in ("cache-teacher", "distill-student", "train-sft"):  # train-sft: the SFT baseline
        assert _artifact_producer(recipe[consumer], "train_data") == "teacher-answers", consumer
    lineage = recipe["register-and-promote"]["inputs"]["parameters"]["data_hash"]
    assert lineage["taskOutputParameter"]["producerTask"] == "teacher-answers"
    # it runs the teacher as the cache does: a GPU step exactly when cache_teacher is one
    executors = next(yaml.safe_load_all((tmp_path / "recipe.yaml").read_text()))["deploymentSpec"][
        "executors"
    ]
    for executor in ("exec-teacher-answers", "exec-cache-teacher"):
        accelerator = executors[executor]["container"]["resources"]["accelerator"]
        assert accelerator["resourceType"] == "nvidia.com/gpu" and accelerator["resourceCount"] == "1", (
            executor
        )


def test_a_sweep_trains_every_row_on_the_teacher_answers(tmp_path: Path) -> None:
    from otdistill.pipelines.sweep_pipeline import build_sweep_pipeline

    cfg, sweep = load_sweep(ROOT / "configs" / "sweeps" / "cpu-small.yaml", RECIPE)
    path = compile_pipeline(cfg, tmp_path / "sweep.yaml", build=lambda c: build_sweep_pipeline(c, sweep))
    tasks = _tasks(path)
    assert _consumers(tasks, "prepare-data", "data") == {"teacher-answers"}  # the gold rows: only there
    # the cache and both loops (the SFT row and the distilled rows, each x seeds) take the answers
    takers = _consumers(tasks, "teacher-answers", "data")
    assert "cache-teacher" in takers and sum(name.startswith("for-loop") for name in takers) == 2
