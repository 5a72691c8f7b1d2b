"""The loss registry: a distillation loss's name -> its class, its logged parts, what it reads from a teacher.

Every place that depends on which loss a run uses asks this registry instead of matching on names: the
config validates `loss` against it (`TrainConfig.validate`), the objective builds only the chosen loss
(`otdistill.training.objective`), the trainer logs its parts under their labels, the distillation step
reads the teacher cache only for a loss that can, and training refuses a same-tokenizer loss on two
tokenizers. Adding a loss is one class plus one `register_loss` line here.

The class (an `nn.Module` in this package) provides

* ``from_train_config(cfg)``: the instance for a `TrainConfig` (its own fields: weights, temperatures);
* ``weighted_parts(student_logits, teacher, student_mask)``: ``{part name: (unweighted mean, weight)}``
  for the parts declared here; `teacher` carries ``mask`` and, as the loss declares, the live teacher's
  ``logits`` or what the cache holds (``topk`` / ``sorted_probs``);
* ``weights()``: ``{part name: weight in the objective}``, the weights `weighted_parts` applies (what
  the training result records, so a report can say how much of the objective each part is).

This module imports no torch (the class is imported by `LossSpec.load` when a loss is built), so that
loading and validating a config stays light.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Literal

Count = Literal["tokens", "aligned", "sequences"]
CacheContent = Literal["topk", "sorted_probs"]


@dataclass(frozen=True)
class LossPart:
    """One logged part of a loss: its key in the objective, its label in the logs, what it averages over
    (`aligned` positions or contributing `sequences`: how the objective re-weights it over a batch)."""

    name: str
    label: str
    count: Count


@dataclass(frozen=True)
class LossSpec:
    """A registered loss.

    target: ``"module:Class"``, imported only when the loss is built; None for "none" (no distillation
      term: the SFT baseline, student cross-entropy alone).
    cache: what the loss can read from the teacher cache (`otdistill.teacher_cache`) instead of running
      the teacher: its top-k (MultiLevelOT) or sorted probabilities (ULD); None: it needs the live
      teacher's full distribution.
    cross_tokenizer: whether teacher and student may use different tokenizers.
    """

    name: str
    target: str | None
    parts: tuple[LossPart, ...] = ()
    cache: CacheContent | None = None
    cross_tokenizer: bool = True

    @property
    def needs_teacher(self) -> bool:
        return self.target is not None

    @property
    def reads_cache(self) -> bool:
        return self.cache is not None

    @property
    def needs_teacher_model(self) -> bool:
        """Whether distillation needs the teacher's weights (the live teacher). A loss that reads the cache
        needs only what the cache artifact carries of the teacher (tokenizer, record): the pipeline then
        gives the distillation step no teacher Model artifact to download."""
        return self.needs_teacher and not self.reads_cache

    def load(self) -> Any:
        """The loss class (imports its module: torch): it has `from_train_config` and `weighted_parts`."""
        if self.target is None:
            raise ValueError(f"loss {self.name!r} has no distillation term to build")
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)


_LOSSES: dict[str, LossSpec] = {}


def register_loss(spec: LossSpec) -> LossSpec:
    """Add `spec` under its name; a name registered twice is an error (two losses, one name)."""
    if spec.name in _LOSSES:
        raise ValueError(f"loss {spec.name!r} is already registered ({_LOSSES[spec.name].target})")
    if spec.target is not None and ":" not in spec.target:
        raise ValueError(f"loss {spec.name!r}: target must be 'module:Class', got {spec.target!r}")
    _LOSSES[spec.name] = spec
    return spec


def loss_names() -> tuple[str, ...]:
    """Every registered loss name, sorted."""
    return tuple(sorted(_LOSSES))


def get_loss(name: str, *, field: str = "loss") -> LossSpec:
    """The registered loss `name`; an unknown name is a ValueError naming `field` and the allowed names."""
    try:
        return _LOSSES[name]
    except (KeyError, TypeError):
        raise ValueError(f"{field} must be one of {', '.join(loss_names())}; got {name!r}") from None


def part_labels() -> dict[str, str]:
    """Log label of every part of every registered loss, and of the cross-entropy (``ce``)."""
    labels = {"ce": "CE"}
    for spec in _LOSSES.values():
        labels.update({part.name: part.label for part in spec.parts})
    return labels


register_loss(LossSpec("none", None))
register_loss(
    LossSpec(
        "multilevel_ot",
        "otdistill.losses.multilevel_ot:MultiLevelOTLoss",
        (
            LossPart("had", "HAD", "aligned"),
            LossPart("sl", "SL", "aligned"),
            LossPart("sd", "SD", "sequences"),
        ),
        cache="topk",
    )
)
register_loss(
    LossSpec(
        "uld", "otdistill.losses.uld:ULDLoss", (LossPart("uld", "ULD", "aligned"),), cache="sorted_probs"
    )
)
register_loss(
    LossSpec(
        "kl", "otdistill.losses.kl:ForwardKLLoss", (LossPart("kl", "KL", "aligned"),), cross_tokenizer=False
    )
)
