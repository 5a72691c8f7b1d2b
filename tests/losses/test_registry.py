"""The loss registry: the config validates against it, the objective builds only the chosen loss from it,
the teacher cache is used only by a loss that can read it, and a new loss is one class plus its
registration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from otdistill.config import ConfigError, RunConfig
from otdistill.losses import MultiLevelOTLoss, ULDLoss, registry, teacher_sorted_probs
from otdistill.losses.inputs import TeacherSide, WeightedParts
from otdistill.losses.registry import LossPart, LossSpec, get_loss, loss_names, register_loss
from otdistill.training import DistillationObjective, TrainConfig
from otdistill.training.objective import TeacherOutputs, combine, local_counts
from tests.losses.random_inputs import random_pair


@dataclass
class _Side:
    """The student side the objective reads: response mask, positions and the ids they predict."""

    response_mask: Tensor
    response_positions: Tensor
    input_ids: Tensor


def _inputs(same_vocab: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor, _Side]:
    vt = 40 if same_vocab else 55
    s, t, s_mask, t_mask = random_pair(0, [5, 3, 6], [6, 2, 4], 6, 6 if same_vocab else 7, 40, vt)
    b, r = s_mask.shape
    ids = torch.randint(0, 40, (b, r + 1), generator=torch.Generator().manual_seed(2))
    return s, t, s_mask, t_mask, _Side(s_mask, torch.arange(r).expand(b, r), ids)


def test_unknown_loss_is_refused_by_config_validation_naming_the_field_and_the_names() -> None:
    with pytest.raises(
        ConfigError, match=r"distill: TrainConfig\.loss must be one of kl, multilevel_ot, none, uld"
    ):
        RunConfig.from_dict({"distill": {"loss": "multilevel-ot"}})
    with pytest.raises(ValueError, match=r"distill\.loss must be one of .*; got 'mlot'"):
        get_loss("mlot", field="distill.loss")


@pytest.mark.parametrize("name", loss_names())
def test_each_registered_loss_builds_alone_and_logs_its_declared_parts(name: str) -> None:
    spec = get_loss(name)
    objective = DistillationObjective(TrainConfig(loss=name))
    assert objective.part_names == ("ce", *(p.name for p in spec.parts))
    if not spec.needs_teacher:
        assert objective.loss is None
    else:
        assert type(objective.loss) is spec.load()  # only the chosen loss is built
    s, t, s_mask, t_mask, side = _inputs(same_vocab=not spec.cross_tokenizer)
    teacher = TeacherOutputs(mask=t_mask, logits=t) if spec.needs_teacher else None
    terms = objective.terms(s, side, teacher)  # type: ignore[arg-type]
    assert [(term.name, term.count) for term in terms] == [
        ("ce", "tokens"),
        *((p.name, p.count) for p in spec.parts),
    ]
    assert all(torch.isfinite(term.value) for term in terms)


def test_the_cache_is_read_only_by_a_loss_that_can() -> None:
    assert {n for n in loss_names() if get_loss(n).reads_cache} == {"multilevel_ot", "uld"}
    with pytest.raises(ValueError, match="loss 'kl' needs the teacher's full distribution"):
        TrainConfig(loss="kl", teacher_source="cache", teacher_cache_uri="/cache")
    with pytest.raises(ValueError, match="teacher_cache_uri is not set"):
        TrainConfig(loss="uld", teacher_source="cache")
    TrainConfig(loss="none", teacher_source="cache")  # no teacher at all: nothing to read
    # each cache-reading loss takes what the cache holds for it, and gives its live value from it
    s, t, s_mask, t_mask, side = _inputs()
    uld = DistillationObjective(TrainConfig(loss="uld", uld_weight=1.0))
    cached = TeacherOutputs(mask=t_mask, sorted_probs=teacher_sorted_probs(t))
    live = TeacherOutputs(mask=t_mask, logits=t)
    torch.testing.assert_close(
        uld.terms(s, side, cached)[1].value,  # type: ignore[arg-type]
        uld.terms(s, side, live)[1].value,  # type: ignore[arg-type]
    )
    mlot = DistillationObjective(TrainConfig(loss="multilevel_ot"))
    topk = TeacherOutputs(mask=t_mask, topk=MultiLevelOTLoss().teacher_topk(t, t_mask))
    for a, b in zip(mlot.terms(s, side, topk), mlot.terms(s, side, live), strict=True):  # type: ignore[arg-type]
        torch.testing.assert_close(a.value, b.value)
    # a loss that cannot read the cache refuses a cache-only teacher side by name
    kl_s, kl_t, kl_s_mask, kl_t_mask, kl_side = _inputs(same_vocab=True)
    kl = DistillationObjective(TrainConfig(loss="kl"))
    with pytest.raises(ValueError, match="forward KL needs the live teacher's full logits"):
        kl.terms(kl_s, kl_side, TeacherOutputs(mask=kl_t_mask, topk=topk.topk))  # type: ignore[arg-type]


class HalfL1Loss(nn.Module):
    """A loss added the way the registry's doc says: this class plus one `register_loss` (test only)."""

    def __init__(self, weight: float) -> None:
        super().__init__()
        self.weight = weight

    @classmethod
    def from_train_config(cls, cfg: Any) -> HalfL1Loss:
        return cls(cfg.uld_weight / 2)

    def weighted_parts(
        self, student_logits: Tensor, teacher: TeacherSide, student_mask: Tensor
    ) -> WeightedParts:
        uld = ULDLoss(weight=1.0)(student_logits, teacher.logits, student_mask, teacher.mask)  # type: ignore[arg-type]
        return {"half": (uld.uld, self.weight)}


def test_a_new_loss_is_one_class_plus_its_registration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_LOSSES", dict(registry._LOSSES))  # the registration ends with the test
    register_loss(LossSpec("half_l1", f"{__name__}:HalfL1Loss", (LossPart("half", "HALF", "aligned"),)))
    with pytest.raises(ValueError, match="'half_l1' is already registered"):
        register_loss(LossSpec("half_l1", f"{__name__}:HalfL1Loss"))
    cfg = RunConfig.from_dict({"distill": {"loss": "half_l1", "uld_weight": 0.4}}).distill
    objective = DistillationObjective(cfg)
    assert isinstance(objective.loss, HalfL1Loss) and objective.loss.weight == pytest.approx(0.2)
    s, t, s_mask, t_mask, side = _inputs()
    terms = objective.terms(s, side, TeacherOutputs(mask=t_mask, logits=t))  # type: ignore[arg-type]
    assert [term.name for term in terms] == ["ce", "half"] and terms[1].weight == pytest.approx(0.2)
    counts = local_counts(s_mask, t_mask)
    assert torch.isfinite(combine(terms, counts, counts))
    assert registry.part_labels()["half"] == "HALF"
