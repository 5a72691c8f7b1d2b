"""Config values and files that must be refused when the config is loaded, before any step runs: the CLI
exits 2 with a config error that names the file and the field, never a traceback or a run that does
something other than what was written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from otdistill import cli
from otdistill.config import load_config

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny.yaml"


def _tiny_with(tmp_path: Path, section: str, key: str, value: object) -> Path:
    data = yaml.safe_load(TINY.read_text(encoding="utf-8"))
    data.setdefault(section, {})[key] = value
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _compile(config: Path, tmp_path: Path) -> int:
    return cli.main(["compile", "--config", str(config), "-o", str(tmp_path / "pipeline.yaml")])


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        # read as "one epoch" before: a smoke test's typo became a full run
        ("distill", "max_steps", -5, "TrainConfig.max_steps must be >= 0, got -5"),
        ("distill", "learning_rate", float("inf"), "distill.learning_rate: expected a finite number"),
        ("teacher_sft", "learning_rate", float("nan"), "teacher_sft.learning_rate: expected a finite number"),
        ("validation", "limit", -3, "validation.limit must be a row count >= 1, or null for all rows"),
        # 0 rows is never meant, and the row-count pipeline parameters read 0 as "all rows"
        ("data", "limit", 0, "DataConfig.limit must be a row count >= 1, or null for all rows; got 0"),
        ("data", "max_field_chars", -1, "DataConfig.max_field_chars must be >= 1"),
    ],
)
def test_bad_values_exit_2_naming_file_and_field(
    section: str, key: str, value: object, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _tiny_with(tmp_path, section, key, value)
    assert _compile(path, tmp_path) == 2
    err = capsys.readouterr().err
    assert f"otdistill: config error: {path}: {section}" in err and message in err
    assert not (tmp_path / "pipeline.yaml").exists()


def test_max_steps_zero_is_the_explicit_epoch_setting(tmp_path: Path) -> None:
    path = _tiny_with(tmp_path, "distill", "max_steps", 0)
    assert load_config(path).distill.num_epochs == 1.0  # accepted: trains for num_epochs epochs
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["distill"]["num_epochs"] = 0
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ValueError, match="max_steps is 0 .epoch-based. but num_epochs is 0"):
        load_config(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the config file is empty"),
        ("# only a comment\n", "the config file is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff", "not a UTF-8 text file"),
        (b"name: tiny\nteacher: " + b"[" * 1_500 + b"]" * 1_500 + b"\n", "nested too deeply"),
        ("data:\n  task_spec: &t {fields: *t}\n", "data.task_spec.fields: the value refers to itself"),
        (
            "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join(
                f"{n}: &{n} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
                for p, n in zip("abcdefgh", "bcdefghi", strict=True)
            ),
            "values once YAML anchors are expanded",
        ),
    ],
)
def test_unusable_files_exit_2_naming_the_file(
    content: str | bytes, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "run.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    assert _compile(path, tmp_path) == 2
    err = capsys.readouterr().err
    assert f"otdistill: config error: {path}: " in err and message in err


def test_a_directory_as_config_exits_2_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _compile(tmp_path, tmp_path) == 2
    assert f"otdistill: config error: {tmp_path}: cannot read the config file" in capsys.readouterr().err


def test_an_explicit_empty_mapping_means_all_defaults(tmp_path: Path) -> None:
    path = tmp_path / "defaults.yaml"
    path.write_text("{}\n", encoding="utf-8")
    assert load_config(path).name == "otdistill"
