"""The MultiLevelOT paper's comparison (its Table 1) as sweeps: a config naming one sweep per task, plus the
report that puts their tables side by side.

Everything that trains, caches, evaluates, registers and resumes is the sweep pipeline
(`pipelines/sweep_pipeline.py`, `otdistill sweep`): one teacher SFT and one teacher cache per task, the
rows (SFT, ULD, MultiLevelOT and its ablations) x seeds, each student registered in MLflow, and the
aggregation's table, plot and paired-bootstrap intervals on the parent MLflow run (`sweep/`). A task is one
sweep because a sweep's trunk prepares one task's data. This script only runs those sweeps one after the
other (kfp.local; the KFP step cache resumes an interrupted one), copies each parent run's `sweep/` files
next to the run, and renders one Markdown table across the tasks from them.

The plan is `configs/paper_table/<budget>.yaml`:

    name: paper-table-cpu
    results: benchmarks/results/paper_table_sweep.md     # the report (and <stem>_<task>.png)
    tasks:
      qed: {sweep: configs/sweeps/paper-qed.yaml}         # a sweep config, relative to the repository root
      dialogsum: {sweep: configs/sweeps/gpu.yaml, set: {data.task: dialogsum}}   # + that task's --set

Usage:
    python benchmarks/paper_table.py --budget cpu [--tasks qed] [--set distill.max_steps=8 ...]
        [--run-dir runs/paper_table-cpu] [--results PATH] [--notes analysis.md] [--report-only]
`--set` applies to every task's sweep (as `otdistill sweep --set`); `--report-only` renders the report from
the `sweep/` files an earlier run left in the run directory; `--mlflow-run TASK=RUN_ID` takes a task's
table from a parent MLflow run, `--table TASK=DIR` from a folder of aggregation files (a committed result,
or `otdistill sweep --records ... --out DIR`: rows of several runs tabled together).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from otdistill.config import ConfigError, RunConfig
from otdistill.sweep.aggregate import ARTIFACT_DIR, verdict
from otdistill.sweep.config import SweepConfig, load_sweep

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "configs" / "paper_table"
PLAN_KEYS = {"name", "results", "tasks"}
TASK_KEYS = {"sweep", "set"}
# The paper's Table 1 (Llama-2-7B-chat teacher -> OPT-350M student), quoted for scale only: another pair,
# other sizes, full data. Values as printed there (x100).
PAPER_OPT350M: dict[str, dict[str, float]] = {
    "dialogsum": {"sft": 35.59, "uld": 36.05, "multilevel_ot": 37.61},
    "qed": {"sft": 55.71, "uld": 56.76, "multilevel_ot": 58.97},
}


@dataclass
class TaskSweep:
    """One task's sweep: its config file, the overrides that make it this task's, and what they load to."""

    task: str
    path: Path
    overrides: dict[str, Any]
    cfg: RunConfig
    sweep: SweepConfig


@dataclass
class Plan:
    name: str
    results: Path
    tasks: dict[str, TaskSweep] = field(default_factory=dict)


def load_plan(
    path: Path, overrides: Mapping[str, Any] | None = None, tasks: Sequence[str] | None = None
) -> Plan:
    """Read a paper-table plan and load every task's sweep (its `set`, then `overrides` on top), so a bad
    key fails here, naming the plan file and the task, before anything runs."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with keys {sorted(PLAN_KEYS)}")
    if unknown := set(raw) - PLAN_KEYS:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))} (known: {sorted(PLAN_KEYS)})")
    entries = raw.get("tasks") or {}
    if not isinstance(entries, dict) or not entries:
        raise ConfigError(f"{path}: tasks: expected a mapping task -> {{sweep: <file>, set: {{...}}}}")
    chosen = list(tasks) if tasks else list(entries)
    if missing := [t for t in chosen if t not in entries]:
        raise ConfigError(f"{path}: no task {', '.join(missing)} in this plan (it has: {', '.join(entries)})")
    if not raw.get("results"):
        raise ConfigError(f"{path}: results: the report's path (under the repository root) is required")
    plan = Plan(name=str(raw.get("name") or path.stem), results=ROOT / str(raw["results"]))
    for task in chosen:
        entry = entries[task]
        if not isinstance(entry, dict) or "sweep" not in entry or set(entry) - TASK_KEYS:
            raise ConfigError(
                f"{path}: tasks.{task}: expected {{sweep: <file>, set: {{...}}}}, got {entry!r}"
            )
        sweep_path = ROOT / str(entry["sweep"])
        if not sweep_path.is_file():
            raise ConfigError(f"{path}: tasks.{task}.sweep: no file {sweep_path}")
        merged = {**dict(entry.get("set") or {}), **dict(overrides or {})}
        try:
            cfg, sweep = load_sweep(sweep_path, merged)
        except ConfigError as exc:
            raise ConfigError(f"{path}: tasks.{task} ({entry['sweep']}): {exc}") from None
        if cfg.data.task != task:
            raise ConfigError(f"{path}: tasks.{task}: its sweep prepares task {cfg.data.task!r}")
        plan.tasks[task] = TaskSweep(task, sweep_path, merged, cfg, sweep)
    return plan


