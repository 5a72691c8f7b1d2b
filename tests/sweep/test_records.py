"""Row records as files: a table rebuilt from the rows of several runs that share a trunk (the teacher's
record is the witness), and named errors when runs do not (another teacher, a row scored differently)."""

import json
from pathlib import Path

import pytest

from otdistill.cli import main
from otdistill.sweep.aggregate import SweepRecordError
from otdistill.sweep.config import load_sweep
from otdistill.sweep.records import RECORDS_DIR, read_record_dirs, write_records
from tests.sweep_records import row_record

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "sweeps" / "cpu-small.yaml"
IDS = [f"ex{i}" for i in range(12)]
METRIC = load_sweep(CONFIG)[0].tracking.promotion_metric


def _record(variant: str, seed: int, shift: float) -> dict:
    return row_record(variant, seed, {i: 0.3 + 0.01 * (n % 5) + shift for n, i in enumerate(IDS)}, METRIC)


def _run(folder: Path, rows: list[dict], teacher_shift: float = 0.2) -> Path:
    """A run's `records/` folder as the aggregation writes it, with its teacher scored `teacher_shift` up."""
    return write_records(rows, _record("teacher", 0, teacher_shift), folder)


def test_rows_of_two_runs_with_one_teacher_make_one_table(tmp_path: Path, capsys) -> None:
    a = _run(tmp_path / "a", [_record("sft", 0, 0.0), _record("uld", 0, 0.1)])
    # the second run repeats sft-s0 (a determinism check) and adds seed 1 of both variants
    b = _run(tmp_path / "b", [_record("sft", 0, 0.0), _record("sft", 1, 0.02), _record("uld", 1, 0.12)])
    assert a == tmp_path / "a" / RECORDS_DIR and (a / "teacher.json").is_file()
    records, teacher = read_record_dirs([tmp_path / "a", b])  # a run folder or its records/ folder
    assert sorted(r["row"] for r in records) == ["sft-s0", "sft-s1", "uld-s0", "uld-s1"]
    assert teacher is not None and teacher["variant"] == "teacher"

    out = tmp_path / "table"
    assert main(["sweep", "--config", str(CONFIG), "--records", str(a), str(b), "--out", str(out)]) == 0
    text = (out / "table.md").read_text()
    assert "| sft | 2 |" in text and "| uld | 2 |" in text
    assert "+10.00 [+10.00, +10.00] | better than SFT |" in text  # uld: 0.1 and 0.12 over 0 and 0.02
    assert "| teacher (after SFT; not a student) | 1 |" in text
    assert sorted(p.name for p in (out / RECORDS_DIR).iterdir()) == [
        "sft-s0.json", "sft-s1.json", "teacher.json", "uld-s0.json", "uld-s1.json"
    ]  # fmt: skip
    assert "wrote " in capsys.readouterr().out
    # the table's own records folder reads back to the same table
    assert main(["sweep", "--config", str(CONFIG), "--records", str(out), "--out", str(tmp_path / "t2")]) == 0
    assert (tmp_path / "t2" / "table.md").read_text() == text


def test_records_table_in_the_config_variant_order_not_file_name_order(tmp_path: Path) -> None:
    """multilevel-ot-s0.json sorts before uld-s0.json; the config lists uld first, as the pipeline's loop
    hands them to its aggregation: the table and each pair's direction follow the config."""
    rows = [
        _record(v, s, shift)
        for v, shift in (("sft", 0.0), ("uld", 0.1), ("multilevel_ot", 0.05))
        for s in (1, 0)
    ]
    out, folder = tmp_path / "table", _run(tmp_path / "a", rows)
    assert main(["sweep", "--config", str(CONFIG), "--records", str(folder), "--out", str(out)]) == 0
    text = (out / "table.md").read_text()
    assert text.index("| uld | 2 |") < text.index("| multilevel_ot | 2 |")
    assert "| multilevel_ot | uld | -5.00 [" in text
    assert list(json.loads((out / "pairwise.json").read_text())["validation"]) == ["multilevel_ot vs uld"]


