"""MultiLevelOT (Cui et al., AAAI 2025), exactly as `../shared/docs/multilevelot.md` fixes it.

Everything is vectorised over the batch and positions; the Python loops are over Sinkhorn iterations and over
memory blocks of rows in `streamed.py`. Memory: neither side materialises a full-vocabulary softmax; the
teacher side runs without autograd (it is a constant of the student's loss), and the student's backward
writes only the one (B, L, V) gradient it returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from otdistill.losses.inputs import (
    TeacherSide,
    WeightedParts,
    align,
    check_logits,
    check_mask,
    check_pair,
    compute_dtype,
    masked_position_mean,
)
from otdistill.losses.sinkhorn import sinkhorn_plan
from otdistill.losses.streamed import GatheredLogProbs, softmax_stats


@dataclass(frozen=True)
class TeacherTopK:
    """What MultiLevelOT needs from the teacher, exactly: the teacher cache stores this per example.

    indices: (B, k) the per-sequence top-k vocabulary ids (ranked by the sum over valid positions of
    softmax at `temperature`); probs: (B, Lt, k) softmax at `temperature` gathered there; probs_sd:
    (B, Lt, k) softmax at `sinkhorn_temperature` gathered there. Only the values matter to the loss (HAD, SL
    and SD compare rank j of one model with rank j of the other): that is what makes it tokenizer-agnostic.
    """

    indices: Tensor
    probs: Tensor
    probs_sd: Tensor
    vocab_size: int
    temperature: float
    sinkhorn_temperature: float

    @property
    def k(self) -> int:
        return int(self.probs.shape[-1])


@dataclass(frozen=True)
class MultiLevelOTOutput:
    """loss = alpha * (had + beta * sl + gamma * sd); had, sl, sd are the unweighted parts."""

    loss: Tensor
    had: Tensor
    sl: Tensor
    sd: Tensor


class MultiLevelOTLoss(nn.Module):
    """Token-level (HAD, SL) and sequence-level (Sinkhorn distance) optimal-transport distillation loss."""

    def __init__(
        self,
        top_k: int = 50,
        temperature: float = 1.0,
        sinkhorn_temperature: float = 2.0,
        sinkhorn_epsilon: float = 0.1,
        sinkhorn_iters: int = 20,
        alpha: float = 0.15,
        beta: float = 0.1,
        gamma: float = 0.1,
        detach_plan: bool = False,
    ) -> None:
        super().__init__()
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if temperature <= 0 or sinkhorn_temperature <= 0:
            raise ValueError("temperature and sinkhorn_temperature must be > 0")
        self.top_k = top_k
        self.temperature = temperature
        self.sinkhorn_temperature = sinkhorn_temperature
        self.sinkhorn_epsilon = sinkhorn_epsilon
        self.sinkhorn_iters = sinkhorn_iters
        self.alpha = alpha
        self.beta = beta
        self.gamma = gamma
        self.detach_plan = detach_plan

    @classmethod
    def from_train_config(cls, cfg: Any) -> MultiLevelOTLoss:
        """The loss of a `TrainConfig` (registry interface, `otdistill.losses.registry`)."""
        return cls(
            top_k=cfg.top_k,
            temperature=cfg.temperature,
            sinkhorn_temperature=cfg.sinkhorn_temperature,
            sinkhorn_epsilon=cfg.sinkhorn_epsilon,
            sinkhorn_iters=cfg.sinkhorn_iters,
            alpha=cfg.alpha,
            beta=cfg.beta,
            gamma=cfg.gamma,
            detach_plan=cfg.detach_sinkhorn_plan,
        )

    def weighted_parts(
        self, student_logits: Tensor, teacher: TeacherSide, student_mask: Tensor
    ) -> WeightedParts:
        """HAD, SL and SD with their weights alpha, alpha * beta, alpha * gamma (registry interface); from
        the cached top-k when the teacher side holds it, else from the live teacher's logits."""
        source = teacher.topk if teacher.topk is not None else teacher.logits
        if source is None:
            raise ValueError("MultiLevelOT needs teacher logits or a cached TeacherTopK")
        out = self(student_logits, source, student_mask, teacher.mask)
        w = self.weights()
        return {"had": (out.had, w["had"]), "sl": (out.sl, w["sl"]), "sd": (out.sd, w["sd"])}

    def weights(self) -> dict[str, float]:
        """Each part's weight in the objective (registry interface): alpha, alpha * beta, alpha * gamma."""
        a = self.alpha
        return {"had": a, "sl": a * self.beta, "sd": a * self.gamma}

    @torch.no_grad()
    def teacher_topk(self, teacher_logits: Tensor, teacher_mask: Tensor, k: int | None = None) -> TeacherTopK:
        """The teacher's side of the loss (steps 1-2 and T2 of step 4), exact, without gradient.

        `k` defaults to `top_k`; a cache may store more (the loss uses the leading columns, which are the
        top-k for any smaller k because the ranking is sorted).
        """
        check_logits("teacher_logits", teacher_logits)
        batch, length, vocab = teacher_logits.shape
        mask = check_mask("teacher_mask", teacher_mask.to(teacher_logits.device), batch, length)
        k = min(k or self.top_k, vocab)
        dtype = compute_dtype(teacher_logits)
        lse, lse_sd, sums = softmax_stats(
            teacher_logits, mask, self.temperature, self.sinkhorn_temperature, dtype
        )
        indices = torch.topk(sums, k, dim=-1, sorted=True).indices
        log_p, log_p_sd = GatheredLogProbs.apply(
            teacher_logits, indices, lse, lse_sd, self.temperature, self.sinkhorn_temperature
        )
        gathered, sd = log_p.exp(), log_p_sd.exp()
        return TeacherTopK(indices, gathered, sd, vocab, self.temperature, self.sinkhorn_temperature)

    def forward(
        self,
        student_logits: Tensor,
        teacher: Tensor | TeacherTopK,
        student_mask: Tensor,
        teacher_mask: Tensor,
    ) -> MultiLevelOTOutput:
        """`teacher` is the teacher's response logits (B, Lt, Vt) or its cached `TeacherTopK`."""
        if isinstance(teacher, TeacherTopK):
            t_batch, t_len = teacher.probs.shape[:2]
        else:
            check_logits("teacher_logits", teacher)
            t_batch, t_len = teacher.shape[:2]
        s_mask, t_mask = check_pair(student_logits, t_len, t_batch, student_mask, teacher_mask)
        vocab_s = student_logits.shape[-1]
        if isinstance(teacher, TeacherTopK):
            topk = self._check_cached(teacher, vocab_s)
        else:
            topk = self.teacher_topk(teacher, t_mask, k=min(self.top_k, vocab_s))
        k = min(self.top_k, vocab_s, topk.vocab_size)
        dtype = compute_dtype(student_logits)
        t_probs = topk.probs[..., :k].to(device=student_logits.device, dtype=dtype)
        t_probs_sd = topk.probs_sd[..., :k].to(device=student_logits.device, dtype=dtype)

        # Step 1-2, student side: ranking without gradient, log-probabilities gathered with gradient.
        lse, lse_sd, sums = softmax_stats(
            student_logits, s_mask, self.temperature, self.sinkhorn_temperature, dtype
        )
        s_indices = torch.topk(sums, k, dim=-1, sorted=True).indices
        log_s, log_s_sd = GatheredLogProbs.apply(
            student_logits, s_indices, lse, lse_sd, self.temperature, self.sinkhorn_temperature
        )
        s_probs = log_s.exp()

        # Step 3: token level over aligned positions.
        alignment = align(s_mask, t_mask)
        length = alignment.aligned.shape[1]
        t_aligned, s_aligned = t_probs[:, :length], s_probs[:, :length]
        had = masked_position_mean((t_aligned - s_aligned).abs().sum(-1), alignment)
        sl = masked_position_mean(-(t_aligned * log_s[:, :length]).sum(-1), alignment)

        # Step 4: sequence level, Sinkhorn distance between all valid positions of each side.
        s_probs_sd = log_s_sd.exp()
        cost = torch.cdist(t_probs_sd, s_probs_sd, p=1.0)  # (B, Lt, Ls): L1 between rank-aligned top-k rows
        plan = sinkhorn_plan(
            cost, t_mask, s_mask, self.sinkhorn_epsilon, self.sinkhorn_iters, self.detach_plan
        )
        sd_per_sample = (plan * cost).sum(dim=(1, 2))
        contributes = alignment.contributes.to(dtype)
        sd = (sd_per_sample * contributes).sum() / contributes.sum().clamp(min=1)

        w = self.weights()
        loss = w["had"] * had + w["sl"] * sl + w["sd"] * sd
        return MultiLevelOTOutput(loss=loss, had=had, sl=sl, sd=sd)

    def _check_cached(self, topk: TeacherTopK, vocab_s: int) -> TeacherTopK:
        if (topk.temperature, topk.sinkhorn_temperature) != (self.temperature, self.sinkhorn_temperature):
            raise ValueError(
                "cached teacher top-k was computed at temperatures "
                f"({topk.temperature}, {topk.sinkhorn_temperature}), "
                f"the loss uses ({self.temperature}, {self.sinkhorn_temperature})"
            )
        needed = min(self.top_k, vocab_s, topk.vocab_size)
        if topk.k < needed:
            raise ValueError(f"cached teacher top-k holds k={topk.k} columns, the loss needs {needed}")
        return topk