def run_task(item: TaskSweep, run_dir: Path, *, fresh: bool = False) -> Path:
    """Run one task's sweep here (kfp.local, as `otdistill sweep`) and copy its parent run's `sweep/` files
    to `<run_dir>/<task>/sweep`; returns that folder."""
    from otdistill.pipelines.local import run_local
    from otdistill.pipelines.sweep_pipeline import build_sweep_pipeline, sweep_summary

    result = run_local(
        item.cfg,
        run_dir=run_dir / item.task,
        fresh=fresh,
        build=lambda c: build_sweep_pipeline(c, item.sweep),
    )
    print(sweep_summary(result), flush=True)
    return download_aggregate(result.tracking_uri, result.mlflow_run_id, run_dir / item.task)


def download_aggregate(tracking_uri: str, run_id: str, dest: Path) -> Path:
    """The aggregation's files (`sweep/` on the parent run) into `dest/sweep`, replacing an older copy."""
    from mlflow.exceptions import MlflowException

    from otdistill.tracking.config import TrackingConfig
    from otdistill.tracking.connection import tracking_client

    client = tracking_client(TrackingConfig(tracking_uri=tracking_uri), connect=False)
    out = dest / ARTIFACT_DIR
    shutil.rmtree(out, ignore_errors=True)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        local = Path(client.download_artifacts(run_id, ARTIFACT_DIR, str(dest)))
    except MlflowException:
        local = out
    if not (local / "table.csv").is_file():
        raise FileNotFoundError(
            f"MLflow run {run_id} has no {ARTIFACT_DIR}/table.csv: did its sweep aggregate?"
        )
    return local


def read_table(aggregate_dir: Path) -> list[dict[str, str]]:
    """The aggregation's `table.csv` (one line per split and variant, `otdistill.sweep.aggregate`)."""
    path = aggregate_dir / "table.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no sweep table here (run the sweep, or drop --report-only)")
    return list(csv.DictReader(path.open(encoding="utf-8")))


def _cell(line: Mapping[str, str]) -> str:
    return f"{100 * float(line['mean']):.2f} ± {100 * float(line['sd']):.2f}"


def _difference(line: Mapping[str, str]) -> str:
    if line["sft"] == "True":
        return "(the reference)"
    low, high = float(line["low"]), float(line["high"])
    diff = f"{100 * float(line['diff_vs_sft']):+.2f} [{100 * low:+.2f}, {100 * high:+.2f}]"
    return f"{diff} {verdict(low, high)}"


def render_report(
    plan_name: str, tables: Mapping[str, Sequence[Mapping[str, str]]], *, command: str, notes: str = ""
) -> str:
    """One Markdown report from each task's sweep table (`tables`: task -> `read_table`): per split, the
    rows' mean ± sd over seeds and their difference from the SFT row with its interval and verdict, the
    paper's numbers for scale, and where each task's own table, plot and models are."""
    tasks = list(tables)
    splits = list(dict.fromkeys(line["split"] for lines in tables.values() for line in lines))
    lines = [
        f"# The paper's comparison as sweeps: {plan_name}",
        "",
        f"Made by `{command}` on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; one sweep per task "
        "(`otdistill sweep`, configs/sweeps/), scores x100.",
        "",
    ]
    for split in splits:
        cells = {t: {ln["variant"]: ln for ln in tables[t] if ln["split"] == split} for t in tasks}
        variants = list(dict.fromkeys(v for t in tasks for v in cells[t]))
        header = [f"{t} ({_first(cells[t], 'metric')}, {_first(cells[t], 'rows')} rows)" for t in tasks]
        lines += [f"## {split}: mean ± sd over seeds", "", f"| row | {' | '.join(header)} |"]
        lines.append("|---" * (len(tasks) + 1) + "|")
        for v in variants:
            lines.append(
                f"| {v} | " + " | ".join(_cell(cells[t][v]) if v in cells[t] else "-" for t in tasks) + " |"
            )
        level = _first(next(iter(cells.values())), "confidence") or "0.95"
        lines += [
            "",
            f"Difference from the SFT row [{float(level):.0%} interval] (paired bootstrap over the rows, "
            "seeds averaged per row first; a verdict needs the whole interval on one side of 0):",
            "",
            f"| row | {' | '.join(tasks)} |",
            "|---" * (len(tasks) + 1) + "|",
        ]
        for v in variants:
            lines.append(
                f"| {v} | "
                + " | ".join(_difference(cells[t][v]) if v in cells[t] else "-" for t in tasks)
                + " |"
            )
        lines.append("")
    quoted = [t for t in tasks if t in PAPER_OPT350M]
    if quoted:
        lines += ["The paper (Llama-2-7B-chat -> OPT-350M, full data; another pair, for scale only):", ""]
        lines += [f"| row | {' | '.join(quoted)} |", "|---" * (len(quoted) + 1) + "|"]
        for v in ("sft", "uld", "multilevel_ot"):
            lines.append(f"| {v} | " + " | ".join(f"{PAPER_OPT350M[t][v]:.2f}" for t in quoted) + " |")
        lines.append("")
    lines += ["## Models", ""]
    for t in tasks:
        models = [m for ln in tables[t] for m in ln.get("models", "").split()]
        lines.append(f"- {t}: {', '.join(f'`{m}`' for m in dict.fromkeys(models)) or '(none registered)'}")
    lines += ["", "## Analysis", "", notes.strip() or "(to be written by whoever ran it)", ""]
    return "\n".join(lines)