def test_rows_trained_on_two_platforms_say_so_under_the_table(tmp_path: Path) -> None:
    """One teacher, rows from an AVX512 and an AVX2 machine: the table lists each platform's rows (a row
    that did not record the field, as the teacher here, is left out); one platform: no such lines."""

    def on(record: dict, capability: str) -> dict:
        return {**record, "trained_with": {"seed": record["seed"], "torch.cpu_capability": capability,
                                           "torch.num_threads": 2}}  # fmt: skip

    same = [on(_record("sft", 0, 0.0), "AVX512"), on(_record("uld", 0, 0.1), "AVX512")]
    a = _run(tmp_path / "a", same)
    assert main(["sweep", "--config", str(CONFIG), "--records", str(a), "--out", str(tmp_path / "t1")]) == 0
    assert "platform" not in (tmp_path / "t1" / "table.md").read_text()  # seeds differ: not a platform

    b = _run(tmp_path / "b", [on(_record("sft", 1, 0.02), "AVX2"), on(_record("uld", 1, 0.12), "AVX2")])
    out = tmp_path / "t2"
    assert main(["sweep", "--config", str(CONFIG), "--records", str(a), str(b), "--out", str(out)]) == 0
    text = (out / "table.md").read_text()
    assert "Not all rows were trained on one platform" in text
    assert "- torch.cpu_capability: AVX512 (sft-s0, uld-s0); AVX2 (sft-s1, uld-s1)\n" in text
    assert "torch.num_threads" not in text and "teacher-s0" not in text.split("one platform")[1]


def test_records_written_hold_paths_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    row = _record("sft", 0, 0.0)
    provenance = {"sft-s0": {"path": f"{tmp_path}/runs/x/model", "o": "/elsewhere"}}
    row["splits"]["validation"]["provenance"] = provenance
    folder = write_records([row], None, tmp_path / "out")
    written = json.loads((folder / "sft-s0.json").read_text())["splits"]["validation"]["provenance"]
    assert written == {"sft-s0": {"path": "runs/x/model", "o": "/elsewhere"}}


def test_runs_with_different_teachers_do_not_make_one_table(tmp_path: Path) -> None:
    a = _run(tmp_path / "a", [_record("sft", 0, 0.0)])
    b = _run(tmp_path / "b", [_record("sft", 1, 0.0)])
    other = json.loads((b / "teacher.json").read_text())
    other["splits"]["validation"]["row_scores"]["teacher-s0"]["ex3"][METRIC] += 0.01
    other["trained_with"] = {"torch.cpu_capability": "AVX2", "seed": 0}
    (b / "teacher.json").write_text(json.dumps(other))
    differ = (
        r"trained different teachers \(validation: 1 of 12 rows differ \(first: ex3\); "
        r"trained with seed None against 0, torch.cpu_capability None against AVX2\)"
    )
    with pytest.raises(SweepRecordError, match=differ):
        read_record_dirs([a, b])


def test_a_row_scored_differently_by_two_runs_is_named(tmp_path: Path) -> None:
    a = _run(tmp_path / "a", [_record("sft", 0, 0.0)])
    b = _run(tmp_path / "b", [_record("sft", 0, 0.01)])
    with pytest.raises(SweepRecordError, match=r"row sft-s0 is in .* with different scores \(validation"):
        read_record_dirs([a, b])


def test_folders_that_are_not_records_are_named(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SweepRecordError, match="empty: no row records here"):
        read_record_dirs([tmp_path / "empty"])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.json").write_text('{"row": "x"}')
    (tmp_path / "bad" / "y.json").write_text("[1]")
    with pytest.raises(SweepRecordError, match=r"x.json: not a row record \(missing variant, seed, sft, spl"):
        read_record_dirs([tmp_path / "bad"])
    (tmp_path / "bad" / "x.json").unlink()
    with pytest.raises(SweepRecordError, match=r"y.json: not a row record \(a JSON list, not an object\)"):
        read_record_dirs([tmp_path / "bad"])
    lone = [tmp_path / "c", tmp_path / "d"]
    for folder in lone:
        folder.mkdir()
        (folder / "sft-s0.json").write_text(json.dumps(_record("sft", 0, 0.0)))
    with pytest.raises(SweepRecordError, match="no teacher record"):
        read_record_dirs(lone)
    assert main(["sweep", "--config", str(CONFIG), "--records", str(lone[0])]) != 0
    assert "--records needs --out" in capsys.readouterr().err
