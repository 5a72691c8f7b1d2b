"""The paper table as a thin layer over the sweep: its plans load every task's sweep config (with the
task's and the command line's overrides), bad plans fail naming the file and the task, and the report is
rendered from sweep aggregates whose outcome is known (built by `otdistill.sweep.aggregate` from
constructed row records) and from a parent MLflow run's `sweep/` files. Running the sweeps themselves is
tests/pipeline/test_sweep.py's end-to-end test.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from benchmarks.paper_table import CONFIG_DIR, download_aggregate, load_plan, main, read_table, render_report

from otdistill.config import ConfigError
from otdistill.sweep import aggregate
from tests.sweep_records import row_record

IDS = [f"e{i}" for i in range(20)]
SWEEPS = "configs/sweeps/"


def _scores(shift: float) -> dict[str, float]:
    """Example i scores 0.3 + 0.01 (i mod 4) + `shift`."""
    return {i: 0.3 + 0.01 * (n % 4) + shift for n, i in enumerate(IDS)}


def _aggregate(folder: Path, metric: str, shifts: dict[str, float]) -> Path:
    """The aggregation's files for variants shifted by `shifts` from SFT (seeds 0 and 1, 0.01 apart)."""
    records = [
        row_record(v, s, _scores(d + 0.01 * s), metric)
        for v, d in [("sft", 0.0), *shifts.items()]
        for s in (0, 1)
    ]
    aggregate.write_files(aggregate.summarize(records, metric, resamples=500), folder, folder.parent.name)
    return folder


@pytest.mark.parametrize("budget", ["cpu", "gpu"])
def test_plans_load_each_task_sweep_with_its_overrides(budget: str) -> None:
    plan = load_plan(CONFIG_DIR / f"{budget}.yaml", {"distill.max_steps": 3})
    tasks = {"dialogsum", "qed"} | ({"fairytaleqa"} if budget == "gpu" else set())
    assert set(plan.tasks) == tasks and plan.results.parent.name == "results"
    metrics = {"dialogsum": "rougeLsum", "qed": "f1", "fairytaleqa": "rougeL"}
    for task, item in plan.tasks.items():
        assert item.cfg.data.task == task and item.cfg.distill.max_steps == 3
        assert [v.name for v in item.sweep.variants][:3] == ["sft", "uld", "multilevel_ot"]
        assert item.cfg.tracking.promotion_metric == metrics[task]
    # one registered model and one MLflow run name per task: the tasks' students never mix
    assert len({item.cfg.tracking.registered_model_name for item in plan.tasks.values()}) == len(tasks)
    assert len({item.cfg.name for item in plan.tasks.values()}) == len(tasks)


BAD_PLANS = {  # a change to the cpu plan -> what the error must say
    "task": ({"tasks": {"qed": {"sweep": SWEEPS + "paper-dialogsum.yaml"}}}, "prepares task"),
    "file": ({"tasks": {"qed": {"sweep": SWEEPS + "nope.yaml"}}}, r"tasks\.qed\.sweep: no file"),
    "key": ({"budget": 1}, r"unknown key\(s\) budget"),
    "set": (
        {"tasks": {"qed": {"sweep": SWEEPS + "paper-qed.yaml", "set": {"distill.lr": 1}}}},
        r"tasks\.qed \(configs/sweeps/paper-qed\.yaml\):.*lr",
    ),
}


@pytest.mark.parametrize("case", BAD_PLANS)
def test_bad_plans_name_the_file_and_the_task(case: str, tmp_path: Path) -> None:
    change, message = BAD_PLANS[case]
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump({**yaml.safe_load((CONFIG_DIR / "cpu.yaml").read_text()), **change}))
    with pytest.raises(ConfigError, match=message):
        load_plan(path)


def test_a_task_outside_the_plan_is_refused() -> None:
    with pytest.raises(ConfigError, match="no task fairytaleqa"):
        load_plan(CONFIG_DIR / "cpu.yaml", tasks=["fairytaleqa"])


