"""The sweep (issue 17 item 1): its config, its rows, its compiled pipeline for a cluster, its aggregation,
and `otdistill sweep` end to end with the tiny random pair (2 variants x 2 seeds, held-out test rows).

The tiny models score ~0: the end-to-end test checks the pipeline, the records, the table and intervals on
the parent MLflow run and the registrations, not the numbers.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import torch
import yaml

from otdistill.config import ConfigError
from otdistill.sweep import aggregate
from otdistill.sweep.config import load_sweep
from otdistill.sweep.rows import loop_items, row_config, row_configs
from otdistill.tracking.metric_names import sweep_metric
from tests.sweep_records import row_record

ROOT = Path(__file__).resolve().parents[2]
SWEEPS = sorted((ROOT / "configs" / "sweeps").glob("*.yaml"))
CPU_SMALL = ROOT / "configs" / "sweeps" / "cpu-small.yaml"


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_shipped_sweep_configs_load_with_an_sft_row(path: Path) -> None:
    cfg, sweep = load_sweep(path)
    assert sweep.sft_variant.name == "sft" and len(sweep.seeds) == 3
    assert cfg.teacher.source == "pypi:smollm2-135m-instruct" and cfg.student.source == "pypi:gemma-3-270m"
    assert {v.name for v in sweep.variants} >= {"sft", "uld", "multilevel_ot"}


def test_cpu_small_is_one_task_three_rows_three_seeds() -> None:
    cfg, sweep = load_sweep(CPU_SMALL)
    assert [v.name for v in sweep.variants] == ["sft", "uld", "multilevel_ot"] and sweep.seeds == [0, 1, 2]
    assert cfg.tracking.promotion_metric == "f1" and cfg.data.task == "qed"


def test_sweep_config_is_strict_and_set_reaches_both_parts(tmp_path: Path) -> None:
    cfg, sweep = load_sweep(CPU_SMALL, {"sweep.seeds": [4, 5], "distill.max_steps": 3})
    assert sweep.seeds == [4, 5] and cfg.distill.max_steps == 3
    data = yaml.safe_load(CPU_SMALL.read_text())
    cases = {
        "sweep: seedz": (
            {**data, "sweep": {**data["sweep"], "seedz": [0]}},
            r"unknown key\(s\) in sweep: seedz",
        ),
        "variant key": (
            {
                **data,
                "sweep": {
                    **data["sweep"],
                    "variants": [{"name": "sft", "sft": True}, {"name": "x", "lr": 1}],
                },
            },
            r"unknown key\(s\) in sweep.variants\[1\]: lr",
        ),
        "not distill": (
            {
                **data,
                "sweep": {
                    **data["sweep"],
                    "variants": [
                        {"name": "sft", "sft": True},
                        {"name": "x", "overrides": {"eval.batch_size": 2}},
                    ],
                },
            },
            "must be a key of distill",
        ),  # fmt: skip
        "shared cache": (
            {
                **data,
                "sweep": {
                    **data["sweep"],
                    "variants": [
                        {"name": "sft", "sft": True},
                        {"name": "x", "overrides": {"distill.top_k": 5}},
                    ],
                },
            },
            "teacher cache every row shares",
        ),  # fmt: skip
        "bad value": (
            {
                **data,
                "sweep": {
                    **data["sweep"],
                    "variants": [
                        {"name": "sft", "sft": True},
                        {"name": "x", "overrides": {"distill.loss": "ot"}},
                    ],
                },
            },
            "sweep.variants.x",
        ),  # fmt: skip
        "teacher": (
            {
                **data,
                "sweep": {**data["sweep"], "variants": [{"name": "sft", "sft": True}, {"name": "teacher"}]},
            },
            "names the teacher's own row",
        ),
        "no sft": (
            {**data, "sweep": {**data["sweep"], "variants": [{"name": "x"}, {"name": "y"}]}},
            "SFT row",
        ),
        "run config": ({**data, "distill": {**data["distill"], "learnig_rate": 1}}, "learnig_rate"),
        "across sections": (
            {**data, "sft_baseline": {**data["sft_baseline"], "eval_every_steps": 4}},
            "baseline",
        ),
    }
    for name, (doc, message) in cases.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(doc))
        with pytest.raises(ConfigError, match=message):
            load_sweep(path)
    with pytest.raises(ConfigError, match="needs a top-level `sweep:`"):
        load_sweep(ROOT / "configs" / "tiny.yaml")


def test_rows_differ_only_by_their_overrides_and_seed(tmp_path: Path) -> None:
    cfg, sweep = load_sweep(ROOT / "configs" / "sweeps" / "paper-qed.yaml")
    items = loop_items(sweep, sft=False)
    assert [i["row"] for i in items[:3]] == ["uld-s0", "uld-s1", "uld-s2"] and len(items) == 4 * 3
    assert [i["row"] for i in loop_items(sweep, sft=True)] == ["sft-s0", "sft-s1", "sft-s2"]
    path = tmp_path / "config.yaml"
    path.write_text(cfg.to_yaml())
    sft = json.loads(row_configs(path, loop_items(sweep, sft=True)[1])["train"])
    no_sd = json.loads(row_configs(path, items[-4])["train"])  # multilevel_ot_no_sd, seed 2
    assert sft["sft_baseline"]["loss"] == "none" and sft["sft_baseline"]["seed"] == 1
    assert no_sd["distill"]["gamma"] == 0.0 and no_sd["distill"]["seed"] == 2
    same = {k: v for k, v in sft["sft_baseline"].items() if k not in ("loss", "seed", "gamma")}
    assert same == {k: v for k, v in no_sd["distill"].items() if k not in ("loss", "seed", "gamma")}
    ot = row_config(cfg, sweep.variants[2], 0)
    assert ot.distill.loss == "multilevel_ot" and ot.distill.gamma == cfg.distill.gamma


def test_aggregation_compares_every_variant_with_sft_seeds_averaged_per_row(tmp_path: Path) -> None:
    ids = [f"e{i}" for i in range(40)]
    base = {i: 0.2 + 0.01 * (n % 7) for n, i in enumerate(ids)}
    records = [
        row_record("sft", 0, base, sft=True),
        row_record("sft", 1, {i: v + 0.02 for i, v in base.items()}, sft=True),
        row_record("better", 0, {i: v + 0.1 for i, v in base.items()}),
        row_record("better", 1, {i: v + 0.12 for i, v in base.items()}),
        row_record("same", 0, {i: v + (0.05 if n % 2 else -0.05) for n, (i, v) in enumerate(base.items())}),
        row_record("same", 1, {i: v + (0.07 if n % 2 else -0.03) for n, (i, v) in enumerate(base.items())}),
    ]
    summary = aggregate.summarize(records, "f1", resamples=2000)
    cells = {c.variant: c for c in summary.cells["validation"]}
    assert list(cells) == ["sft", "better", "same"] and cells["sft"].comparison is None
    better, same = cells["better"].comparison, cells["same"].comparison
    assert better is not None and same is not None
    assert better.mean_diff == pytest.approx(0.1) and better.low > 0 and better.rows == 40
    assert same.low < 0 < same.high
    files = aggregate.write_files(summary, tmp_path, "test")
    table = files["table"].read_text()
    assert "| better | 2 |" in table and "better than SFT" in table and "not distinguishable" in table
    # per seed against the SFT row of the same seed: "same" ties at both seeds, and a tie is not "ahead"
    per_seed = aggregate.seed_differences(summary, "validation")
    assert per_seed["better"] == pytest.approx({0: 0.1, 1: 0.1})
    assert per_seed["same"] == pytest.approx({0: 0.0, 1: 0.0}, abs=1e-12)
    assert "| better | +10.00 (seed 0), +10.00 (seed 1) | 2 of 2 seeds | +10.00 [" in table
    assert "| same | +0.00 (seed 0), +0.00 (seed 1) | 0 of 2 seeds |" in table
    # seeds resampled too: "better" gains at both seeds (still better), "same" at neither
    seeded_better, seeded_same = cells["better"].seed_comparison, cells["same"].seed_comparison
    assert seeded_better is not None and seeded_better.method == "bootstrap-seeds"
    assert seeded_better.low > 0.09
    assert seeded_same is not None and seeded_same.low < 0 < seeded_same.high
    assert cells["sft"].seed_comparison is None
    assert aggregate.metrics(summary)[sweep_metric("validation", "better", "low_seeds")] == seeded_better.low
    assert "-0.00" not in table  # a tie's float residue, in any table or sentence, prints as +0.00
    diffs = list(csv.DictReader(io.StringIO(files["differences"].read_text())))
    assert len(diffs) == 2 * 40 and float(diffs[0]["difference"]) == pytest.approx(0.1)
    assert files["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(files["comparisons"].read_text())["validation"]["better"]["rows"] == 40
    # the distilled rows against each other: "same" is clearly below "better"
    (pair,) = summary.pairs["validation"]
    k, ks = pair.comparison, pair.seed_comparison
    assert (pair.row, pair.other) == ("same", "better") and k.mean_diff == pytest.approx(-0.1, abs=0.02)
    assert k.high < 0 and "worse than better" in table
    # per seed (-0.10 at both) and with seeds resampled: both seeds agree, so still worse
    assert pair.per_seed == pytest.approx({0: -0.1, 1: -0.1})
    assert ks is not None and ks.method == "bootstrap-seeds" and ks.high < 0
    assert "| same | better | -10.00 [" in table
    assert "| -10.00 (seed 0), -10.00 (seed 1) | 0 of 2 seeds |" in table
    pairwise = json.loads(files["pairwise"].read_text())["validation"]["same vs better"]
    assert pairwise["rows"] == 40 and pairwise["seeds_resampled"]["high"] == ks.high
    summed = aggregate.metrics(summary)
    assert summed[sweep_metric("validation", "same", "diff_vs_better")] == k.mean_diff
    assert summed[sweep_metric("validation", "same", "high_seeds_vs_better")] == ks.high
    with pytest.raises(aggregate.SweepRecordError, match="seed 0 occurs twice"):
        aggregate.summarize([*records, records[2]], "f1", resamples=10)


def test_differences_and_verdicts_follow_the_metric_direction_and_ties_are_not_wins(tmp_path: Path) -> None:
    """For a metric where lower is better, the per-row differences have the intervals' sign (positive is
    better). A row equal to SFT, whose seed average leaves float residue, is a tie, not "better"."""
    ids = [f"e{i}" for i in range(20)]
    base = {i: 0.1 * (n % 3) + 0.1 for n, i in enumerate(ids)}
    records = [
        row_record("sft", 0, base, "wer", sft=True),
        row_record("lower", 0, {i: v - 0.05 for i, v in base.items()}, "wer"),
    ]
    summary = aggregate.summarize(records, "wer", greater_is_better=False, resamples=500)
    lower = next(c for c in summary.cells["validation"] if c.variant == "lower").comparison
    assert lower is not None and lower.mean_diff == pytest.approx(0.05) and lower.low > 0
    diffs = list(csv.DictReader(io.StringIO(aggregate.differences_csv(summary))))
    assert {round(float(d["difference"]), 9) for d in diffs} == {0.05}
    assert "better than SFT" in aggregate.markdown(summary)
    assert aggregate.seed_differences(summary, "validation") == {"lower": {0: pytest.approx(0.05)}}
    assert "against the SFT row of the same seed" not in aggregate.markdown(summary)  # one seed: no table
    # one seed: distilled rows against each other, in the metric's direction, without per-seed columns
    higher = row_record("higher", 0, {i: v + 0.05 for i, v in base.items()}, "wer")
    two = aggregate.summarize([*records, higher], "wer", greater_is_better=False, resamples=200)
    (pair,) = two.pairs["validation"]
    assert (pair.row, pair.other, pair.seed_comparison) == ("higher", "lower", None)
    assert pair.per_seed == {0: pytest.approx(-0.1)}
    assert "| higher | lower | -10.00 [-10.00, -10.00] | worse than lower |\n" in aggregate.markdown(two)
    # the same scores through two seeds average to the same value up to rounding: not a difference
    thirds = {i: 0.1 + n / 3 % 0.3 for n, i in enumerate(ids)}
    tied = [
        row_record("sft", 0, thirds, sft=True),
        row_record("tie", 0, {i: v + 0.1 for i, v in thirds.items()}),
        row_record("tie", 1, {i: v - 0.1 for i, v in thirds.items()}),
    ]
    tie = aggregate.summarize(tied, "f1", resamples=200).cells["validation"][1].comparison
    assert tie is not None and abs(tie.low) < 1e-12 and abs(tie.high) < 1e-12
    assert aggregate.verdict(tie.low, tie.high) == "not distinguishable from SFT"
    assert aggregate.verdict(5.6e-17, 1e-16) == "not distinguishable from SFT"
    assert aggregate.verdict(1e-6, 0.1) == "better than SFT"


@pytest.mark.parametrize(
    ("lead", "spread", "said"),
    [
        (0.08, 0.0, "met."),
        (0.02, 0.0, "NOT met: the teacher is stronger beyond noise, but by less than that."),
        (0.02, 0.2, "NOT met: distillation has no stronger teacher to learn from."),
    ],
)
def test_the_pilot_compares_the_teacher_with_the_sft_student(lead: float, spread: float, said: str) -> None:
    """The teacher's record (seed of its SFT) is listed first and compared with the SFT row like a
    variant; the pilot sentence says whether its lead reaches 5 points and, short of that, whether the
    teacher is ahead at all: a 2-point lead on every row is, the same mean lead as +22 / -18 is not."""
    ids = [f"e{i}" for i in range(30)]
    base = {i: 0.3 + 0.01 * (n % 4) for n, i in enumerate(ids)}
    records = [row_record("sft", s, base, sft=True) for s in (0, 1)]
    records.append(row_record("uld", 0, {i: v + 0.01 for i, v in base.items()}))
    swing = {i: spread if n % 2 else -spread for n, i in enumerate(ids)}
    teacher = row_record("teacher", 0, {i: v + lead + swing[i] for i, v in base.items()}, sft=False)
    summary = aggregate.summarize(records, "f1", resamples=500, teacher=teacher)
    cells = summary.cells["validation"]
    assert [c.variant for c in cells] == ["teacher", "sft", "uld"] and cells[0].teacher
    assert cells[0].comparison is not None and cells[0].comparison.mean_diff == pytest.approx(lead)
    table = aggregate.markdown(summary)
    assert "| teacher (after SFT; not a student) | 1 |" in table
    assert f"a lead of {100 * lead:+.2f}" in table
    assert f"at least 5 is asked: {said}" in table
    assert aggregate.metrics(summary)[sweep_metric("validation", "teacher", "diff")] == pytest.approx(lead)
    assert "each weighted term's share" not in table  # no record carries objective shares
    for r, share in zip(records, (0.0, 0.0, 0.01), strict=True):
        r["objective"] = {"ce": 1.0 - share, "sd": share} if share else {"ce": 1.0}
    with_shares = aggregate.summarize(records, "f1", resamples=10, teacher=teacher)
    assert with_shares.shares == {"sft": {"ce": 1.0}, "uld": {"ce": 0.99, "sd": 0.01}}
    assert "| uld | CE 99.0%, SD 1.0% |" in aggregate.markdown(with_shares)
    assert aggregate.metrics(with_shares)[sweep_metric("train", "uld", "share_sd")] == pytest.approx(0.01)
    with pytest.raises(aggregate.SweepRecordError, match="may not be named 'teacher'"):
        aggregate.summarize([*records, teacher], "f1", resamples=10)


def test_a_prompted_teacher_is_named_by_its_shots_and_shares_follow_the_loss_order() -> None:
    """Under the authors' recipe the teacher is scored with the shots it answered with (its scores say
    how many): the table and the pilot name it so. The shares list CE, then the loss's parts in order."""
    ids = [f"e{i}" for i in range(20)]
    base = {i: 0.3 + 0.01 * (n % 3) for n, i in enumerate(ids)}
    records = [row_record("sft", 0, base, sft=True), row_record("mlot", 0, base)]
    records[1]["objective"] = {"ce": 0.75, "had": 0.15, "sd": 0.01, "sl": 0.09}  # as written: sorted keys
    teacher = row_record("teacher", 0, {i: v + 0.1 for i, v in base.items()}, sft=False)
    teacher["splits"]["validation"]["shots"] = {teacher["row"]: 3}  # keyed by the scored label
    table = aggregate.markdown(aggregate.summarize(records, "f1", resamples=10, teacher=teacher))
    assert "| teacher (prompted 3-shot; not a student) | 1 |" in table
    assert "Pilot: the teacher prompted 3-shot scores" in table
    assert "| mlot | CE 75.0%, HAD 15.0%, SL 9.0%, SD 1.0% |" in table


