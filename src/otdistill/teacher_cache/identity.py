"""What ties a teacher cache to one run's data and tokenisation, so a stale cache is refused, not trained on.

A cache holds, per example id, the teacher's probabilities at that example's teacher-side response
positions. It is only right for a run that (a) uses the same examples (the `DataReport.content_sha256` of
the tokenised split: same rows, same texts, same order), (b) tokenises them with the same teacher tokenizer
(the positions and vocabulary ids the probabilities refer to), and (c) with the same student tokenizer: the
student decides how a too-long context is cut for both models (`otdistill.data`), so another student
tokenizer can change the teacher's tokens of an example. Per-example length checks in
`TeacherCache.for_batch` catch some of this, but not a changed vocabulary with equal lengths, nor another
text of equal token count; these identities catch all of it before training starts.

A tokenizer's identity is a sha256 over what decides its token ids: the backend's full serialisation
(vocabulary, merges, normalizer, pre-tokenizer, post-processor, added tokens) for fast tokenizers, else the
vocabulary and added tokens; the special-tokens map; the chat template (prompts are built with it). The
backend's truncation and padding state is left out: transformers changes it on every call that truncates
or pads, and it does not change what a text maps to in this pipeline (otdistill.data cuts texts itself).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

TOKENIZER_HASH_FORMAT = "otdistill-tokenizer-v1"


def tokenizer_sha256(tokenizer: Any) -> str:
    """sha256 hex digest identifying how `tokenizer` maps text to ids (see the module doc for what counts).

    Deterministic across loads of the same files and independent of calls made with the tokenizer; one
    added special token, a changed merge or another chat template gives another digest.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    parts: dict[str, Any] = {"format": TOKENIZER_HASH_FORMAT}
    if backend is not None:
        serialised = json.loads(backend.to_str())
        serialised.pop("truncation", None)
        serialised.pop("padding", None)
        parts["backend"] = serialised
    else:
        parts["vocab"] = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    parts["added_tokens"] = sorted(
        (int(i), str(t), bool(getattr(t, "special", False)))
        for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items()
    )
    parts["special_tokens"] = {str(k): v for k, v in sorted(tokenizer.special_tokens_map.items())}
    parts["special_ids"] = sorted(int(i) for i in tokenizer.all_special_ids)
    parts["chat_template"] = getattr(tokenizer, "chat_template", None)
    text = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CacheIdentity:
    """The data and tokenizers a cache was built from (or a run uses); "" where it is not known.

    data_sha256: `DataReport.content_sha256` of the tokenised training split; teacher_tokenizer_sha256 /
    student_tokenizer_sha256: `tokenizer_sha256` of each model's tokenizer.
    """

    data_sha256: str = ""
    teacher_tokenizer_sha256: str = ""
    student_tokenizer_sha256: str = ""

    @classmethod
    def of(cls, data_sha256: str | None, teacher_tokenizer: Any, student_tokenizer: Any) -> CacheIdentity:
        """The identity of a run: its split's content hash and both tokenizers' digests."""
        return cls(
            data_sha256=data_sha256 or "",
            teacher_tokenizer_sha256=tokenizer_sha256(teacher_tokenizer),
            student_tokenizer_sha256=tokenizer_sha256(student_tokenizer),
        )
