"""One-shot GPU check: loss correctness and speed, training-step and generation throughput on CUDA.

Why: every number in benchmarks/README.md was measured on a 2-core CPU, and configs/sweeps/gpu.yaml
budgets a GPU run from estimates (~0.15 s per student step at batch 8 x 1024 tokens in bf16, ~0.3 s per
Gemma-3-270M SFT step). This script checks the CUDA path once, on a lent GPU, in a few minutes, with random
weights at the real sizes (no checkpoints, no internet), and writes what it measured.

How to run (repository root; needs torch with CUDA, transformers, tokenizers, tqdm; nothing else of the
project's dependencies: no mlflow, kfp, accelerate, peft, datasets or rouge_score, no `pip install -e`):

    PYTHONPATH=src python3 benchmarks/gpu_check.py --out $OUT

CPU smoke test of the whole script at tiny sizes (what the CI machine can run):

    PYTHONPATH=src python benchmarks/gpu_check.py --device cpu --small --threads 1

Sections (each runs even when an earlier one failed). Exit code: 0 all ran and passed, 1 a section failed
(its traceback is printed and kept in the outputs), 2 the losses or CUDA are not available at all, 3 none
failed but the soft time budget (`--budget-s`, default 330 s) skipped some work (reported as skipped):

1. correctness: MultiLevelOT (live teacher logits and cached teacher top-k), ULD and forward KL on the
   device in fp32 against the same loss on the CPU in float64, values and gradients (asserted), and with
   bf16 logits (loosely asserted against float64 of the same rounded logits).
2. loss_speed: forward+backward of cross-entropy and MultiLevelOT (live and cached) at B=8, L=512 and 1024,
   Vs=49,152, Vt=262,144, fp32 and bf16 logits, called as benchmarks/loss_speed.py calls them; median time
   with CUDA events after warm-ups, and peak CUDA memory.
3. train_step: seconds per optimizer step, tokens/s and peak memory of the SmolLM2-135M architecture at
   8 x 1024 tokens, bf16 autocast over fp32 weights, AdamW: SFT (cross-entropy) and MultiLevelOT distillation
   from a cached teacher top-k, then Gemma-3-270M SFT. The loss is the project's own
   `DistillationObjective` + `combine` (what `DistillationTrainer.compute_loss` runs) in a plain torch loop:
   the transformers Trainer needs accelerate, which the device lacks.
4. generation: `otdistill.evaluation.generation.greedy_generate` on the random student in bf16, 64 prompts
   of 100-500 random token ids, 64 new tokens, batch sizes 1, 8, 16, 32: generated tokens/s and the
   speed-up over batch 1 (batch 1 runs every 4th prompt only, to save time: same length distribution).

Outputs: one printed line per measurement, and `gpu_check.json` + `gpu_check.md` in `--out` (default: the
`OUT` environment variable, else runs/gpu_check), rewritten after every measurement (a run cut short keeps
what it measured).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import random
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))  # the sibling benchmark scripts (loss_speed.py)

try:
    from loss_speed import VS, VT, loss_inputs  # benchmarks/loss_speed.py: vocabulary sizes, timed inputs
    from otdistill.data import SideBatch, response_logits
    from otdistill.evaluation.generation import greedy_generate
    from otdistill.losses import ForwardKLLoss, MultiLevelOTLoss, TeacherTopK, ULDLoss
    from otdistill.training.config import TrainConfig
    from otdistill.training.objective import DistillationObjective, TeacherOutputs, combine, local_counts
except ImportError as exc:  # pragma: no cover - the message is the point
    print(
        f"gpu_check: cannot import the otdistill losses, objective or generation ({exc!r}).\n"
        "Run from the repository root with the sources on the path: "
        "PYTHONPATH=src python3 benchmarks/gpu_check.py --out $OUT",
        file=sys.stderr,
    )
    sys.exit(2)

SECTIONS = ("correctness", "loss_speed", "train_step", "generation")
# The project's dependencies a bare GPU device lacks; the library imports none of them for this script
# (its packages import lazily), which the report records and tests/benchmarks/test_gpu_check.py checks.
# accelerate is not listed: transformers imports it itself wherever it is installed.
ABSENT_ON_DEVICE = frozenset({"mlflow", "kfp", "peft", "datasets", "rouge_score"})
GIB = 2**30
# configs/sweeps/gpu.yaml's estimates for one GPU at batch 8 x 1024 tokens in bf16
EST_STUDENT_STEP_S, EST_GEMMA_STEP_S = 0.15, 0.3
# fp32 on the device against float64 on the CPU (relative): the losses run in fp32 for fp32 and bf16 logits
FP32_VALUE_TOL, FP32_GRAD_TOL = 1e-4, 1e-3
# bf16 logits against float64 of the same rounded logits: fp32 maths inside, gradient returned in bf16
BF16_VALUE_TOL, BF16_GRAD_TOL = 1e-3, 2e-2


@dataclass(frozen=True)
class Sizes:
    """Every size the sections use; `full()` is the paper-like check, `small_sizes()` a CPU smoke test."""

    student_vocab: int
    teacher_vocab: int
    loss_batch: int
    loss_lengths: tuple[int, ...]
    loss_warmup: int
    loss_repeats: int
    train_batch: int
    train_length: int
    train_response: int
    train_warmup: int
    train_steps: int
    gen_prompts: int
    gen_prompt_lengths: tuple[int, int]
    gen_new_tokens: int
    gen_batch_sizes: tuple[int, ...]
    gen_b1_every: int  # batch size 1 runs every n-th prompt only
    small: bool

    @staticmethod
    def full() -> Sizes:
        return Sizes(
            student_vocab=VS,
            teacher_vocab=VT,
            loss_batch=8,
            loss_lengths=(512, 1024),
            loss_warmup=2,
            loss_repeats=5,
            train_batch=8,
            train_length=1024,
            train_response=256,
            train_warmup=3,
            train_steps=10,
            gen_prompts=64,
            gen_prompt_lengths=(100, 500),
            gen_new_tokens=64,
            gen_batch_sizes=(1, 8, 16, 32),
            gen_b1_every=4,
            small=False,
        )

    @staticmethod
    def small_sizes() -> Sizes:
        return Sizes(
            student_vocab=512,
            teacher_vocab=2048,
            loss_batch=2,
            loss_lengths=(16, 32),
            loss_warmup=1,
            loss_repeats=2,
            train_batch=2,
            train_length=64,
            train_response=16,
            train_warmup=1,
            train_steps=2,
            gen_prompts=8,
            gen_prompt_lengths=(10, 40),
            gen_new_tokens=8,
            gen_batch_sizes=(1, 2, 4),
            gen_b1_every=2,
            small=True,
        )


# ---- models and tokenizer ----------------------------------------------------------------------------


def student_config(sizes: Sizes) -> Any:
    """SmolLM2-135M's architecture (LlamaConfig), or a tiny one with `--small`; random weights."""
    from transformers import LlamaConfig

    common: dict[str, Any] = dict(
        vocab_size=sizes.student_vocab,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
    )
    if sizes.small:
        return LlamaConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            **common,
        )
    return LlamaConfig(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        **common,
    )


