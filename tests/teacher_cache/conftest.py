"""Fixtures for the teacher-cache tests: the tiny pair loaded through otdistill.models, real task rows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from otdistill.data import DataConfig, PairedBatch, PairedCollator, PairedFeature, load_paired
from otdistill.models import ModelSpec, ResolvedModel, load_model, load_tokenizer, resolve_model
from tests.models.s3_server import s3_credentials, s3_endpoint, s3_env

__all__ = ["s3_credentials", "s3_endpoint", "s3_env"]

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


@dataclass
class TinySetup:
    teacher: torch.nn.Module
    student: torch.nn.Module
    teacher_resolved: ResolvedModel
    features: list[PairedFeature]
    collator: PairedCollator
    teacher_tokenizer: Any
    student_tokenizer: Any
    data_config: DataConfig
    data_sha256: str  # DataReport.content_sha256 of the tokenised split

    @property
    def teacher_vocab_size(self) -> int:
        """The teacher config's vocabulary size (typed: nn.Module's attribute access is not)."""
        model: Any = self.teacher
        return int(model.config.vocab_size)

    def batches(self, size: int) -> list[PairedBatch]:
        return [self.collator(self.features[i : i + size]) for i in range(0, len(self.features), size)]


@pytest.fixture(scope="session")
def tiny_setup(tiny_pair: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> TinySetup:
    """11 real DialogSum validation rows tokenised for the tiny teacher and student, both models loaded."""
    cache = tmp_path_factory.mktemp("model-cache")
    t_res = resolve_model(ModelSpec(source=str(tiny_pair[0])), cache_dir=cache)
    s_res = resolve_model(ModelSpec(source=str(tiny_pair[1])), cache_dir=cache)
    t_tok: Any = load_tokenizer(t_res)
    s_tok: Any = load_tokenizer(s_res)
    config = DataConfig(
        task="dialogsum", source=str(SHARED_DATA / "dialogsum"), split="validation", limit=11, max_length=192
    )
    split = load_paired(config, t_tok, s_tok, progress=False)
    assert len(split.features) == 11
    return TinySetup(
        teacher=load_model(t_res).eval(),
        student=load_model(s_res).eval(),
        teacher_resolved=t_res,
        features=split.features,
        collator=PairedCollator.from_tokenizers(t_tok, s_tok),
        teacher_tokenizer=t_tok,
        student_tokenizer=s_tok,
        data_config=config,
        data_sha256=split.report.content_sha256,
    )
