"""A self-contained HTML report of one or several evaluated models.

One file a reviewer can open from MLflow or the Kubeflow UI with no network access: the charts are matplotlib
PNGs embedded as base64 data URIs, the style is inline, and every piece of model or data text is
HTML-escaped (predictions are untrusted text). It holds the metrics table, a bar chart comparing the
models on every metric, a histogram of per-example headline scores per model, and each model's ten worst
examples with prompt, prediction and references.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from otdistill.evaluation.results import EvalResult

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1200px; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; vertical-align: top; }
th:first-child, td:first-child { text-align: left; }
td.text { text-align: left; white-space: pre-wrap; max-width: 420px; font-size: 90%; }
pre { white-space: pre-wrap; font-size: 85%; max-width: 1100px; background: #f6f6f6; padding: 6px; }
.best { font-weight: bold; }
.muted { color: #777; font-size: 90%; }
"""


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _check_same_task(results: Sequence[EvalResult]) -> None:
    if not results:
        raise ValueError("a report needs at least one evaluation result")
    tasks = {(r.task, r.metric) for r in results}
    if len(tasks) > 1:
        raise ValueError(f"results of different tasks cannot share one report: {sorted(tasks)}")
    labels = [r.label for r in results]
    if len(set(labels)) != len(labels):
        raise ValueError(f"model labels must be distinct in one report, got {labels}")


def metric_names(results: Sequence[EvalResult]) -> list[str]:
    """Metric names in the order of the first result (every result of a task has the same ones)."""
    return list(results[0].metrics)


def bar_chart(results: Sequence[EvalResult]) -> Figure:
    """Grouped bars: one group per metric, one bar per model, value printed on each bar."""
    names = metric_names(results)
    fig = Figure(figsize=(max(6.0, 1.6 * len(names) * max(1, len(results)) / 2), 4.0))
    ax = fig.add_subplot()
    x = np.arange(len(names))
    width = 0.8 / len(results)
    for i, result in enumerate(results):
        values = [result.metrics[n] for n in names]
        bars = ax.bar(x + (i - (len(results) - 1) / 2) * width, values, width, label=result.label)
        ax.bar_label(bars, labels=[f"{v:.3f}" for v in values], fontsize=7, padding=2)
    ax.set_xticks(x, names)
    ax.set_ylabel("mean score")
    ax.set_ylim(0, min(1.05, max(0.1, max(r.metrics[n] for r in results for n in names) * 1.2)))
    ax.set_title(f"{results[0].task}: models compared")
    ax.legend()
    return fig


def score_histogram(results: Sequence[EvalResult]) -> Figure:
    """Per-example headline scores of every model, as overlaid step histograms on [0, 1]."""
    metric = results[0].metric
    fig = Figure(figsize=(7.0, 4.0))
    ax = fig.add_subplot()
    bins = [float(b) for b in np.linspace(0.0, 1.0, 21)]
    for result in results:
        scores = [r.scores[metric] for r in result.records]
        ax.hist(scores, bins=bins, histtype="step", linewidth=1.8, label=f"{result.label} (n={len(scores)})")
    ax.set_xlabel(f"per-example {metric}")
    ax.set_ylabel("examples")
    ax.set_title(f"{results[0].task}: distribution of per-example {metric}")
    ax.legend()
    return fig


def _metrics_table(results: Sequence[EvalResult]) -> str:
    names = metric_names(results)
    best = {n: max(r.metrics[n] for r in results) for n in names}
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    rows = []
    for r in results:
        marks = ["best" if len(results) > 1 and r.metrics[n] == best[n] else "" for n in names]
        cells = "".join(f'<td class="{m}">{r.metrics[n]:.4f}</td>' for n, m in zip(names, marks, strict=True))
        tps = r.generation.get("tokens_per_second")
        rows.append(
            f"<tr><td>{html.escape(r.label)}</td>{cells}<td>{r.num_scored}</td><td>{r.num_skipped}</td>"
            f"<td>{'' if tps is None else f'{tps:.1f}'}</td></tr>"
        )
    return (
        f"<table><tr><th>model</th>{head}<th>scored</th><th>skipped</th><th>gen. tokens/s</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _skipped_section(results: Sequence[EvalResult]) -> str:
    parts = []
    for r in results:
        if not r.num_skipped:
            continue
        reasons = ", ".join(f"{html.escape(k)}: {v}" for k, v in sorted(r.skipped.items()))
        parts.append(f"<li>{html.escape(r.label)}: {r.num_skipped} rows not scored ({reasons})</li>")
    return f"<h2>Skipped rows</h2><ul>{''.join(parts)}</ul>" if parts else ""


def _worst_section(result: EvalResult, n: int) -> str:
    metric = result.metric
    rows = []
    for rec in result.worst(n):
        refs = "".join(f"<li>{html.escape(ref)}</li>" for ref in rec.references)
        rows.append(
            f"<tr><td>{html.escape(rec.id)}</td><td>{rec.scores[metric]:.4f}</td>"
            f'<td class="text">{html.escape(rec.prediction) or "<i>(empty)</i>"}</td>'
            f'<td class="text"><ol>{refs}</ol></td>'
            f'<td class="text"><details><summary>prompt</summary><pre>{html.escape(rec.prompt)}</pre>'
            "</details></td></tr>"
        )
    shown = min(n, result.num_scored)
    return (
        f"<h3>{html.escape(result.label)}: the {shown} worst examples by {html.escape(metric)}</h3>"
        "<table><tr><th>id</th><th>score</th><th>prediction</th><th>references</th><th>prompt</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def render_html(results: Sequence[EvalResult], *, title: str | None = None, num_worst: int = 10) -> str:
    """The report of `results` (one task, distinct labels) as one self-contained HTML document."""
    _check_same_task(results)
    task, metric = results[0].task, results[0].metric
    title = title or f"otdistill evaluation: {task}"
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    models = "".join(
        f"<li>{html.escape(r.label)}: <code>{html.escape(r.model.get('source', '?'))}</code> "
        f"<span class='muted'>{html.escape(r.model.get('revision', ''))}</span></li>"
        for r in results
    )
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='muted'>task <b>{html.escape(task)}</b>, headline metric <b>{html.escape(metric)}</b> "
        f"(scores are fractions in [0, 1]); generated {when}</p>",
        f"<ul>{models}</ul>",
        "<h2>Metrics</h2>",
        _metrics_table(results),
        _skipped_section(results),
        "<h2>Models compared</h2>",
        f'<img alt="bar chart of mean scores per model" src="{_png(bar_chart(results))}">',
        "<h2>Per-example scores</h2>",
        f'<img alt="histogram of per-example {html.escape(metric)}" src="{_png(score_histogram(results))}">',
        "<h2>Worst examples</h2>",
        *(_worst_section(r, num_worst) for r in results),
    ]
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def write_html(
    results: Sequence[EvalResult], path: Path, *, title: str | None = None, num_worst: int = 10
) -> Path:
    """Write `render_html(results)` to `path` (UTF-8)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(results, title=title, num_worst=num_worst), encoding="utf-8")
    return path
