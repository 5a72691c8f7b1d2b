"""Forward+backward time and peak memory of the distillation losses at real vocabulary sizes.

Shapes: B in (2, 4), response lengths 64/128/256, Vs = 49,152 (SmolLM2) and Vt = 262,144 (Gemma-3),
2 threads. Rows: plain cross-entropy on the student logits (the reference cost), MultiLevelOTLoss with live
teacher logits, MultiLevelOTLoss from the cached teacher top-k (the training path with a teacher cache),
ULDLoss, and a per-sample, per-token loop implementation of the same MultiLevelOT math (the baseline the
vectorised loss must beat by 10x; it lives here, not in the library). Each (row, shape) runs in a fresh
process, so that the peak resident memory it reports belongs to that row alone (peak RSS minus the RSS once
the inputs exist).

Usage: python benchmarks/loss_speed.py [--repeats 5] [--markdown benchmarks/results/loss_speed.md]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from otdistill.losses import MultiLevelOTLoss, ULDLoss

VS, VT = 49_152, 262_144
ROWS = ("cross_entropy", "multilevel_ot", "multilevel_ot_cached", "uld", "multilevel_ot_loop")


def loop_multilevel_ot(
    s: torch.Tensor, t: torch.Tensor, ns: list[int], nt: list[int], k: int = 50
) -> torch.Tensor:
    """The same math as MultiLevelOTLoss (paper defaults), one sample and one token at a time."""
    had = s.new_zeros(())
    sl = s.new_zeros(())
    sds = []
    m_total = 0
    for b in range(s.shape[0]):
        t_probs = [torch.softmax(t[b, i], -1) for i in range(nt[b])]
        s_logp = [torch.log_softmax(s[b, i], -1) for i in range(ns[b])]
        t_rank = torch.zeros(t.shape[-1])
        for p in t_probs:
            t_rank = t_rank + p
        s_rank = torch.zeros(s.shape[-1])
        for lp in s_logp:
            s_rank = s_rank + lp.detach().exp()
        rt, rs = torch.topk(t_rank, k).indices, torch.topk(s_rank, k).indices
        for i in range(min(ns[b], nt[b])):
            t_top, s_log_top = t_probs[i][rt], s_logp[i][rs]
            had = had + (t_top - s_log_top.exp()).abs().sum()
            sl = sl - (t_top * s_log_top).sum()
        m_total += min(ns[b], nt[b])
        t2 = torch.stack([torch.softmax(t[b, i] / 2.0, -1)[rt] for i in range(nt[b])])
        s2 = torch.stack([torch.softmax(s[b, j] / 2.0, -1)[rs] for j in range(ns[b])])
        cost = torch.stack([(t2[i] - s2).abs().sum(-1) for i in range(nt[b])])
        kernel = torch.exp(-cost / 0.1)
        a, c = torch.full((nt[b],), 1.0 / nt[b]), torch.full((ns[b],), 1.0 / ns[b])
        v = torch.ones(ns[b])
        for _ in range(20):
            u = a / (kernel @ v)
            v = c / (kernel.T @ u)
        sds.append((u.unsqueeze(1) * kernel * v.unsqueeze(0) * cost).sum())
    sd = torch.stack(sds).mean()
    return 0.15 * (had / m_total + 0.1 * sl / m_total + 0.1 * sd)


@dataclass
class LossInputs:
    """Random logits and masks shaped like a distillation batch (what every loss row is timed on)."""

    student: torch.Tensor  # (B, L, Vs)
    teacher: torch.Tensor  # (B, L + L/8, Vt)
    s_mask: torch.Tensor
    t_mask: torch.Tensor
    labels: torch.Tensor  # cross-entropy targets, -100 where s_mask is False
    lengths_s: list[int]
    lengths_t: list[int]


def loss_inputs(
    batch: int,
    length: int,
    vs: int = VS,
    vt: int = VT,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> LossInputs:
    """Logits N(0, 3^2) from a generator seeded 0 on `device`; the teacher's tokenisation of the same response
    is a little longer (L + L/8); per-sample lengths staggered (student L - 7b, teacher Lt - 5b). Shared with
    gpu_check.py, which times the same rows on a GPU."""
    gen = torch.Generator(device=device).manual_seed(0)
    t_len = length + length // 8
    # in place (and .to is a no-op for float32), so that making the inputs does not raise the peak RSS the
    # rows are measured against
    student = torch.randn(batch, length, vs, generator=gen, device=device).mul_(3).to(dtype)
    teacher = torch.randn(batch, t_len, vt, generator=gen, device=device).mul_(3).to(dtype)
    lengths_s = [length - 7 * b for b in range(batch)]
    lengths_t = [t_len - 5 * b for b in range(batch)]
    s_mask = torch.arange(length, device=device) < torch.tensor(lengths_s, device=device).unsqueeze(1)
    t_mask = torch.arange(t_len, device=device) < torch.tensor(lengths_t, device=device).unsqueeze(1)
    labels = torch.randint(0, vs, (batch, length), generator=gen, device=device).masked_fill(~s_mask, -100)
    return LossInputs(student, teacher, s_mask, t_mask, labels, lengths_s, lengths_t)


def _measure(row: str, batch: int, length: int, repeats: int, threads: int, queue: mp.Queue) -> None:
    torch.set_num_threads(threads)
    inputs = loss_inputs(batch, length)
    student, teacher, s_mask, t_mask = inputs.student, inputs.teacher, inputs.s_mask, inputs.t_mask
    labels, lengths_s, lengths_t = inputs.labels, inputs.lengths_s, inputs.lengths_t
    mlot, uld = MultiLevelOTLoss(), ULDLoss()
    cached = mlot.teacher_topk(teacher, t_mask) if row == "multilevel_ot_cached" else None
    fns: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "cross_entropy": lambda x: F.cross_entropy(x.reshape(-1, VS), labels.reshape(-1), ignore_index=-100),
        "multilevel_ot": lambda x: mlot(x, teacher, s_mask, t_mask).loss,
        "multilevel_ot_cached": lambda x: mlot(x, cached, s_mask, t_mask).loss,  # type: ignore[arg-type]
        "uld": lambda x: uld(x, teacher, s_mask, t_mask).loss,
        "multilevel_ot_loop": lambda x: loop_multilevel_ot(x, teacher, lengths_s, lengths_t),
    }
    fn = fns[row]
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(repeats):
        x = student.clone().requires_grad_(True)
        start = time.perf_counter()
        fn(x).backward()
        times.append(time.perf_counter() - start)
        del x
    peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    queue.put((statistics.median(times), peak_mib))


def measure(row: str, batch: int, length: int, repeats: int, threads: int) -> tuple[float, float]:
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(row, batch, length, repeats, threads, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--loop-repeats", type=int, default=1, help="the loop baseline is slow: fewer runs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args()

    header = (
        "| B | L | row | fwd+bwd median (s) | x cross-entropy | peak extra RSS (MiB) |\n"
        "|---|---|---|---|---|---|"
    )
    lines = [header]
    print(header, flush=True)
    for batch in args.batches:
        for length in args.lengths:
            ce_time = 0.0
            for row in ROWS:
                repeats = args.loop_repeats if row.endswith("_loop") else args.repeats
                seconds, peak = measure(row, batch, length, repeats, args.threads)
                ce_time = seconds if row == "cross_entropy" else ce_time
                line = (
                    f"| {batch} | {length} | {row} | {seconds:.3f} | {seconds / ce_time:.2f} | {peak:.0f} |"
                )
                lines.append(line)
                print(line, flush=True)
    machine = (
        f"{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}, "
        f"median of {args.repeats} runs ({args.loop_repeats} for the loop baseline), Vs={VS}, Vt={VT}, "
        "teacher length = L + L/8, per-sample lengths staggered"
    )
    print(machine)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text("\n".join(lines) + f"\n\n{machine}\n", encoding="utf-8")


if __name__ == "__main__":
    main()