def teacher_config(sizes: Sizes) -> Any:
    """Gemma-3-270M's architecture (Gemma3TextConfig), or a tiny one with `--small`; random weights."""
    from transformers import Gemma3TextConfig

    common: dict[str, Any] = dict(
        vocab_size=sizes.teacher_vocab,
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        query_pre_attn_scalar=256,
        final_logit_softcapping=None,
        attn_logit_softcapping=None,
        max_position_embeddings=32_768,
    )
    if sizes.small:
        return Gemma3TextConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=32,
            sliding_window=16,
            **common,
        )
    return Gemma3TextConfig(
        hidden_size=640,
        intermediate_size=2048,
        num_hidden_layers=18,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=256,
        sliding_window=512,
        **common,
    )


def build_model(config: Any, device: torch.device, seed: int = 0) -> torch.nn.Module:
    """A causal LM with random weights from `config`, created directly on `device` (fp32)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    with device:
        model = AutoModelForCausalLM.from_config(config)
    return model.to(device)


def n_params(model: torch.nn.Module) -> float:
    """Parameters in millions (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters()) / 1e6


def student_tokenizer(vocab_size: int) -> Any:
    """A word-level tokenizer covering the whole student vocabulary, with SmolLM2's special tokens.

    Ids 0-2 are <|endoftext|> (pad), <|im_start|> (bos), <|im_end|> (eos), as in SmolLM2, so generation has
    real stop tokens; every other id decodes to a placeholder word.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(specials)}
    vocab.update({f"w{i}": i for i in range(len(specials), vocab_size)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<|endoftext|>",
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<unk>",
    )


# ---- timing and memory -------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_runs(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Seconds of each of `repeats` calls after `warmup` untimed ones (CUDA events on a GPU)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return times


def reset_peak(device: torch.device) -> float:
    """Reset the peak-memory counter; return the memory allocated now (GiB; 0 on CPU)."""
    if device.type != "cuda":
        return 0.0
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device) / GIB


def peak_gib(device: torch.device) -> float | None:
    """Peak CUDA memory allocated since the last reset (GiB); None on CPU (not measured there)."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / GIB


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def fmt_gib(value: float | None) -> str:
    return "n/a (cpu)" if value is None else f"{value:.2f} GiB"


# ---- results -----------------------------------------------------------------------------------------


@dataclass
class SectionResult:
    name: str
    status: str = "not run"  # "ok" | "failed" | "skipped (time budget)" | "not run"
    seconds: float = 0.0
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None


