"""Evaluation: batched greedy generation, pinned metrics (ROUGE, SQuAD EM/F1), reports and MLflow logging.

Typical use::

    from otdistill.evaluation import EvalConfig, evaluate_model, compare_models
    cfg = EvalConfig(max_new_tokens=128, batch_size=16)
    models = {"teacher": "pypi:gemma-3-270m", "distilled": "models:/student@champion"}
    results = [evaluate_model(ref, "dialogsum", rows, cfg, f"out/{label}", label=label)
               for label, ref in models.items()]
    compare_models(results, "out/compare")     # report.html + comparison.json, logged to the active run
"""

from typing import TYPE_CHECKING

from otdistill.lazy import lazy_exports

if TYPE_CHECKING:
    from otdistill.evaluation.config import EvalConfig
    from otdistill.evaluation.evaluate import (
        ModelRef,
        PreparedPrompts,
        compare_models,
        evaluate_model,
        generate_answers,
        load_model_ref,
        prepare_prompts,
    )
    from otdistill.evaluation.generation import Generation, greedy_generate, stop_token_ids
    from otdistill.evaluation.metrics import (
        ROUGE_KEYS,
        SQUAD_KEYS,
        metric_keys,
        rouge_scores,
        score,
        split_sentences,
        squad_em_f1,
    )
    from otdistill.evaluation.registry import is_registry_uri, resolve_registered_model
    from otdistill.evaluation.report import render_html, write_html
    from otdistill.evaluation.results import EvalResult, PredictionRecord, load_result, read_predictions

__all__ = [
    "ROUGE_KEYS",
    "SQUAD_KEYS",
    "EvalConfig",
    "EvalResult",
    "Generation",
    "ModelRef",
    "PredictionRecord",
    "PreparedPrompts",
    "compare_models",
    "evaluate_model",
    "generate_answers",
    "greedy_generate",
    "is_registry_uri",
    "load_model_ref",
    "load_result",
    "metric_keys",
    "prepare_prompts",
    "read_predictions",
    "render_html",
    "resolve_registered_model",
    "rouge_scores",
    "score",
    "split_sentences",
    "squad_em_f1",
    "stop_token_ids",
    "write_html",
]

if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(__name__, __file__, __all__)
