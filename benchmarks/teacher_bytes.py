"""Teacher bytes of a distillation step (issue 18 item 1): what the step downloads before it can start.

On a cluster KFP's launcher downloads every input artifact of a step from the object store, file by file,
before the step's code runs. This script builds the distillation step's inputs for the quickstart pair
(configs/quickstart.yaml: the Gemma-3-270M teacher, its training rows, the teacher cache) and measures:

- the teacher Model artifact saved in fp32 (what every run saved before `save_dtype`) and in bf16;
- the teacher cache, with the teacher tokenizer it now carries;
- the distillation step's input bytes before (teacher model + cache + rows; the cache as it is now, with
  the tokenizer, so "before" is 33 MB above what it was) and after (cache + rows), and
  the time to download each set through a real S3 API (moto's server on 127.0.0.1, boto3 as the launcher
  does). Loopback to an in-process server is a lower bound: a pod pulling from MinIO over the network
  takes longer, in proportion to the bytes.

    .venv/bin/python benchmarks/teacher_bytes.py [--markdown benchmarks/results/teacher_bytes.md]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from otdistill.config import load_config
from otdistill.models import load_model, load_tokenizer, resolve_model
from otdistill.steps.common import snapshot_data_config
from otdistill.steps.prepare_data import split_config
from otdistill.teacher_cache.step import cache_teacher_for_run
from otdistill.teacher_cache.teacher_files import save_teacher_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def download_seconds(client: object, bucket: str, dirs: dict[str, Path], scratch: Path) -> float:
    """Upload `dirs` under their names, then time downloading every object of them, one by one."""
    for name, path in dirs.items():
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            client.upload_file(str(f), bucket, f"{name}/{f.relative_to(path)}")  # type: ignore[attr-defined]
    keys = [
        o["Key"]
        for name in dirs
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{name}/")  # type: ignore[attr-defined]
        for o in page.get("Contents", [])
    ]
    started = time.perf_counter()
    for key in keys:
        target = scratch / key
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(bucket, key, str(target))  # type: ignore[attr-defined]
    seconds = time.perf_counter() - started
    shutil.rmtree(scratch, ignore_errors=True)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "quickstart.yaml"))
    parser.add_argument("--markdown", help="also write the table here")
    args = parser.parse_args(argv)

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request

    cfg = load_config(args.config)
    teacher, student = resolve_model(cfg.teacher), resolve_model(cfg.student)
    root = Path(tempfile.mkdtemp(prefix="otdistill-teacher-bytes-"))
    try:
        sizes: dict[str, int] = {}
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            model = load_model(teacher, dtype=dtype, device="cpu")
            model.save_pretrained(root / name, safe_serialization=True)
            load_tokenizer(teacher).save_pretrained(root / name)
            sizes[f"teacher artifact, {name}"] = size(root / name)
            del model
        t_tok, s_tok = load_tokenizer(teacher), load_tokenizer(student)
        train = root / "train"
        from otdistill.steps.prepare_data import prepare_split  # the step's own snapshot of one split

        prepare_split(split_config(cfg, "train"), t_tok, s_tok, train)
        sizes["training rows"] = size(train)
        cache = root / "cache"
        built = cache_teacher_for_run(
            teacher,
            student,
            snapshot_data_config(cfg, train, cfg.data.split),
            cache,
            k=cfg.distill.top_k,
            temperatures=(cfg.distill.temperature, cfg.distill.sinkhorn_temperature),
            batch_size=cfg.distill.per_device_batch_size,
            progress=False,
        )
        sizes["teacher cache (shards, manifest)"] = size(cache)
        save_teacher_tokenizer(teacher, cache, built.manifest.settings.teacher_tokenizer_sha256)
        sizes["teacher cache with the teacher tokenizer"] = size(cache)

        os.environ.setdefault("AWS_ACCESS_KEY_ID", "benchmark")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "benchmark")
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            client = boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1")
            client.create_bucket(Bucket="before")
            client.create_bucket(Bucket="after")
            before = {"teacher_model": root / "fp32", "teacher_cache": cache, "train_data": train}
            after = {"teacher_cache": cache, "train_data": train}
            timings = {
                "before": download_seconds(client, "before", before, root / "dl-before"),
                "after": download_seconds(client, "after", after, root / "dl-after"),
            }
        finally:
            server.stop()
        inputs = {
            "before": sum(size(p) for p in before.values()),
            "after": sum(size(p) for p in after.values()),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)

    lines = [
        f"Teacher bytes, {Path(args.config).name} ({teacher.source}, {built.manifest.count} cached rows)",
        "",
        "| what | bytes |",
        "|---|---:|",
        *(f"| {k} | {v:,} |" for k, v in sizes.items()),
        "",
        "| distill_student inputs | bytes | download through S3 (loopback), s |",
        "|---|---:|---:|",
        f"| before: teacher model (fp32) + cache + rows | {inputs['before']:,} | {timings['before']:.1f} |",
        f"| after: cache (with tokenizer) + rows | {inputs['after']:,} | {timings['after']:.1f} |",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    print(json.dumps({"sizes": sizes, "inputs": inputs, "download_s": timings}))
    if args.markdown:
        Path(args.markdown).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
