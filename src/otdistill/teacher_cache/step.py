"""The cache step of a run: resolve the teacher, tokenise the data as training will, build the cache.

`cache_teacher_for_run` is the one implementation (batching, device and dtype choice, identity); the
pipeline's `cache_teacher` component calls `cache_teacher_step`, which reads the step's config and
artifacts, calls it inside the step's MLflow run and returns the cache artifact's metadata.

The teacher-side tokens must be exactly the ones training uses: `load_paired` cuts a too-long context to
the same text for both models, so the student's tokenizer takes part even though only the teacher runs
here. Examples are batched in order of teacher length (stable, so a resumed build sees the same batches)
to keep padding, and so wasted teacher compute, small; the cache is keyed by example id, so training
reads it in any order and batch size.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from otdistill.data import DataConfig, PairedBatch, PairedCollator, PairedFeature, load_paired
from otdistill.models import ModelSpec, ResolvedModel, load_model, load_tokenizer, resolve_model
from otdistill.teacher_cache.builder import BuildResult, build_teacher_cache
from otdistill.teacher_cache.format import MANIFEST
from otdistill.teacher_cache.identity import CacheIdentity
from otdistill.teacher_cache.teacher_files import save_teacher_tokenizer
from otdistill.tracking.metric_names import cache_metric

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


def run_device_and_dtype(device: str | None = None, dtype: str = "auto") -> tuple[str, str]:
    """(device, dtype) the teacher runs in: CUDA when available; "auto" is bfloat16 on a CUDA device that
    supports it, else float32 (the stored probabilities are computed in float32 either way)."""
    run_device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype != "auto":
        return run_device, dtype
    bf16 = run_device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return run_device, "bfloat16" if bf16 else "float32"


def _resolved(model: ModelSpec | ResolvedModel, cache_dir: str | None) -> ResolvedModel:
    return model if isinstance(model, ResolvedModel) else resolve_model(model, cache_dir=cache_dir)


def cache_teacher_for_run(
    teacher: ModelSpec | ResolvedModel,
    student: ModelSpec | ResolvedModel,
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

    teacher / student: a spec to resolve, or an already resolved model (the pipeline step's teacher is a
    Model artifact: a fine-tuned directory or a reference). device and dtype: `run_device_and_dtype`.
    The teacher's record (source, revision) and the identity of the data and both tokenizers go into the
    manifest, so training can check it runs with the teacher, data and tokenisation the cache was built
    from. The result's manifest says what was stored (`count`, `settings.teacher`, `settings.data_sha256`).
    """
    run_device, run_dtype = run_device_and_dtype(device, dtype)
    t_res = _resolved(teacher, cache_dir)
    s_res = _resolved(student, cache_dir)
    t_tok: Any = load_tokenizer(t_res)
    s_tok: Any = load_tokenizer(s_res)
    split = load_paired(data, t_tok, s_tok, progress=progress)
    batches = length_sorted_batches(split.features, PairedCollator.from_tokenizers(t_tok, s_tok), batch_size)
    logger.info(
        "teacher cache: %d examples of %s/%s in %d batches, top-%d, teacher %s@%s on %s (%s)",
        len(split.features),
        data.task,
        data.split,
        len(batches),
        k,
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


def move_cache(built: Path, artifact: Path) -> None:
    """Move a complete cache's files (`built`, on the model cache) into the step's output `artifact`.

    The manifest goes last, so an interrupted move never leaves an artifact that looks complete; the
    resume marker of `StepCheckpoints.claim` stays behind.
    """
    from otdistill.steps.resume import FINGERPRINT_FILE

    artifact.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in built.rglob("*") if p.is_file() and p.name != FINGERPRINT_FILE)
    for path in sorted(files, key=lambda p: p.name == MANIFEST):
        target = artifact / path.relative_to(built)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, target)


def cache_teacher_step(
    config_json: str, teacher_dir: str | Path, train_dir: str | Path, cache_dir: str | Path
) -> dict[str, str]:
    """The pipeline step `cache_teacher`: `cache_teacher_for_run` on the run's artifacts, in a step run.

    config_json: the step's config sections (teacher, student, data, the loss' top_k / temperatures /
    batch size / S3 endpoint, tracking); teacher_dir: the teacher Model artifact; train_dir: the
    `prepare_data` snapshot of the training split; cache_dir: the output Dataset. Returns its metadata.
    """
    # Imported here: otdistill.config imports the training stack, which imports this package.
    from otdistill.steps.common import log_training_datasets, resolve_model_artifact, snapshot_data_config
    from otdistill.steps.prologue import start_step
    from otdistill.steps.resume import step_checkpoints

    step = start_step(config_json, "cache_teacher")
    cfg, loss = step.cfg, step.cfg.distill
    with (
        step_checkpoints("cache_teacher", cfg.section_json("cache_teacher"), train_dir) as checkpoints,
        step.tracked() as run,
    ):
        teacher = resolve_model_artifact(teacher_dir)
        student = resolve_model(cfg.student)
        # Built on the model cache (the PVC), where a retry of this run finds and resumes it
        # (`build_teacher_cache` reuses every finished shard); moved into the artifact when complete.
        work = checkpoints.claim("cache", {"teacher": teacher, "student": student})
        run.log_params(
            {
                "k": loss.top_k,
                "temperature": loss.temperature,
                "sinkhorn_temperature": loss.sinkhorn_temperature,
                "batch_size": loss.per_device_batch_size,
                "teacher": teacher.source,
            }
        )
        log_training_datasets(cfg, train_dir, None)
        result = cache_teacher_for_run(
            teacher,
            student,
            snapshot_data_config(cfg, train_dir, cfg.data.split),
            work,
            k=loss.top_k,
            temperatures=(loss.temperature, loss.sinkhorn_temperature),
            batch_size=loss.per_device_batch_size,
            endpoint_url=loss.s3_endpoint_url,
            progress=loss.progress_bar,  # the distillation's switch: the cache is built for it
        )
        examples = result.manifest.count
        # What distillation needs of the teacher travels with the cache: it then takes no teacher model.
        save_teacher_tokenizer(teacher, work, result.manifest.settings.teacher_tokenizer_sha256)
        move_cache(work, Path(cache_dir))
        run.log_params({"examples": examples})
        run.log_metrics(
            {
                cache_metric("shards_written"): float(result.shards_written),
                cache_metric("examples"): float(examples),
            }
        )
    return {
        "uri": str(cache_dir),
        "k": str(loss.top_k),
        "teacher_revision": result.manifest.settings.teacher.get("revision", ""),
        "examples": str(examples),
        "data_sha256": result.manifest.settings.data_sha256,
        "teacher_source": teacher.source,
    }