def _first(cells: Mapping[str, Mapping[str, str]], key: str) -> str:
    return next((c[key] for c in cells.values()), "")


def write_report(
    plan: Plan, aggregates: Mapping[str, Path], results: Path, *, command: str, notes: str = ""
) -> Path:
    """The report at `results`, each task's plot next to it as `<stem>_<task>.png`."""
    tables = {task: read_table(folder) for task, folder in aggregates.items()}
    results.parent.mkdir(parents=True, exist_ok=True)
    for task, folder in aggregates.items():
        if (folder / "plot.png").is_file():
            shutil.copyfile(folder / "plot.png", results.with_name(f"{results.stem}_{task}.png"))
    text = render_report(plan.name, tables, command=command, notes=notes)
    results.write_text(text, encoding="utf-8")
    return results


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--budget", default="cpu", help="configs/paper_table/<budget>.yaml (default cpu)")
    where.add_argument("--plan", type=Path, help="a plan file instead of a budget")
    p.add_argument("--tasks", nargs="+", help="only these tasks of the plan")
    p.add_argument("--set", action="append", default=[], help="section.key=value for every task's sweep")
    p.add_argument(
        "--run-dir", type=Path, help="kfp.local outputs and the copied tables (default runs/<name>)"
    )
    p.add_argument("--results", type=Path, help="the report (default: the plan's results)")
    p.add_argument("--notes", type=Path, help="a Markdown file: the analysis section of the report")
    p.add_argument("--fresh", action="store_true", help="ignore the KFP step cache")
    p.add_argument("--report-only", action="store_true", help="render from an earlier run's tables")
    p.add_argument(
        "--mlflow-run",
        action="append",
        default=[],
        metavar="TASK=RUN_ID",
        help="TASK's table from this parent MLflow run (a sweep submitted to a cluster), not run here",
    )
    p.add_argument(
        "--table",
        action="append",
        default=[],
        metavar="TASK=DIR",
        help="TASK's table from a folder of aggregation files (table.csv, plot.png: a sweep's sweep/ folder,"
        " or `otdistill sweep --records ... --out DIR`), not run here",
    )
    return p.parse_args(argv)


def _per_task(values: Sequence[str], flag: str, plan: Plan) -> dict[str, str]:
    """`TASK=VALUE` options, each for a task of the plan."""
    given = dict(item.split("=", 1) for item in values if "=" in item)
    if bad := [item for item in values if "=" not in item] + [t for t in given if t not in plan.tasks]:
        raise ConfigError(f"{flag} expects TASK=VALUE for a task of the plan, got {', '.join(bad)}")
    return given


def main(argv: Sequence[str] | None = None) -> int:
    from otdistill.cli import parse_set

    args = parse_args(argv)
    plan = load_plan(args.plan or CONFIG_DIR / f"{args.budget}.yaml", parse_set(args.set), args.tasks)
    run_dir = args.run_dir or ROOT / "runs" / plan.name
    submitted = _per_task(args.mlflow_run, "--mlflow-run", plan)
    tables = _per_task(args.table, "--table", plan)
    aggregates = {}
    for task, item in plan.tasks.items():
        if task in tables:
            aggregates[task] = ROOT / tables[task]  # relative to the repository root, or absolute
        elif task in submitted:
            tracking_uri = item.cfg.tracking.tracking_uri
            aggregates[task] = download_aggregate(tracking_uri, submitted[task], run_dir / task)
        elif args.report_only:
            aggregates[task] = run_dir / task / ARTIFACT_DIR
        else:
            aggregates[task] = run_task(item, run_dir, fresh=args.fresh)
    notes = args.notes.read_text(encoding="utf-8") if args.notes else ""
    command = "python benchmarks/paper_table.py " + " ".join(sys.argv[1:] if argv is None else argv)
    out = write_report(plan, aggregates, args.results or plan.results, command=command.strip(), notes=notes)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