def test_report_puts_the_tasks_side_by_side_with_intervals_and_verdicts(tmp_path: Path) -> None:
    dialogsum = _aggregate(tmp_path / "d" / "sweep", "rougeLsum", {"uld": 0.0, "multilevel_ot": 0.05})
    qed = _aggregate(tmp_path / "q" / "sweep", "f1", {"uld": -0.02, "multilevel_ot": 0.0})
    tables = {"dialogsum": read_table(dialogsum), "qed": read_table(qed)}
    text = render_report("plan-x", tables, command="python benchmarks/paper_table.py", notes="Seen: noise.")
    assert "| row | dialogsum (rougeLsum, 20 rows) | qed (f1, 20 rows) |" in text
    assert "| sft | 32.00 ± 0.71 | 32.00 ± 0.71 |" in text  # 0.3 + 0.015 + the seeds' 0.005; sd of 0, 0.01
    assert "| multilevel_ot | 37.00 ± 0.71 | 32.00 ± 0.71 |" in text
    assert (
        "| multilevel_ot | +5.00 [+5.00, +5.00] better than SFT | +0.00 [+0.00, +0.00] not distinguishable "
        "from SFT |" in text
    )
    assert (
        "| uld | +0.00 [+0.00, +0.00] not distinguishable from SFT | -2.00 [-2.00, -2.00] worse than SFT |"
        in text
    )
    assert "| sft | (the reference) | (the reference) |" in text
    assert "| multilevel_ot | 37.61 | 58.97 |" in text  # the paper's, for scale
    assert "- qed: `models:/m-sft/1`, `models:/m-sft/2`, `models:/m-uld/1`" in text
    assert "## Analysis\n\nSeen: noise." in text


def test_main_renders_from_an_earlier_run_and_from_a_parent_mlflow_run(tmp_path: Path) -> None:
    import mlflow

    run_dir = tmp_path / "run"
    _aggregate(run_dir / "dialogsum" / "sweep", "rougeLsum", {"uld": 0.01, "multilevel_ot": 0.02})
    # qed's sweep ran elsewhere: its aggregate is on a parent MLflow run
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.tracking.MlflowClient(uri)
    experiment = client.create_experiment("paper", artifact_location=(tmp_path / "mlartifacts").as_uri())
    parent = client.create_run(experiment).info.run_id
    for f in _aggregate(
        tmp_path / "qed-elsewhere" / "sweep", "f1", {"uld": 0.0, "multilevel_ot": -0.03}
    ).iterdir():
        client.log_artifact(parent, str(f), aggregate.ARTIFACT_DIR)
    out = tmp_path / "report.md"
    argv = ["--budget", "cpu", "--report-only", "--run-dir", str(run_dir), "--results", str(out)]
    argv += ["--set", f"tracking.tracking_uri={uri}", "--mlflow-run", f"qed={parent}"]
    assert main(argv) == 0
    text = out.read_text()
    assert (
        "| multilevel_ot | +2.00 [+2.00, +2.00] better than SFT | -3.00 [-3.00, -3.00] worse than SFT |"
        in text
    )
    assert f"Made by `python benchmarks/paper_table.py {' '.join(argv)}`" in text
    assert (out.parent / "report_qed.png").read_bytes()[:4] == b"\x89PNG"
    assert (run_dir / "qed" / "sweep" / "comparisons.json").is_file()  # downloaded next to the run
    # or from a folder of aggregation files (a committed result)
    again = tmp_path / "again.md"
    argv = ["--budget", "cpu", "--report-only", "--run-dir", str(run_dir), "--results", str(again)]
    assert main([*argv, "--table", f"qed={tmp_path / 'qed-elsewhere' / 'sweep'}"]) == 0
    assert "-3.00 [-3.00, -3.00] worse than SFT |" in again.read_text()
    with pytest.raises(ConfigError, match="--table expects TASK=VALUE for a task of the plan, got fairytale"):
        main([*argv, "--table", "fairytale=x"])
    with pytest.raises(FileNotFoundError, match="no sweep/table.csv"):
        download_aggregate(uri, client.create_run(experiment).info.run_id, tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no sweep table here"):
        main(["--budget", "cpu", "--report-only", "--run-dir", str(tmp_path / "none"), "--results", str(out)])