class Report:
    """Collects one row per measurement, prints it as one line, and writes the JSON and markdown files."""

    def __init__(self, out: Path, meta: dict[str, Any]) -> None:
        self.out = out
        self.meta = meta
        self.sections: dict[str, SectionResult] = {}
        self.current: SectionResult | None = None
        self.deadline = math.inf  # time.perf_counter() after which the remaining work is skipped

    def over_budget(self, what: str) -> bool:
        """True (and a note) when the soft time budget is spent: `what` is then skipped."""
        if time.perf_counter() <= self.deadline:
            return False
        self.note(f"time budget (--budget-s) spent: skipped {what}")
        return True

    def start(self, name: str) -> SectionResult:
        self.current = self.sections[name] = SectionResult(name)
        print(f"\n=== {name} ===", flush=True)
        return self.current

    def row(self, line: str, **values: Any) -> None:
        assert self.current is not None
        self.current.rows.append(values)
        print(f"[{self.current.name}] {line}", flush=True)
        self.write()  # a run killed later keeps every row measured so far

    def note(self, text: str) -> None:
        assert self.current is not None
        self.current.notes.append(text)
        print(f"[{self.current.name}] note: {text}", flush=True)

    def write(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        data = {"meta": self.meta, "sections": {k: asdict(v) for k, v in self.sections.items()}}
        (self.out / "gpu_check.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
        (self.out / "gpu_check.md").write_text(self.markdown())

    def markdown(self) -> str:
        m = self.meta
        lines = [
            "# gpu_check",
            "",
            f"Device: {m.get('device_name')} ({m.get('device')}); torch {m.get('torch')}, "
            f"transformers {m.get('transformers')}, CUDA {m.get('cuda')}, Python {m.get('python')}; "
            f"{'small (smoke test) sizes' if m.get('small') else 'full sizes'}; "
            f"started {m.get('started')}; elapsed {m.get('elapsed_s', 0):.0f} s.",
            f"Command: `{m.get('command')}`",
            "",
        ]
        for sec in self.sections.values():
            lines += [f"## {sec.name}: {sec.status} ({sec.seconds:.1f} s)", ""]
            if sec.rows:
                keys: list[str] = []
                for row in sec.rows:
                    keys += [k for k in row if k not in keys]
                lines.append("| " + " | ".join(keys) + " |")
                lines.append("|" + "---|" * len(keys))
                for row in sec.rows:
                    lines.append("| " + " | ".join(_cell(row.get(k)) for k in keys) + " |")
                lines.append("")
            lines += [f"- {n}" for n in sec.notes]
            if sec.error:
                lines += ["", "```", sec.error.rstrip(), "```"]
            lines.append("")
        return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.4g}"
        return f"{value:.2e}"
    return str(value)


# ---- section 1: correctness --------------------------------------------------------------------------


def rel_err(value: Tensor, ref: Tensor) -> float:
    """||value - ref|| / ||ref|| in float64 (an absolute error where ref is 0)."""
    diff = (value.detach().double().cpu() - ref.detach().double()).norm()
    scale = ref.detach().double().norm()
    return float(diff / scale) if scale > 0 else float(diff)


def correctness_inputs() -> dict[str, Any]:
    """A small random case in float64 on the CPU: staggered lengths so the masks matter."""
    gen = torch.Generator().manual_seed(1)
    batch, s_len, t_len, vs, vt = 3, 20, 23, 700, 1500
    s_mask = torch.arange(s_len) < torch.tensor([s_len - 3 * b for b in range(batch)]).unsqueeze(1)
    t_mask = torch.arange(t_len) < torch.tensor([t_len - 4 * b for b in range(batch)]).unsqueeze(1)
    return {
        "student": torch.randn(batch, s_len, vs, generator=gen, dtype=torch.float64) * 3,
        "teacher": torch.randn(batch, t_len, vt, generator=gen, dtype=torch.float64) * 3,
        "teacher_same_vocab": torch.randn(batch, t_len, vs, generator=gen, dtype=torch.float64) * 3,
        "s_mask": s_mask,
        "t_mask": t_mask,
    }


LossCall = Callable[[Tensor, Tensor, Tensor, Tensor], dict[str, Tensor]]


def loss_calls() -> dict[str, tuple[LossCall, str]]:
    """name -> (call returning named scalars, which teacher tensor it takes)."""
    mlot, uld, kl = MultiLevelOTLoss(), ULDLoss(), ForwardKLLoss()

    def mlot_live(s: Tensor, t: Tensor, sm: Tensor, tm: Tensor) -> dict[str, Tensor]:
        o = mlot(s, t, sm, tm)
        return {"loss": o.loss, "had": o.had, "sl": o.sl, "sd": o.sd}

    def mlot_cached(s: Tensor, t: Tensor, sm: Tensor, tm: Tensor) -> dict[str, Tensor]:
        o = mlot(s, mlot.teacher_topk(t, tm), sm, tm)  # the teacher cache's path
        return {"loss": o.loss, "had": o.had, "sl": o.sl, "sd": o.sd}

    def uld_live(s: Tensor, t: Tensor, sm: Tensor, tm: Tensor) -> dict[str, Tensor]:
        return {"loss": uld(s, t, sm, tm).loss}

    def kl_live(s: Tensor, t: Tensor, sm: Tensor, tm: Tensor) -> dict[str, Tensor]:
        return {"loss": kl(s, t, sm, tm).loss}

    return {
        "multilevel_ot live": (mlot_live, "teacher"),
        "multilevel_ot cached top-k": (mlot_cached, "teacher"),
        "uld live": (uld_live, "teacher"),
        "forward_kl (same vocab)": (kl_live, "teacher_same_vocab"),
    }


def run_loss(
    call: LossCall, student: Tensor, teacher: Tensor, s_mask: Tensor, t_mask: Tensor
) -> tuple[dict[str, Tensor], Tensor]:
    x = student.detach().clone().requires_grad_(True)
    values = call(x, teacher, s_mask, t_mask)
    values["loss"].backward()
    assert x.grad is not None
    return {k: v.detach() for k, v in values.items()}, x.grad.detach()


def section_correctness(report: Report, device: torch.device, sizes: Sizes) -> None:
    inputs = correctness_inputs()
    failures: list[str] = []
    b, ls, vs = inputs["student"].shape
    report.note(
        f"random case B={b}, Ls={ls}, Lt={inputs['teacher'].shape[1]}, Vs={vs}, "
        f"Vt={inputs['teacher'].shape[2]}, staggered lengths; reference = the same loss on the CPU in float64"
    )
    for name, (call, teacher_key) in loss_calls().items():
        ref_vals, ref_grad = run_loss(
            call, inputs["student"], inputs[teacher_key], inputs["s_mask"], inputs["t_mask"]
        )
        for dtype in (torch.float32, torch.bfloat16):
            s = inputs["student"].to(device=device, dtype=dtype)
            t = inputs[teacher_key].to(device=device, dtype=dtype)
            sm, tm = inputs["s_mask"].to(device), inputs["t_mask"].to(device)
            vals, grad = run_loss(call, s, t, sm, tm)
            if dtype == torch.bfloat16:
                # reference on the same bf16-rounded logits: isolates the loss's own arithmetic
                rounded_vals, rounded_grad = run_loss(
                    call, s.double().cpu(), t.double().cpu(), inputs["s_mask"], inputs["t_mask"]
                )
                value_tol, grad_tol, against = BF16_VALUE_TOL, BF16_GRAD_TOL, "fp64 of the rounded logits"
            else:
                rounded_vals, rounded_grad = ref_vals, ref_grad
                value_tol, grad_tol, against = FP32_VALUE_TOL, FP32_GRAD_TOL, "fp64"
            errs = {k: rel_err(v, rounded_vals[k]) for k, v in vals.items()}
            grad_err = rel_err(grad, rounded_grad)
            value_err = max(errs.values())
            finite = all(bool(torch.isfinite(v).all()) for v in vals.values()) and bool(
                torch.isfinite(grad).all()
            )
            ok = finite and value_err <= value_tol and grad_err <= grad_tol
            dname = "fp32" if dtype == torch.float32 else "bf16"
            row: dict[str, Any] = {
                "loss": name,
                "dtype": dname,
                "device": device.type,
                "vs": against,
                "value": float(vals["loss"]),
                "ref value": float(rounded_vals["loss"]),
                "max rel err (values)": value_err,
                "rel err (grad)": grad_err,
                "tol (values/grad)": f"{value_tol:g}/{grad_tol:g}",
                "ok": ok,
            }
            extra = ""
            if dtype == torch.bfloat16:
                row["rel err vs unrounded fp64 (loss)"] = rel_err(vals["loss"], ref_vals["loss"])
                row["rel err vs unrounded fp64 (grad)"] = rel_err(grad, ref_grad)
                extra = (
                    f"; vs unrounded fp64: loss {row['rel err vs unrounded fp64 (loss)']:.2e}, "
                    f"grad {row['rel err vs unrounded fp64 (grad)']:.2e} (input rounding, not asserted)"
                )
            parts = ", ".join(f"{k} {v:.2e}" for k, v in errs.items())
            report.row(
                f"{name} {dname} {device.type} vs {against}: loss {float(vals['loss']):.6f} "
                f"(ref {float(rounded_vals['loss']):.6f}); rel err {parts}; grad rel err {grad_err:.2e} "
                f"(tol {value_tol:g}/{grad_tol:g}) {'OK' if ok else 'FAIL'}{extra}",
                **row,
            )
            if not ok:
                failures.append(f"{name} {dname}: value err {value_err:.2e}, grad err {grad_err:.2e}")
    if failures:
        raise AssertionError("loss mismatch on the device: " + "; ".join(failures))


# ---- section 2: loss speed ---------------------------------------------------------------------------


def section_loss_speed(report: Report, device: torch.device, sizes: Sizes) -> None:
    report.note(
        f"B={sizes.loss_batch}, Vs={sizes.student_vocab}, Vt={sizes.teacher_vocab}, teacher length L + L/8; "
        f"median of {sizes.loss_repeats} runs after {sizes.loss_warmup} warm-ups; fwd+bwd w.r.t. the student "
        "logits; peak = max CUDA memory allocated during the timed runs (inputs included), extra = peak "
        "minus the memory held before them"
    )
    for length in sizes.loss_lengths:
        for dtype in (torch.float32, torch.bfloat16):
            if report.over_budget(f"L={length} {str(dtype).removeprefix('torch.')} and later cases"):
                return
            loss_speed_case(report, device, sizes, length, dtype)
            free_memory(device)


def loss_speed_case(
    report: Report, device: torch.device, sizes: Sizes, length: int, dtype: torch.dtype
) -> None:
    """One (L, dtype): cross-entropy, MultiLevelOT live and cached, and the teacher side alone."""
    vs, vt, batch = sizes.student_vocab, sizes.teacher_vocab, sizes.loss_batch
    dname = "fp32" if dtype == torch.float32 else "bf16"
    mlot = MultiLevelOTLoss()
    data = loss_inputs(batch, length, vs, vt, device=device, dtype=dtype)
    teacher, s_mask, t_mask, labels = data.teacher, data.s_mask, data.t_mask, data.labels
    cached = mlot.teacher_topk(teacher, t_mask)  # untimed here: built once by the cache step
    # called exactly as benchmarks/loss_speed.py calls them (CE in fp32, as the training CE is)
    fns: dict[str, Callable[[Tensor], Tensor]] = {
        "cross_entropy": lambda x: F.cross_entropy(
            x.float().reshape(-1, vs), labels.reshape(-1), ignore_index=-100
        ),
        "multilevel_ot live": lambda x: mlot(x, teacher, s_mask, t_mask).loss,
        "multilevel_ot cached": lambda x: mlot(x, cached, s_mask, t_mask).loss,
        "teacher_topk (cache build, no grad)": lambda x: mlot.teacher_topk(teacher, t_mask).probs,
    }
    x = data.student.detach().clone().requires_grad_(True)
    del data
    ce_time = math.nan
    for row_name, fn in fns.items():
        backward = row_name != "teacher_topk (cache build, no grad)"

        def run(fn: Callable[[Tensor], Tensor] = fn, backward: bool = backward) -> None:
            x.grad = None
            out = fn(x)
            if backward:
                out.backward()

        before = reset_peak(device)
        times = time_runs(run, device, sizes.loss_warmup, sizes.loss_repeats)
        peak = peak_gib(device)
        median = statistics.median(times)
        ce_time = median if row_name == "cross_entropy" else ce_time
        extra = None if peak is None else peak - before
        report.row(
            f"L={length} {dname} {row_name}: {'fwd+bwd' if backward else 'fwd'} {median * 1000:.1f} ms "
            f"(median, min {min(times) * 1000:.1f}), {median / ce_time:.2f}x CE, peak {fmt_gib(peak)}, "
            f"extra {fmt_gib(extra)}",
            B=batch,
            L=length,
            dtype=dname,
            row=row_name,
            median_ms=median * 1000,
            min_ms=min(times) * 1000,
            x_ce=median / ce_time,
            peak_gib=peak,
            extra_gib=extra,
        )


# ---- section 3: training step ------------------------------------------------------------------------


def make_side(batch: int, length: int, response: int, vocab: int, device: torch.device) -> Any:
    """A full-length batch whose last n_b tokens are the response (n_b = response - 7b, at least 1)."""
    ids = torch.randint(4, vocab, (batch, length), device=device)
    n = torch.tensor([max(1, response - 7 * b) for b in range(batch)], device=device)
    idx = torch.arange(response, device=device).unsqueeze(0)
    mask = idx < n.unsqueeze(1)
    positions = torch.where(mask, length - n.unsqueeze(1) - 1 + idx, torch.zeros_like(idx))
    labels = torch.full_like(ids, -100)
    for b in range(batch):
        labels[b, length - int(n[b]) :] = ids[b, length - int(n[b]) :]
    return SideBatch(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        labels=labels,
        response_positions=positions,
        response_mask=mask,
    )


def model_response_logits(model: Any, side: Any, keep_2d: bool = True) -> Tensor:
    """Response-position logits as `DistillationTrainer.compute_loss` gets them: `logits_to_keep` = (B, R).

    With `keep_2d` False (a transformers that lacks 2-D `logits_to_keep`), the full logits gathered at the
    response positions by the library's `otdistill.data.response_logits` (what the teacher cache does for
    models without `logits_to_keep`).
    """
    if keep_2d:
        return model(
            input_ids=side.input_ids,
            attention_mask=side.attention_mask,
            logits_to_keep=side.response_positions,
            use_cache=False,
        ).logits
    logits = model(input_ids=side.input_ids, attention_mask=side.attention_mask, use_cache=False).logits
    return response_logits(logits, side)


def check_logits_to_keep(report: Report, model: torch.nn.Module, vocab: int, device: torch.device) -> bool:
    """Whether this transformers accepts a (B, R) `logits_to_keep`, as the project's training path needs."""
    side = make_side(2, 12, 4, vocab, device)
    with torch.no_grad():
        try:
            shape = tuple(model_response_logits(model, side).shape)
            error = ""
        except Exception as exc:  # noqa: BLE001 - reported, then the hand-made path is used
            shape, error = (), repr(exc)
        if shape == (2, 4, vocab):
            ref = model_response_logits(model, side, keep_2d=False)
            if not torch.allclose(model_response_logits(model, side), ref, rtol=1e-4, atol=1e-4):
                raise RuntimeError("2-D logits_to_keep gives other logits than gathering the full logits")
            return True
    report.note(
        f"WARNING: this transformers does not support a 2-D logits_to_keep (logits {shape} {error}, expected "
        f"(2, 4, {vocab})): DistillationTrainer.compute_loss and LiveTeacher would break here; timing the "
        "steps with the response logits gathered by hand instead"
    )
    return False


class StepRunner:
    """One optimizer step as training runs it: bf16 autocast forward and loss, backward, clip, AdamW.

    The loss is the project's own `DistillationObjective` terms + `combine`, what
    `DistillationTrainer.compute_loss` runs, in a plain torch loop (the Trainer itself needs accelerate).
    """

    path = "otdistill DistillationObjective.terms + combine, plain torch AdamW loop"

    def __init__(
        self,
        model: torch.nn.Module,
        loss_name: str,
        device: torch.device,
        teacher_topk: Any = None,
        keep_2d: bool = True,
    ) -> None:
        self.model = model
        self.keep_2d = keep_2d
        self.device = device
        self.teacher_topk = teacher_topk
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.0)
        self.objective = DistillationObjective(TrainConfig(loss=loss_name, progress_bar=False))
        self.loss_name = loss_name

    def __call__(self, side: Any, teacher_mask: Tensor | None) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            logits = model_response_logits(self.model, side, self.keep_2d)
            loss = self.loss(logits, side, teacher_mask)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()

    def loss(self, logits: Tensor, side: Any, teacher_mask: Tensor | None) -> Tensor:
        teacher = None
        if self.loss_name != "none":
            assert teacher_mask is not None
            teacher = TeacherOutputs(mask=teacher_mask, topk=self.teacher_topk)
        terms = self.objective.terms(logits, side, teacher)
        local = local_counts(side.response_mask, teacher_mask if teacher is not None else None)
        values = torch.stack([t.value.detach().float() for t in terms]).tolist()  # the trainer's check
        if not all(math.isfinite(v) for v in values):
            raise FloatingPointError(f"non-finite loss parts {values}")
        return combine(terms, local, local)