def test_sweep_compiles_for_a_cluster(tmp_path: Path) -> None:
    from tests.infra.cluster_contract import compile_run

    run = compile_run(ROOT / "configs" / "sweeps" / "gpu.yaml", tmp_path)
    spec = run.pipeline
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert {"test_data", "test_split", "test_rows", "distill_steps"} <= set(params)
    loops = [t for c in spec["components"].values() for t in c.get("dag", {}).get("tasks", {}).values()
             if "parameterIterator" in t]  # fmt: skip
    assert len(loops) == 2 and all(t["iteratorPolicy"]["parallelismLimit"] == 1 for t in loops)
    items = [json.loads(t["parameterIterator"]["items"]["raw"]) for t in loops]
    assert sorted(len(i) for i in items) == [3, 12]
    executors = run.executors
    gpu = [n for n, e in executors.items() if "accelerator" in e["container"].get("resources", {})]
    assert any("distill-student" in n for n in gpu) and any("evaluate-student" in n for n in gpu)
    assert not any("aggregate" in n or "register-student" in n for n in gpu)
    # ULD and MultiLevelOT read the teacher cache: the loop's distill step downloads no teacher model
    tasks = {n: t for c in spec["components"].values() for n, t in c.get("dag", {}).get("tasks", {}).items()}
    assert "teacher_model" not in tasks["distill-student"]["inputs"].get("artifacts", {})
    assert "teacher_model" in tasks["cache-teacher"]["inputs"]["artifacts"]


