"""Collation (each side padded with its own pad id) and the gather of response-position logits, checked
against the tiny models themselves: Hugging Face's own label-shifted loss must equal cross-entropy on the
gathered logits, which holds only if positions, labels and masks line up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from otdistill.data import (
    IGNORE_INDEX,
    DataConfig,
    PairedBatch,
    PairedCollator,
    SideBatch,
    collate_side,
    load_paired,
    pad_id_of,
    response_logits,
)
from otdistill.data.tokenization import SideFeature


@pytest.fixture(scope="module")
def paired(tiny_tokenizers: tuple[Any, Any], shared_data: Path) -> Any:
    teacher, student = tiny_tokenizers
    cfg = DataConfig(task="fairytaleqa", source=str(shared_data / "fairytaleqa"), split="validation", limit=6)
    return load_paired(cfg, teacher, student, progress=False)


@pytest.fixture(scope="module")
def batch(paired: Any, tiny_tokenizers: tuple[Any, Any]) -> PairedBatch:
    return PairedCollator.from_tokenizers(*tiny_tokenizers)(paired.features)


def test_each_side_is_right_padded_with_its_own_pad_id(
    paired: Any, batch: PairedBatch, tiny_tokenizers: tuple[Any, Any]
) -> None:
    assert batch.example_ids == [ex.id for ex in paired.examples] and len(batch) == 6
    for side, feats, tok in (
        (batch.teacher, [f.teacher for f in paired.features], tiny_tokenizers[0]),
        (batch.student, [f.student for f in paired.features], tiny_tokenizers[1]),
    ):
        B, L = side.input_ids.shape
        assert max(len(f.input_ids) for f in feats) == L
        assert (
            side.response_positions.shape == side.response_mask.shape == (B, max(f.n_response for f in feats))
        )
        assert side.input_ids.dtype == side.attention_mask.dtype == side.labels.dtype == torch.long
        assert side.response_positions.dtype == torch.long and side.response_mask.dtype == torch.bool
        for b, f in enumerate(feats):
            n = len(f.input_ids)
            assert side.input_ids[b, :n].tolist() == f.input_ids
            assert (side.input_ids[b, n:] == tok.pad_token_id).all()
            assert side.attention_mask[b].tolist() == [1] * n + [0] * (L - n)
            # masks are prefixes of length n_response
            assert side.response_mask[b].tolist() == [True] * f.n_response + [False] * (
                side.response_mask.shape[1] - f.n_response
            )
            assert (side.response_positions[b, f.n_response :] == 0).all()
        assert torch.equal(side.response_lengths, torch.tensor([f.n_response for f in feats]))


def test_labels_align_with_response_positions(batch: PairedBatch) -> None:
    for side in (batch.teacher, batch.student):
        # the logit at response_positions[i] predicts input_ids[response_positions[i] + 1] == label there
        nxt = side.input_ids.gather(1, side.response_positions + 1)
        lab = side.labels.gather(1, side.response_positions + 1)
        assert torch.equal(nxt[side.response_mask], lab[side.response_mask])
        assert (side.labels != IGNORE_INDEX).sum() == side.response_mask.sum()


def test_response_logits_gathers_exactly_the_response_rows() -> None:
    torch.manual_seed(0)
    feats = [SideFeature([5, 6, 7, 8, 9], 3), SideFeature([1, 2, 3], 1), SideFeature([4, 4, 4, 4, 4, 4], 2)]
    side = collate_side(feats, pad_id=0)
    logits = torch.randn(3, 6, 11, requires_grad=True)
    out = response_logits(logits, side)
    assert out.shape == (3, 4, 11)
    for b, f in enumerate(feats):
        for i, p in enumerate(f.response_positions):
            assert torch.equal(out[b, i], logits[b, p])
    (out * side.response_mask.unsqueeze(-1)).sum().backward()
    assert logits.grad is not None
    touched = (logits.grad != 0).any(-1)
    expected = torch.zeros(3, 6, dtype=torch.bool)
    for b, f in enumerate(feats):
        expected[b, f.response_positions] = True
    assert torch.equal(touched, expected)
    with pytest.raises(ValueError, match="beyond the logits length"):
        response_logits(torch.randn(3, 4, 11), side)
    with pytest.raises(ValueError, match=r"expected logits \(B, L, V\)"):
        response_logits(torch.randn(3, 6), side)


def test_model_loss_equals_cross_entropy_on_gathered_logits(
    tiny_pair: tuple[Path, Path], batch: PairedBatch
) -> None:
    from transformers import AutoModelForCausalLM

    from otdistill.losses import MultiLevelOTLoss

    torch.manual_seed(0)
    logits_r = {}
    for name, model_dir, side in (
        ("teacher", tiny_pair[0], batch.teacher),
        ("student", tiny_pair[1], batch.student),
    ):
        model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        out = model(input_ids=side.input_ids, attention_mask=side.attention_mask, labels=side.labels)
        gathered = response_logits(out.logits, side)
        targets = side.input_ids.gather(1, side.response_positions + 1)
        ce = F.cross_entropy(gathered[side.response_mask].float(), targets[side.response_mask])
        torch.testing.assert_close(ce, out.loss, rtol=1e-5, atol=1e-5)
        logits_r[name] = gathered
    # the outputs feed MultiLevelOTLoss directly
    loss = MultiLevelOTLoss(top_k=8)(
        logits_r["student"], logits_r["teacher"], batch.student.response_mask, batch.teacher.response_mask
    )
    assert torch.isfinite(loss.loss) and loss.loss > 0


def test_to_moves_every_tensor_and_keeps_ids(batch: PairedBatch) -> None:
    moved = batch.to("cpu")
    assert moved.example_ids == batch.example_ids and moved.example_ids is not batch.example_ids
    for a, b in ((moved.teacher, batch.teacher), (moved.student, batch.student)):
        assert isinstance(a, SideBatch)
        for name in ("input_ids", "attention_mask", "labels", "response_positions", "response_mask"):
            assert torch.equal(getattr(a, name), getattr(b, name))
    if torch.cuda.is_available():  # pragma: no cover - no GPU on the CI machine
        assert batch.to("cuda").student.input_ids.is_cuda


def test_pad_falls_back_to_eos_and_bad_features_are_refused() -> None:
    class Tok:
        pad_token_id = None
        eos_token_id = 7

    assert pad_id_of(Tok()) == 7
    Tok.eos_token_id = None  # type: ignore[assignment]
    with pytest.raises(ValueError, match="neither pad_token_id nor eos_token_id"):
        pad_id_of(Tok())
    with pytest.raises(ValueError, match="empty batch"):
        collate_side([], 0)
    with pytest.raises(ValueError, match="row 1: a feature needs a non-empty prompt and response"):
        collate_side([SideFeature([1, 2], 1), SideFeature([1, 2], 0)], 0)
