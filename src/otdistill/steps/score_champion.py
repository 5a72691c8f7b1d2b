"""Step `score_champion`: the current champion's scores on this run's validation rows, for the gate.

The promotion gate compares the candidate with the champion on the same rows, scored the same way. This
step runs where the GPU is, so `register_and_promote` stays a light CPU step that only compares numbers.
A score the champion's registry version already records for these rows and scoring settings
(`otdistill.tracking.scores`, kept by an earlier run's gate), with its per-row scores (the bootstrap gate
compares rows), is reused: nothing is generated then. Its own
step, not part of `evaluate`: a new champion re-runs this step only, while `evaluate`'s scores of the new
models stay cached.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from otdistill.data import load_examples
from otdistill.evaluation import evaluate_model
from otdistill.stats import row_table
from otdistill.steps.common import snapshot_data_config
from otdistill.steps.prologue import start_step
from otdistill.tracking.datasets import log_dataset, snapshot_dataset
from otdistill.tracking.metric_names import eval_metrics
from otdistill.tracking.scores import parse_version_uri, recorded_row_scores, recorded_scores, score_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChampionScores:
    """What `champion_scores.json` holds: which version, how its scores were obtained, and the scores."""

    uri: str  # models:/<name>/<version>; "" when there is no champion
    version: str
    score_key: str
    source: str  # "scored" (generated here), "recorded" (reused), "none" (no champion)
    metrics: dict[str, float]
    rows: dict[str, dict[str, float]] = field(default_factory=dict)  # {example id: {metric: score}}

    def to_dict(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "version": self.version,
            "score_key": self.score_key,
            "source": self.source,
            "metrics": dict(self.metrics),
            "rows": {k: dict(v) for k, v in self.rows.items()},
        }


def score_champion(
    config_json: str, validation_dir: str | Path, champion: str, scores_path: str | Path
) -> ChampionScores:
    """Score `champion` (`models:/<name>/<version>`, "" for none) on the validation snapshot.

    Writes `scores_path` (JSON of `ChampionScores`). The registry name and version come from the URI
    `open_run` read when the run started, so the step's cache key moves when the champion does.
    """
    step = start_step(config_json, "score_champion")
    cfg = step.cfg
    data = snapshot_data_config(cfg, validation_dir, cfg.validation.split)
    loaded = load_examples(data)
    key = score_key(loaded.report.content_sha256, cfg.eval.scoring_settings())
    if not champion:
        log.info("no champion yet: nothing to score")
        result = ChampionScores("", "", key, "none", {})
    else:
        name, version = parse_version_uri(champion)
        parent = step.parent
        with step.tracked(params={"champion": champion}) as run:
            recorded = recorded_scores(parent.client, name, version, key)
            rows = recorded_row_scores(parent.client, name, version, key) if recorded is not None else None
            if recorded is not None and rows is not None:
                log.info("champion %s: reusing its score recorded for these rows and settings", champion)
                result = ChampionScores(champion, version, key, "recorded", recorded, rows)
            else:
                log.info("scoring champion %s on %d rows", champion, len(loaded.examples))
                log_dataset(snapshot_dataset(validation_dir, cfg.data.subset), "evaluation")
                with tempfile.TemporaryDirectory(prefix="otdistill-champion-") as scratch:
                    evaluated = evaluate_model(
                        champion, loaded.task, loaded.examples, cfg.eval, Path(scratch), label="champion"
                    )
                table = row_table(evaluated.records, where=f"champion {champion} predictions")
                result = ChampionScores(champion, version, key, "scored", dict(evaluated.metrics), table)
            run.set_tags({"otdistill.champion.source": result.source, "otdistill.champion.version": version})
            run.log_metrics(eval_metrics("champion", result.metrics))
    Path(scores_path).parent.mkdir(parents=True, exist_ok=True)
    Path(scores_path).write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True), encoding="utf-8")
    return result
