"""RunConfig: strict YAML loading, round trips, overrides, per-step sections, pipeline parameter encoding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from otdistill.config import (
    PIPELINE_PARAMETERS,
    STEP_SECTIONS,
    ConfigError,
    RunConfig,
    load_config,
    parameter_overrides,
    pipeline_parameter_defaults,
)

ROOT = Path(__file__).resolve().parents[2]
# Run configs: configs/*.yaml and configs/paper/*.yaml (configs/paper_table/ holds the benchmark's own
# configs, another format).
ALL_CONFIGS = sorted([*(ROOT / "configs").glob("*.yaml"), *(ROOT / "configs" / "paper").glob("*.yaml")])


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_every_shipped_config_loads_and_round_trips(path: Path) -> None:
    cfg = RunConfig.from_yaml(path)
    assert RunConfig.from_json(cfg.to_json()) == cfg
    assert RunConfig.from_dict(__import__("yaml").safe_load(cfg.to_yaml())) == cfg


def test_paper_configs_cover_three_students_on_three_tasks() -> None:
    paper = [RunConfig.from_yaml(p) for p in ALL_CONFIGS if p.parent.name == "paper"]
    assert {c.data.task for c in paper} == {"qed", "fairytaleqa", "dialogsum"}
    assert len({c.student.source for c in paper}) == 3
    assert {c.teacher.source for c in paper} == {"meta-llama/Llama-2-7b-chat-hf"}
    assert all(c.cluster.gpus >= 1 and c.cluster.model_cache_pvc for c in paper)


def test_quickstart_is_sized_for_a_small_cpu() -> None:
    cfg = RunConfig.from_yaml(ROOT / "configs" / "quickstart.yaml")
    assert cfg.teacher.source == "pypi:gemma-3-270m" and cfg.student.source == "pypi:smollm2-135m-instruct"
    assert cfg.data.limit is not None and cfg.data.limit <= 64
    assert cfg.validation.limit is not None and cfg.validation.limit <= 16
    assert max(cfg.teacher_sft.max_steps, cfg.sft_baseline.max_steps, cfg.distill.max_steps) <= 10
    assert cfg.eval.max_new_tokens <= 48 and cfg.data.max_length <= 384


def test_unknown_keys_are_named_with_their_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("distill:\n  learnig_rate: 0.1\ncluster:\n  gpu_tolerations:\n    - {kee: x}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown key\(s\) in distill: learnig_rate"):
        RunConfig.from_yaml(path)
    path.write_text("cluster:\n  gpu_tolerations:\n    - {kee: x}\n")
    with pytest.raises(ConfigError, match=r"cluster.gpu_tolerations\[0\]: kee"):
        RunConfig.from_yaml(path)
    path.write_text("bogus_section: 1\n")
    with pytest.raises(ConfigError, match="unknown key.*bogus_section"):
        RunConfig.from_yaml(path)


def test_wrong_types_and_invalid_values_fail_at_load() -> None:
    with pytest.raises(ConfigError, match="distill.max_steps: expected an integer"):
        RunConfig.from_dict({"distill": {"max_steps": "ten"}})
    with pytest.raises(ConfigError, match="steps.skip_teacher_sft: expected true/false"):
        RunConfig.from_dict({"steps": {"skip_teacher_sft": "yes"}})
    with pytest.raises(ConfigError, match="learning_rate must be > 0"):
        RunConfig.from_dict({"distill": {"learning_rate": 0.0}})
    with pytest.raises(ConfigError, match="gpu_steps names unknown step"):
        RunConfig.from_dict({"cluster": {"gpu_steps": ["train_techer"]}})
    with pytest.raises(ConfigError, match="not one of"):
        RunConfig.from_dict({"cluster": {"gpu_tolerations": [{"operator": "Maybe"}]}})


def test_missing_file_and_bad_yaml_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        RunConfig.from_yaml(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        RunConfig.from_yaml(tmp_path / "list.yaml")


def test_overrides_are_validated_like_files(tmp_path: Path) -> None:
    cfg = load_config(ROOT / "configs" / "tiny.yaml", {"distill.max_steps": 7, "data.limit": None})
    assert cfg.distill.max_steps == 7 and cfg.data.limit is None
    with pytest.raises(ConfigError, match="unknown key.*max_stepz"):
        load_config(ROOT / "configs" / "tiny.yaml", {"distill.max_stepz": 7})


def test_section_json_holds_only_what_the_step_reads() -> None:
    cfg = RunConfig()
    for step, sections in STEP_SECTIONS.items():
        assert set(json.loads(cfg.section_json(step))) == {s.split(".")[0] for s in sections}
        RunConfig.from_json(cfg.section_json(step))  # a partial config still loads
    # a distillation knob changes distillation's input but not data preparation's or teacher SFT's
    changed = cfg.with_overrides({"distill.learning_rate": 1e-3})
    assert changed.section_json("distill_student") != cfg.section_json("distill_student")
    assert changed.section_json("prepare_data") == cfg.section_json("prepare_data")
    assert changed.section_json("train_teacher") == cfg.section_json("train_teacher")
    assert changed.section_json("cache_teacher") == cfg.section_json("cache_teacher")
    assert cfg.with_overrides({"distill.top_k": 20}).section_json("cache_teacher") != cfg.section_json(
        "cache_teacher"
    )


def test_pipeline_parameters_round_trip_through_their_encoding() -> None:
    cfg = RunConfig.from_yaml(ROOT / "configs" / "quickstart.yaml")
    defaults = pipeline_parameter_defaults(cfg)
    assert set(defaults) == set(PIPELINE_PARAMETERS)
    assert defaults["teacher_revision"] == "" and defaults["train_rows"] == 48
    assert cfg.with_overrides(parameter_overrides(defaults)) == cfg
    assert parameter_overrides({"validation_rows": 0})["validation.limit"] is None
    with pytest.raises(ConfigError, match="unknown pipeline parameter"):
        parameter_overrides({"learning_rate": 1.0})


def test_flat_params_are_strings() -> None:
    flat = RunConfig().flat_params()
    assert flat["distill.loss"] == "multilevel_ot"
    assert all(isinstance(v, str) for v in flat.values())