def random_teacher_topk(
    batch: int, t_len: int, vocab: int, k: int, device: torch.device
) -> tuple[TeacherTopK, Tensor]:
    """A valid cached teacher top-k: the exact teacher side of random bf16 teacher logits."""
    torch.manual_seed(1)
    logits = torch.randn(batch, t_len, vocab, device=device).mul_(3).to(torch.bfloat16)
    n = torch.tensor([max(1, t_len - 5 * b) for b in range(batch)], device=device)
    mask = torch.arange(t_len, device=device) < n.unsqueeze(1)
    topk = MultiLevelOTLoss(top_k=k).teacher_topk(logits, mask)
    del logits
    return topk, mask


def time_step(
    report: Report,
    label: str,
    runner: StepRunner,
    side: Any,
    teacher_mask: Tensor | None,
    device: torch.device,
    sizes: Sizes,
    estimate: float | None,
) -> None:
    before = reset_peak(device)
    times = time_runs(lambda: runner(side, teacher_mask), device, sizes.train_warmup, sizes.train_steps)
    peak = peak_gib(device)
    median = statistics.median(times)
    tokens = int(side.attention_mask.sum())
    est = ""
    if estimate is not None and not sizes.small:
        est = f", gpu.yaml estimate {estimate:.2f} s/step ({median / estimate:.2f}x)"
    report.row(
        f"{label}: {median:.3f} s/step (median of {len(times)}, min {min(times):.3f}), "
        f"{tokens / median:,.0f} tokens/s, peak {fmt_gib(peak)}{est}",
        step=label,
        batch=int(side.input_ids.shape[0]),
        seq_len=int(side.input_ids.shape[1]),
        response_len=int(side.response_mask.shape[1]),
        s_per_step=median,
        min_s=min(times),
        tokens_per_s=tokens / median,
        peak_gib=peak,
        extra_gib=None if peak is None else peak - before,
        estimate_s=estimate if not sizes.small else None,
        path=runner.path,
    )


