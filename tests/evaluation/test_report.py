"""The HTML report and result files, on hand-built results (no model needed)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from otdistill.evaluation.report import render_html, write_html
from otdistill.evaluation.results import (
    EvalResult,
    PredictionRecord,
    load_result,
    mean_scores,
    read_predictions,
    write_metrics,
    write_predictions,
)


def _result(label: str, f1s: list[float], *, task: str = "qed") -> EvalResult:
    records = [
        PredictionRecord(
            id=f"q{i}",
            prompt=f"question {i} <b>bold?</b>",
            prediction=f"answer {i}" if i else "<script>alert('x')</script>",
            references=[f"gold {i}", "A & B"],
            scores={"exact_match": float(f == 1.0), "f1": f},
        )
        for i, f in enumerate(f1s)
    ]
    return EvalResult(
        label=label,
        task=task,
        metric="f1",
        metrics=mean_scores(records, ("exact_match", "f1")),
        records=records,
        model={"source": f"models:/{label}@champion", "revision": "sha256:abc"},
        skipped={"no_reference": 2} if label == "sft" else {},
        generation={"tokens_per_second": 123.4},
    )


def test_report_is_self_contained_and_escaped() -> None:
    html = render_html([_result("teacher", [0.0, 0.5, 1.0]), _result("sft", [0.2, 0.2, 0.9])])
    # Two embedded PNG charts (bar chart, histogram), nothing fetched from anywhere.
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,[A-Za-z0-9+/=]+"', html)) == 2
    assert "http://" not in html and "https://" not in html and "<link" not in html
    assert "<script>" not in html and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert "&lt;b&gt;bold?&lt;/b&gt;" in html and "A &amp; B" in html
    # Metrics table: means to 4 places, the best model per metric in bold, skipped rows reported.
    assert '<td class="best">0.5000</td>' in html  # teacher f1 = 1.5 / 3
    assert "0.4333" in html  # sft f1 = 1.3 / 3
    assert "sft: 2 rows not scored (no_reference: 2)" in html
    assert "123.4" in html


def test_worst_examples_are_the_lowest_scores() -> None:
    f1s = [0.9, 0.1, 0.5, 0.0, 0.7, 0.3, 0.8, 0.2, 0.6, 0.4, 1.0, 0.05]
    result = _result("distilled", f1s)
    worst = result.worst(10)
    assert [r.scores["f1"] for r in worst] == sorted(f1s)[:10]
    html = render_html([result])
    section = html.split("worst examples by f1")[1]
    shown = re.findall(r"<tr><td>(q\d+)</td><td>([0-9.]+)</td>", section)
    assert [float(s) for _, s in shown] == sorted(f1s)[:10]
    assert "q10" not in {q for q, _ in shown} and "q0" not in {q for q, _ in shown}  # 1.0 and 0.9 are best


def test_report_refuses_mixed_tasks_and_duplicate_labels() -> None:
    with pytest.raises(ValueError, match="different tasks"):
        render_html([_result("a", [0.5]), _result("b", [0.5], task="squad")])
    with pytest.raises(ValueError, match="distinct"):
        render_html([_result("a", [0.5]), _result("a", [0.7])])
    with pytest.raises(ValueError, match="at least one"):
        render_html([])


def test_files_round_trip(tmp_path: Path) -> None:
    result = _result("teacher", [0.25, 1.0])
    preds = write_predictions(result.records, tmp_path / "p.jsonl")
    metrics = write_metrics(result, tmp_path / "m.json")
    lines = preds.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    assert set(json.loads(lines[0])) >= {"id", "prompt", "prediction", "references", "scores"}
    data = json.loads(metrics.read_text())
    assert data["metrics"] == {"exact_match": 0.5, "f1": 0.625} and data["num_scored"] == 2
    again = load_result(metrics, preds)
    assert again.records == result.records and again.metrics == result.metrics
    write_html([again], tmp_path / "r.html")
    assert (tmp_path / "r.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_bad_predictions_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(
        '{"id": "a", "prompt": "", "prediction": "", "references": [], "scores": {}}\n{"id": 1}\n'
    )
    with pytest.raises(ValueError, match="line 2"):
        read_predictions(path)


def test_mean_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="skipped"):
        mean_scores([], ("f1",))
