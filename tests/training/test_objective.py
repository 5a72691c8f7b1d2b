"""The loss plug-in: CE + distillation terms, and the step-global normalisation DDP/accumulation rely on."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from otdistill.data import PairedCollator, PairEncoder
from otdistill.losses import MultiLevelOTLoss, ULDLoss
from otdistill.training import DistillationObjective, TrainConfig
from otdistill.training.objective import TeacherOutputs, combine, local_counts, response_cross_entropy


def _batch(tiny_pair: tuple[Path, Path], examples: list, n: int = 4):  # type: ignore[no-untyped-def]
    t_dir, s_dir = tiny_pair
    t_tok, s_tok = AutoTokenizer.from_pretrained(t_dir), AutoTokenizer.from_pretrained(s_dir)
    enc = PairEncoder(t_tok, s_tok, max_length=160)
    features = [enc.encode(ex, i) for i, ex in enumerate(examples[:n])]
    return PairedCollator.from_tokenizers(t_tok, s_tok)(features)


def test_response_cross_entropy_matches_the_models_own_loss(
    tiny_pair: tuple[Path, Path], examples: list
) -> None:
    """CE on gathered response logits == the HF model's shifted-label loss on the same labels."""
    batch = _batch(tiny_pair, examples)
    model = AutoModelForCausalLM.from_pretrained(tiny_pair[1]).eval()
    side = batch.student
    with torch.no_grad():
        full = model(input_ids=side.input_ids, attention_mask=side.attention_mask, labels=side.labels)
        kept = model(
            input_ids=side.input_ids,
            attention_mask=side.attention_mask,
            logits_to_keep=side.response_positions,
        )
    torch.testing.assert_close(response_cross_entropy(kept.logits, side), full.loss, rtol=1e-5, atol=1e-5)


def _random_pair(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    B, Ls, Lt, Vs, Vt = 6, 9, 11, 70, 90
    s_logits = torch.randn(B, Ls, Vs, generator=g, dtype=torch.float64)
    t_logits = torch.randn(B, Lt, Vt, generator=g, dtype=torch.float64) * 2
    n_s = torch.tensor([9, 3, 5, 1, 7, 9])
    n_t = torch.tensor([11, 4, 2, 6, 11, 8])
    s_mask = torch.arange(Ls)[None] < n_s[:, None]
    t_mask = torch.arange(Lt)[None] < n_t[:, None]
    return s_logits, t_logits, s_mask, t_mask


class _Side:
    """A SideBatch stand-in for the distillation terms (they read only response_mask)."""

    def __init__(self, mask: torch.Tensor, vocab: int, rows: slice = slice(None)) -> None:
        B, R = mask.shape
        self.response_mask = mask
        self.response_positions = torch.arange(R).expand(B, R)
        ids = torch.randint(0, vocab, (64, R + 1), generator=torch.Generator().manual_seed(1))
        self.input_ids = ids[rows][:B]


@pytest.mark.parametrize("loss", ["multilevel_ot", "uld"])
def test_one_micro_batch_is_ce_plus_the_loss_modules_value(loss: str) -> None:
    s_logits, t_logits, s_mask, t_mask = _random_pair()
    cfg = TrainConfig(loss=loss)  # type: ignore[arg-type]
    objective = DistillationObjective(cfg)
    side = _Side(s_mask, s_logits.shape[-1])
    terms = objective.terms(s_logits, side, TeacherOutputs(mask=t_mask, logits=t_logits))  # type: ignore[arg-type]
    counts = local_counts(s_mask, t_mask)
    total = combine(terms, counts, counts)
    ce = response_cross_entropy(s_logits, side)  # type: ignore[arg-type]
    if loss == "multilevel_ot":
        expected = MultiLevelOTLoss()(s_logits, t_logits, s_mask, t_mask).loss
    else:
        expected = ULDLoss()(s_logits, t_logits, s_mask, t_mask).loss
    torch.testing.assert_close(total, ce + expected)
    assert [t.name for t in terms] == list(objective.part_names)
    # the weights the result records are the ones the terms carry
    assert objective.weights() == {t.name: t.weight for t in terms}


def test_split_batch_gradients_equal_the_full_batch() -> None:
    """Two micro-batches (or two ranks) normalised by the step's counts give the full batch's gradient."""
    s_logits, t_logits, s_mask, t_mask = _random_pair(3)
    objective = DistillationObjective(TrainConfig())
    vocab = s_logits.shape[-1]

    def grad_of(parts: list[slice]) -> torch.Tensor:
        leaf = s_logits.clone().requires_grad_(True)
        counts = [local_counts(s_mask[p], t_mask[p]) for p in parts]
        total = {k: sum(c[k] for c in counts) for k in counts[0]}
        for p, local in zip(parts, counts, strict=True):
            side = _Side(s_mask[p], vocab, p)
            teacher = TeacherOutputs(mask=t_mask[p], logits=t_logits[p])
            combine(objective.terms(leaf[p], side, teacher), local, total).backward()  # type: ignore[arg-type]
        assert leaf.grad is not None
        return leaf.grad

    full = grad_of([slice(0, 6)])
    split = grad_of([slice(0, 2), slice(2, 6)])
    naive_leaf = s_logits.clone().requires_grad_(True)
    for p in (slice(0, 2), slice(2, 6)):  # per-micro-batch means, averaged: NOT the full batch's loss
        local = local_counts(s_mask[p], t_mask[p])
        terms = objective.terms(
            naive_leaf[p], _Side(s_mask[p], vocab, p), TeacherOutputs(t_mask[p], t_logits[p])
        )
        (combine(terms, local, local) / 2).backward()
    torch.testing.assert_close(split, full, rtol=1e-9, atol=1e-12)
    assert not torch.allclose(naive_leaf.grad, full, rtol=1e-6, atol=1e-9)  # type: ignore[arg-type]


def test_kl_term_is_zero_for_identical_models() -> None:
    s_logits, _, s_mask, _ = _random_pair()
    objective = DistillationObjective(TrainConfig(loss="kl"))
    side = _Side(s_mask, s_logits.shape[-1])
    terms = objective.terms(s_logits, side, TeacherOutputs(mask=s_mask, logits=s_logits.clone()))  # type: ignore[arg-type]
    assert terms[1].name == "kl" and abs(float(terms[1].value)) < 1e-12


def test_missing_teacher_is_a_clear_error() -> None:
    s_logits, _, s_mask, _ = _random_pair()
    with pytest.raises(ValueError, match="needs the teacher's outputs"):
        DistillationObjective(TrainConfig()).terms(s_logits, _Side(s_mask, 70), None)  # type: ignore[arg-type]