def section_train_step(report: Report, device: torch.device, sizes: Sizes) -> None:
    b, length, resp = sizes.train_batch, sizes.train_length, sizes.train_response
    report.note(
        f"batch {b} x {length} tokens, last {resp} - 7b tokens of row b are the response (logits only there, "
        f"via logits_to_keep, as in training); fp32 weights, bf16 autocast (the Trainer's bf16), AdamW "
        f"lr 2e-5, grad-norm clip 1.0; median of {sizes.train_steps} steps after {sizes.train_warmup} "
        "warm-ups; tokens/s counts all batch tokens"
    )
    student = build_model(student_config(sizes), device)
    arch = "a tiny Llama (--small)" if sizes.small else "SmolLM2-135M architecture"
    report.note(f"student: {arch}, {n_params(student):.1f}M parameters, random weights")
    report.note(f"attention implementation: {getattr(student.config, '_attn_implementation', '?')}")
    keep_2d = check_logits_to_keep(report, student, sizes.student_vocab, device)
    student.train()
    side = make_side(b, length, resp, sizes.student_vocab, device)
    initial = {k: v.detach().clone() for k, v in student.state_dict().items()}

    sft = StepRunner(student, "none", device, keep_2d=keep_2d)
    report.note(f"loss path: {sft.path}")
    time_step(report, "student SFT (CE)", sft, side, None, device, sizes, EST_STUDENT_STEP_S)
    del sft
    free_memory(device)

    student.load_state_dict(initial)  # the same start for both variants
    del initial
    t_len = resp + resp // 8
    topk, t_mask = random_teacher_topk(b, t_len, sizes.teacher_vocab, 50, device)
    distill = StepRunner(student, "multilevel_ot", device, teacher_topk=topk, keep_2d=keep_2d)
    time_step(
        report,
        "student MultiLevelOT from cached teacher top-k",
        distill,
        side,
        t_mask,
        device,
        sizes,
        EST_STUDENT_STEP_S,
    )
    del distill, student, topk, side
    free_memory(device)

    teacher = build_model(teacher_config(sizes), device)
    arch = "a tiny Gemma-3 (--small)" if sizes.small else "Gemma-3-270M architecture"
    report.note(f"teacher: {arch}, {n_params(teacher):.1f}M parameters, random weights")
    teacher.train()
    t_side = make_side(b, length, resp, sizes.teacher_vocab, device)
    keep_2d = check_logits_to_keep(report, teacher, sizes.teacher_vocab, device)
    gemma = StepRunner(teacher, "none", device, keep_2d=keep_2d)
    time_step(
        report, "Gemma-3-270M SFT (CE, full fine-tune)", gemma, t_side, None, device, sizes, EST_GEMMA_STEP_S
    )
    del gemma, teacher, t_side
    free_memory(device)


