"""The cache step of a run in one call: resolve the teacher, tokenise the data as training will, build.

The teacher-side tokens must be exactly the ones training uses: `load_paired` cuts a too-long context to
the same text for both models, so the student's tokenizer takes part even though only the teacher runs
here. Examples are batched in order of teacher length (stable, so a resumed build sees the same batches)
to keep padding, and so wasted teacher compute, small.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

from otdistill.data import DataConfig, PairedBatch, PairedCollator, PairedFeature, load_paired
from otdistill.models import ModelSpec, load_model, load_tokenizer, resolve_model
from otdistill.teacher_cache.builder import BuildResult, build_teacher_cache
from otdistill.teacher_cache.identity import CacheIdentity

logger = logging.getLogger(__name__)


def length_sorted_batches(
    features: list[PairedFeature], collator: PairedCollator, batch_size: int
) -> list[PairedBatch]:
    """Batches of `batch_size` features in order of teacher length (ties keep data order)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(features)), key=lambda i: len(features[i].teacher.input_ids))
    return [
        collator([features[i] for i in order[start : start + batch_size]])
        for start in range(0, len(order), batch_size)
    ]


def cache_teacher_for_run(
    teacher: ModelSpec,
    student: ModelSpec,
    data: DataConfig,
    out_uri: str | os.PathLike[str],
    k: int = 50,
    K_uld: int = 256,  # noqa: N803 - the K of ULD, as in build_teacher_cache
    temperatures: tuple[float, float] = (1.0, 2.0),
    shard_size: int = 1024,
    batch_size: int = 8,
    device: str | None = None,
    dtype: str = "auto",
    cache_dir: str | None = None,
    endpoint_url: str | None = None,
    progress: bool = True,
) -> BuildResult:
    """Resolve both models, tokenise `data` for the pair, run the teacher and write the cache to `out_uri`.

    device defaults to CUDA when available; dtype "auto" means bfloat16 on CUDA and float32 on CPU (the
    stored probabilities are computed in float32 either way). The teacher's record (source, revision) and
    the identity of the data and both tokenizers go into the manifest, so training can check it runs with
    the teacher, data and tokenisation the cache was built from.
    """
    run_device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    run_dtype = dtype if dtype != "auto" else ("bfloat16" if run_device.startswith("cuda") else "float32")
    t_res = resolve_model(teacher, cache_dir=cache_dir)
    s_res = resolve_model(student, cache_dir=cache_dir)
    t_tok: Any = load_tokenizer(t_res)
    s_tok: Any = load_tokenizer(s_res)
    split = load_paired(data, t_tok, s_tok, progress=progress)
    batches = length_sorted_batches(split.features, PairedCollator.from_tokenizers(t_tok, s_tok), batch_size)
    logger.info(
        "teacher cache: %d examples of %s/%s in %d batches, teacher %s@%s on %s (%s)",
        len(split.features),
        data.task,
        data.split,
        len(batches),
        t_res.source,
        t_res.revision,
        run_device,
        run_dtype,
    )
    model = load_model(t_res, dtype=run_dtype, device=run_device)
    return build_teacher_cache(
        model,
        batches,
        out_uri,
        k=k,
        K_uld=K_uld,
        temperatures=temperatures,
        shard_size=shard_size,
        teacher=t_res.record(),
        endpoint_url=endpoint_url,
        total_batches=len(batches),
        progress=progress,
        identity=CacheIdentity.of(split.report.content_sha256, t_tok, s_tok),
    )
