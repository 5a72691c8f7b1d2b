"""Step `cache_teacher`: run the teacher once over the training split and store what the loss needs.

Distillation then reads the teacher's top-k (MultiLevelOT) / sorted probabilities (ULD) from the cache and
never loads the teacher: the student's GPU holds one model, and a re-run with a new learning rate or loss
weights reuses this step from KFP's cache.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import torch

from otdistill.data import PairedBatch, PairedCollator, load_paired
from otdistill.data.tokenization import PairedFeature
from otdistill.models import load_model, load_tokenizer, resolve_model
from otdistill.steps.common import (
    load_step_config,
    pipeline_run,
    resolve_model_artifact,
    setup_logging,
    snapshot_data_config,
    step_tags,
)
from otdistill.teacher_cache import CacheIdentity, build_teacher_cache
from otdistill.tracking.runs import step_run

log = logging.getLogger(__name__)


def _batches(features: list[PairedFeature], collator: PairedCollator, size: int) -> Iterator[PairedBatch]:
    for start in range(0, len(features), size):
        yield collator(features[start : start + size])


def cache_teacher(
    config_json: str, teacher_dir: str | Path, train_dir: str | Path, cache_dir: str | Path
) -> dict[str, str]:
    """Build the teacher cache for the snapshot's training split in `cache_dir`; returns artifact metadata."""
    setup_logging()
    cfg = load_step_config(config_json)
    loss = cfg.distill
    parent = pipeline_run(cfg.tracking, cfg.name)
    with step_run(parent, "cache_teacher", tags=step_tags(cfg)) as run:
        teacher = resolve_model_artifact(teacher_dir)
        student = resolve_model(cfg.student)
        t_tok, s_tok = load_tokenizer(teacher), load_tokenizer(student)
        data = snapshot_data_config(cfg, train_dir, cfg.data.split)
        split = load_paired(data, t_tok, s_tok)
        features = split.features
        # Recorded in the cache so distill_student refuses it for other data or another tokenisation.
        identity = CacheIdentity.of(split.report.content_sha256, t_tok, s_tok)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        dtype = "bfloat16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "float32"
        model = load_model(teacher, dtype=dtype, device=device)
        size = loss.per_device_batch_size
        params = {
            "k": loss.top_k,
            "temperature": loss.temperature,
            "sinkhorn_temperature": loss.sinkhorn_temperature,
        }
        run.log_params({**params, "batch_size": size, "examples": len(features), "teacher": teacher.source})
        log.info(
            "teacher cache: %d examples, top-%d, teacher %s on %s",
            len(features),
            loss.top_k,
            teacher.source,
            device,
        )
        result = build_teacher_cache(
            model,
            _batches(features, PairedCollator.from_tokenizers(t_tok, s_tok), size),
            Path(cache_dir),
            k=loss.top_k,
            temperatures=(loss.temperature, loss.sinkhorn_temperature),
            teacher=teacher.record(),
            total_batches=(len(features) + size - 1) // size,
            progress=False,
            identity=identity,
        )
        run.log_metrics(
            {"cache.shards_written": float(result.shards_written), "cache.examples": float(len(features))}
        )
    return {
        "uri": str(result.uri),
        "k": str(loss.top_k),
        "teacher_revision": teacher.revision,
        "examples": str(len(features)),
        "data_sha256": identity.data_sha256,
    }