# ---- section 4: generation ---------------------------------------------------------------------------


def section_generation(report: Report, device: torch.device, sizes: Sizes) -> None:
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = build_model(student_config(sizes), device).to(dtype).eval()
    tokenizer = student_tokenizer(sizes.student_vocab)
    rng = random.Random(0)
    lo, hi = sizes.gen_prompt_lengths
    prompts = [
        [rng.randrange(4, sizes.student_vocab) for _ in range(rng.randint(lo, hi))]
        for _ in range(sizes.gen_prompts)
    ]
    report.note(
        f"random SmolLM2-135M-architecture student in {str(dtype).removeprefix('torch.')}; {len(prompts)} "
        f"prompts of {lo}-{hi} random token ids; max_new_tokens {sizes.gen_new_tokens}; batch size 1 runs "
        f"every {sizes.gen_b1_every}th prompt ({len(prompts[:: sizes.gen_b1_every])} prompts); random "
        "weights rarely emit a stop token, so rows mostly run to max_new_tokens"
    )
    warm = greedy_generate(
        model, tokenizer, prompts[:2], max_new_tokens=4, batch_size=2, show_progress=False
    )  # CUDA/cuBLAS initialisation, untimed
    report.note(f"result type {type(warm).__name__}; continuous batching: {getattr(warm, 'continuous', '?')}")
    base_tps: float | None = None
    for batch_size in sizes.gen_batch_sizes:
        if report.over_budget(f"batch size {batch_size}"):
            break
        subset = prompts[:: sizes.gen_b1_every] if batch_size == 1 else prompts
        before = reset_peak(device)
        sync(device)
        t0 = time.perf_counter()
        gen = greedy_generate(
            model,
            tokenizer,
            subset,
            max_new_tokens=sizes.gen_new_tokens,
            batch_size=batch_size,
            show_progress=False,
        )
        sync(device)
        seconds = time.perf_counter() - t0
        peak = peak_gib(device)
        counts = getattr(gen, "num_tokens", None)
        tokens = sum(counts) if counts is not None else len(subset) * sizes.gen_new_tokens
        stopped = getattr(gen, "stopped", None)
        tps = tokens / seconds
        base_tps = tps if batch_size == 1 else base_tps
        speedup = tps / base_tps if base_tps else None
        prefill = getattr(gen, "prefill_seconds", None)
        report.row(
            f"batch {batch_size}: {tps:,.1f} generated tokens/s ({tokens} tokens from {len(subset)} prompts "
            f"in {seconds:.2f} s), speed-up vs batch 1 "
            f"{'n/a' if speedup is None else f'{speedup:.2f}x'}, peak {fmt_gib(peak)}",
            batch_size=batch_size,
            prompts=len(subset),
            generated_tokens=tokens,
            seconds=seconds,
            tokens_per_s=tps,
            speedup_vs_b1=speedup,
            prefill_s=prefill,
            stopped_rows=sum(stopped) if stopped is not None else None,
            continuous=getattr(gen, "continuous", None),
            peak_gib=peak,
            extra_gib=None if peak is None else peak - before,
        )
    del model
    free_memory(device)