def test_a_local_sweep_prints_its_table_and_where_its_row_records_are(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from otdistill.pipelines.local import LocalRunResult
    from otdistill.pipelines.sweep_pipeline import sweep_summary

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("s", artifact_location=(tmp_path / "mlartifacts").as_uri())
    run = client.create_run(experiment, tags={"otdistill.sweep.table": "| sft | 3 |"})
    result = LocalRunResult(tmp_path, uri, tmp_path, "local-1", run.info.run_id, experiment, "f1")
    printed = sweep_summary(result)
    assert printed.startswith("otdistill sweep finished") and "| sft | 3 |" in printed
    assert f"{run.info.artifact_uri}/sweep/records (`otdistill sweep --records`" in printed
    assert printed.index("MLflow run:") < printed.index("row records:") and "champion:" not in printed


def test_a_row_record_says_what_its_training_recorded(tmp_path: Path) -> None:
    """`trained_with`: the trained model's determinism record (torch, threads, CPU kernels and model); {}
    untrained."""
    from otdistill.sweep.steps import _training
    from otdistill.training.determinism import cpu_model, determinism_record
    from otdistill.training.runner import RESULT_FILE

    assert _training(tmp_path) == {"objective": {}, "trained_with": {}}
    record = {"determinism": determinism_record(3, False)}
    (tmp_path / RESULT_FILE).write_text(
        json.dumps({"stage": "distill", "model_dir": ".", "output_dir": ".", "global_step": 1,
                    "train_loss": 1.0, "record": record})
    )  # fmt: skip
    trained_with = _training(tmp_path)["trained_with"]
    assert trained_with["seed"] == 3
    assert trained_with["torch.cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert trained_with["cpu.model"] == cpu_model() != ""  # "AMD EPYC", "Intel(R) Xeon(R) ...": a vendor


@pytest.mark.e2e
def test_sweep_end_to_end_with_tiny_models(
    tiny_pair: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`otdistill sweep --config configs/sweeps/cpu-small.yaml --set ...` at tiny sizes: SFT and ULD x 2
    seeds, 3 held-out test rows; the table and intervals land on the parent run, every student is
    registered (not promoted)."""
    from mlflow.tracking import MlflowClient

    from otdistill.cli import main
    from otdistill.tracking.runs import PIPELINE_RUN_ID_TAG, ROLE_TAG

    teacher, student = tiny_pair
    monkeypatch.setenv("OTDISTILL_CACHE", str(tmp_path / "model-cache"))
    overrides = {
        "teacher.source": str(teacher),
        "student.source": str(student),
        "data.limit": 8,
        "data.max_length": 128,
        "validation.limit": 4,
        "teacher_sft.max_steps": 1,
        "teacher_sft.progress_bar": "false",
        "distill.max_steps": 1,
        "distill.top_k": 8,
        "distill.progress_bar": "false",
        # every row validates during training (the SFT row too: it trains with the distill section)
        "distill.eval_every_steps": 1,
        "sft_baseline.eval_every_steps": 1,
        "eval.max_new_tokens": 4,
        "eval.max_prompt_tokens": 96,
        "eval.batch_size": 4,
        "eval.progress": "false",
        "sweep.seeds": "[0, 1]",
        "sweep.variants": "[{name: sft, sft: true}, {name: uld, overrides: {distill.loss: uld}}]",
        "sweep.test_data.source": str(ROOT.parent / "shared" / "data" / "qed"),
        "sweep.test_data.split": "validation",
        "sweep.test_data.limit": 3,
    }
    argv = ["sweep", "--config", str(CPU_SMALL), "--run-dir", str(tmp_path / "run")]
    for key, value in overrides.items():
        argv += ["--set", f"{key}={value}"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for step in ("row-sft-s0", "train-sft-s1", "distill-uld-s0", "evaluate-uld-s1", "register-uld-s1"):
        assert f"] {step} " in printed, step
    assert "| uld | 2 |" in printed  # the table, printed at the end
    assert "] evaluate-teacher " in printed and "| teacher (after SFT; not a student) | 1 |" in printed
    assert "Pilot: the teacher after SFT scores" in printed

    uri = f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name("otdistill-sweep-cpu-small")
    parent = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{ROLE_TAG}` = 'pipeline'")[
        0
    ]
    assert parent.data.tags[PIPELINE_RUN_ID_TAG].startswith("local-")
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "sweep")}
    assert {f"sweep/{n}" for n in ("table.md", "table.csv", "row_differences.csv", "plot.png")} <= artifacts
    comparisons = json.loads(
        Path(
            client.download_artifacts(parent.info.run_id, "sweep/comparisons.json", str(tmp_path))
        ).read_text()
    )
    for split, rows in (("validation", 4), ("test", 3)):
        uld = comparisons[split]["uld"]
        assert uld["rows"] == rows and uld["low"] <= uld["mean_diff"] <= uld["high"]
        assert f"sweep/{split}/uld/low" in parent.data.metrics
    for variant in ("sft", "uld"):
        versions = client.search_model_versions(f"name='otdistill-sweep-cpu-small-{variant}'")
        assert sorted(v.tags["otdistill.sweep.seed"] for v in versions) == ["0", "1"]
        assert all(not v.aliases for v in versions)  # registered, not promoted
        assert all(v.tags["otdistill.sweep.parent_run_id"] == parent.info.run_id for v in versions)

    # `--resume <pipeline run id>`: the same run again, as KFP's Retry does. Its finished steps are cache
    # hits, it logs into the same parent run, and registration finds every row's version by its weights.
    pipeline_run_id = parent.data.tags[PIPELINE_RUN_ID_TAG]
    assert main([*argv, "--resume", pipeline_run_id]) == 0
    resumed = capsys.readouterr().out
    assert f"otdistill run {pipeline_run_id}" in resumed
    assert "] distill-uld-s1 cached" in " ".join(resumed.split())
    parents = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{ROLE_TAG}` = 'pipeline'")
    assert [p.info.run_id for p in parents] == [parent.info.run_id]
    for variant in ("sft", "uld"):
        assert len(client.search_model_versions(f"name='otdistill-sweep-cpu-small-{variant}'")) == 2
