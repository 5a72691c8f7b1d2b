"""The paper-table harness end to end on the tiny random pair: every stage in its own child process, the
markdown table with mean and spread, per-row cost columns, the PNG, registration, loading by model URI,
and resuming without retraining.

The tiny models score ~0 on any metric: the test checks the harness, not the numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmarks.paper_table import (
    STUDENT_ROWS,
    BenchmarkConfigError,
    load_plan,
    main,
    parse_overrides,
    row_config,
    run_task,
    task_config,
    write_report,
)

from otdistill.config import ConfigError

SEEDS = (0, 1)


def _argv(teacher: Path, student: Path, tmp_path: Path) -> list[str]:
    overrides = {
        "teacher.source": str(teacher),
        "student.source": str(student),
        "data.limit": 8,
        "data.max_length": 128,
        "validation.limit": 4,
        "teacher_sft.max_steps": 2,
        "teacher_sft.learning_rate": 1e-3,
        "distill.max_steps": 2,
        "distill.learning_rate": 1e-3,
        "distill.top_k": 8,
        "eval.max_new_tokens": 8,
        "eval.max_prompt_tokens": 96,
        "eval.batch_size": 4,
    }
    argv = ["--budget", "cpu", "--tasks", "dialogsum", "--seeds", *map(str, SEEDS)]
    argv += ["--run-dir", str(tmp_path / "run"), "--results", str(tmp_path / "out" / "paper_table.md")]
    for key, value in overrides.items():
        argv += ["--config-override", f"{key}={value}"]
    return argv


def test_rows_differ_only_by_loss_and_seed() -> None:
    plan = load_plan("cpu", None, [], None)
    base = task_config(plan, "qed")
    sft, ot, no_sd = (row_config(base, r, 7) for r in ("sft", "multilevel_ot", "multilevel_ot_no_sd"))
    assert sft.sft_baseline.loss == "none" and sft.sft_baseline.max_steps == ot.distill.max_steps
    assert sft.sft_baseline.learning_rate == ot.distill.learning_rate == no_sd.distill.learning_rate
    assert ot.distill.seed == no_sd.distill.seed == sft.sft_baseline.seed == 7
    assert no_sd.distill.gamma == 0.0 and no_sd.distill.beta == ot.distill.beta > 0
    assert base.tracking.promotion_metric == "f1" and base.tracking.tracking_uri.startswith("sqlite:///")


@pytest.mark.parametrize("budget", ["cpu", "gpu"])
def test_budget_configs_load_for_every_task_and_row(budget: str) -> None:
    plan = load_plan(budget, None, [], None)  # validates every task x row config
    assert set(plan.spec.tasks) == {"dialogsum", "fairytaleqa", "qed"} and len(plan.spec.seeds) >= 2
    for task in plan.spec.tasks:
        cfg = task_config(plan, task)
        assert cfg.data.task == task and Path(cfg.data.source).name == task
        assert cfg.teacher.source == "pypi:gemma-3-270m"
        assert cfg.student.source == "pypi:smollm2-135m-instruct"


def test_config_errors_name_the_problem() -> None:
    with pytest.raises(ConfigError, match="learnig_rate"):
        load_plan("cpu", None, ["distill.learnig_rate=1e-4"], None)
    with pytest.raises(BenchmarkConfigError, match="unknown row"):
        load_plan("cpu", None, ["benchmark.rows=[sft, ot]"], None)
    with pytest.raises(BenchmarkConfigError, match="budget has"):
        load_plan("cpu", None, [], None, tasks=["squad"])
    with pytest.raises(BenchmarkConfigError, match="key=value"):
        parse_overrides(["distill.max_steps"])
    assert parse_overrides(["distill.learning_rate=1e-4", "benchmark.seeds=[3]"]) == (
        {"distill.learning_rate": 1e-4},
        {"seeds": [3]},
    )


class StubRunner:
    """Stands in for the child processes: records the stages asked for, fails the rows it is told to."""

    def __init__(self, fail: set[str]) -> None:
        self.fail = fail
        self.calls: list[str] = []

    def run(self, stage: str, run_id: str, **kwargs: object) -> dict[str, object]:
        name = str(kwargs.get("row", stage))
        self.calls.append(name if kwargs.get("seed") is None else f"{name}-seed{kwargs['seed']}")
        if name in self.fail:
            raise FloatingPointError(f"{name}: non-finite gradient norm")
        if stage in ("prepare", "teacher", "cache"):
            return {"seconds": 1.0, "peak_rss_mb": 10.0, "train_rows": 8, "validation_rows": 4, "examples": 8}
        score = 0.1 * (len(self.calls) % 3)
        out: dict[str, object] = {"metric": "f1", "score": score, "eval_seconds": 1.0, "eval_rows": 4}
        if stage == "student":
            out.update(train_seconds=2.0, train_peak_rss_mb=20.0, global_step=2, model_uri="models:/x/1")
        return out


def test_a_failing_row_is_reported_and_the_others_run(tmp_path: Path) -> None:
    plan = load_plan("cpu", None, [], tmp_path / "run", tasks=["qed"], seeds=[0, 1])
    runner = StubRunner(fail={"uld"})
    results, failures = run_task(plan, runner, "qed", keep_models=False)  # type: ignore[arg-type]
    assert [f["row"] for f in failures] == ["uld-seed0", "uld-seed1"]
    assert len(results) == 2 + 4 * 2 and "uld" not in {r["row"] for r in results}
    md = tmp_path / "paper_table.md"
    write_report(plan, results, md, 1.0, failures, notes="Tried a 4x longer run: same picture.")
    text = md.read_text(encoding="utf-8")
    assert "## Analysis" in text and "Tried a 4x longer run" in text
    assert "## Failed (not in the table)" in text and "FloatingPointError" in text
    assert "| qed | Student SFT (CE only) |" in text

    # resume: only the failed rows run again; a changed student setting re-runs the student rows only
    again = StubRunner(fail=set())
    run_task(plan, again, "qed", keep_models=False)  # type: ignore[arg-type]
    assert again.calls == ["uld-seed0", "uld-seed1"]
    plan.run_overrides["distill.learning_rate"] = 1e-4
    changed = StubRunner(fail=set())
    run_task(plan, changed, "qed", keep_models=False)  # type: ignore[arg-type]
    assert len(changed.calls) == 5 * 2
    assert not {"prepare", "teacher", "cache", "zero_shot"} & set(changed.calls)


@pytest.mark.e2e
def test_paper_table_end_to_end_on_tiny_pair(
    tiny_pair: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    import pandas as pd
    from mlflow.tracking import MlflowClient

    teacher, student = tiny_pair
    monkeypatch.setenv("OTDISTILL_CACHE", str(tmp_path / "model-cache"))
    argv = _argv(teacher, student, tmp_path)
    assert main(argv) == 0

    md_path = tmp_path / "out" / "paper_table.md"
    md = md_path.read_text(encoding="utf-8")
    assert "| row | dialogsum (rougeLsum) |" in md
    for title in ("Teacher", "Student zero-shot", *(r.title for r in STUDENT_ROWS.values())):
        assert f"| {title}" in md
    assert "±" in md  # mean ± spread over the two seeds
    assert (
        "| task | row | train s | peak RSS MiB | peak GPU MiB | eval s | optimizer steps | train rows |" in md
    )
    assert "## Package versions" in md and "## Machine" in md and "```yaml" in md
    png = md_path.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    rows_dir = tmp_path / "run" / "dialogsum" / "rows"
    results = [json.loads(p.read_text()) for p in sorted(rows_dir.glob("*/result.json"))]
    assert len(results) == 2 + len(STUDENT_ROWS) * len(SEEDS)
    trained = [r for r in results if r["seed"] is not None]
    for r in trained:
        assert r["train_seconds"] > 0 and r["train_peak_rss_mb"] > 0 and r["global_step"] == 2
        assert r["metric"] == "rougeLsum" and 0.0 <= r["score"] <= 1.0
        cost_row = f"| dialogsum | {STUDENT_ROWS[r['row']].title} | "
        assert cost_row in md
    # every trained student is registered once, with its config, and loads by its models:/ URI
    uri = f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)  # an earlier test in this process may have pointed the registry elsewhere
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert len({r["model_uri"] for r in trained}) == len(trained)
    for r in trained:
        name, version = r["registered_name"], r["version"]
        mv = client.get_model_version(name, version)
        assert mv.tags["otdistill.paper_table.seed"] == str(r["seed"])
        assert mv.run_id and "config.yaml" in {a.path for a in client.list_artifacts(mv.run_id)}
        assert r["model_uri"] in md
        served = mlflow.pyfunc.load_model(r["model_uri"])  # answers a raw DialogSum input
        dialogue = "#Person1#: Hello, how are you?\n#Person2#: Fine, thanks."
        answers = served.predict(pd.DataFrame([{"dialogue": dialogue}]), params={"max_new_tokens": 2})
        assert len(answers) == 1 and isinstance(answers[0], str) and dialogue not in answers[0]

    # resuming: nothing is retrained or registered again, the report is rewritten from the stored results
    stamps = {p: p.stat().st_mtime_ns for p in rows_dir.glob("*/result.json")}
    assert main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in rows_dir.glob("*/result.json")} == stamps
    for r in trained:
        assert len(client.search_model_versions(f"name='{r['registered_name']}'")) == len(SEEDS)