# ---- main --------------------------------------------------------------------------------------------


def machine_meta(device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    import transformers

    meta: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.version.cuda,
        "device": str(device),
        "small": args.small,
        "torch_threads": torch.get_num_threads(),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        meta.update(
            device_name=props.name,
            device_memory_gib=round(props.total_memory / GIB, 1),
            capability=f"{props.major}.{props.minor}",
            bf16_supported=torch.cuda.is_bf16_supported(),
        )
    else:
        try:
            from machine import cpu_name  # benchmarks/machine.py

            meta["device_name"] = cpu_name()
        except ImportError:
            meta["device_name"] = platform.processor() or platform.machine()
    return meta


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(os.environ.get("OUT") or "runs/gpu_check"),
        help="output folder for gpu_check.json and gpu_check.md (default: $OUT, else runs/gpu_check)",
    )
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--small", action="store_true", help="tiny sizes (a CPU smoke test of the script)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=330.0,
        help="soft time budget in seconds (default 330): once spent, the remaining sections, loss cases "
        "and generation batch sizes are skipped (reported, not failed); the work in progress finishes",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            "gpu_check: CUDA is not available in this torch build/machine; "
            "use --device cpu --small for a CPU smoke test",
            file=sys.stderr,
        )
        return 2
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    sizes = Sizes.small_sizes() if args.small else Sizes.full()
    report = Report(args.out, machine_meta(device, args))
    report.meta.update(budget_s=args.budget_s, imported_absent_on_device=[])
    print(
        f"gpu_check on {report.meta['device_name']} ({device}), torch {torch.__version__}, "
        f"transformers {report.meta['transformers']}, {'small' if sizes.small else 'full'} sizes; "
        f"writing {args.out}/gpu_check.json and .md",
        flush=True,
    )
    sections: dict[str, Callable[[Report, torch.device, Sizes], None]] = {
        "correctness": section_correctness,
        "loss_speed": section_loss_speed,
        "train_step": section_train_step,
        "generation": section_generation,
    }
    started = time.perf_counter()
    report.deadline = started + args.budget_s
    for name in SECTIONS:
        if name not in args.sections:
            continue
        result = report.start(name)
        if report.over_budget(f"section {name}"):
            result.status = "skipped (time budget)"
            report.write()
            continue
        t0 = time.perf_counter()
        try:
            sections[name](report, device, sizes)
            result.status = "ok"
        except Exception:  # noqa: BLE001 - report it and go on to the next section
            result.status = "failed"
            result.error = traceback.format_exc()
            traceback.print_exc()
            print(f"[{name}] FAILED (traceback above); continuing", flush=True)
        finally:
            result.seconds = time.perf_counter() - t0
            free_memory(device)
            blocked = sorted({m.split(".")[0] for m in sys.modules} & ABSENT_ON_DEVICE)
            report.meta.update(elapsed_s=time.perf_counter() - started, imported_absent_on_device=blocked)
            report.write()
        print(f"[{name}] {result.status} in {result.seconds:.1f} s", flush=True)

    failed = [s.name for s in report.sections.values() if s.status == "failed"]
    skipped = [s.name for s in report.sections.values() if s.status.startswith("skipped")]
    print(
        f"\ngpu_check done in {time.perf_counter() - started:.0f} s: "
        + ", ".join(f"{s.name} {s.status}" for s in report.sections.values())
        + "; modules absent on the device that got imported: "
        + f"{', '.join(report.meta['imported_absent_on_device']) or 'none'}"
        + f"; results in {args.out}",
        flush=True,
    )
    return 1 if failed else 3 if skipped else 0


if __name__ == "__main__":
    sys.exit(main())
