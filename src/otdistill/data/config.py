"""`DataConfig`: everything that decides which rows a run uses and how they are cut; YAML-friendly fields."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

OnError = Literal["fail", "skip"]


def check_row_limit(name: str, limit: int | None) -> None:
    """The one rule for a row cap (`data.limit`, `validation.limit`, `eval.limit`): None for all rows, else
    a count >= 1, refused when the config is built so a bad cap never reaches a pipeline step.

    0 is refused too: a run on no rows is never meant, and the row-count pipeline parameters already use 0
    for "all rows" (KFP parameters cannot be null), so a 0 in the config would mean the opposite there.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"{name} must be a row count >= 1, or null for all rows; got {limit}")


@dataclass
class DataConfig:
    """Where the data comes from and how it is checked and tokenised.

    * `task`: a registered task name (`otdistill.data.list_tasks()`), or a new one defined by `task_spec`
      (a dict in the same form as a YAML task entry, registered when the data is loaded).
    * `source`: a local file (.jsonl / .json / .parquet), a local directory holding `{split}.jsonl` or
      `{split}.parquet`, `s3://bucket/key-or-prefix` (same layout), or a Hugging Face hub id.
    * `revision`: required for hub ids (a commit sha or tag), so a run is reproducible; ignored otherwise.
    * `split`: which split to read (file name stem for local/S3 directories, split name on the hub).
    * `limit`: read at most this many rows from the source (in source order), None for all.
    * `on_error`: "fail" stops at the first bad row (its index and field in the message); "skip" drops it
      and counts it by reason in the `DataReport`.
    * `max_length`: most tokens (prompt + response + end token) per model; contexts are cut to fit.
    * `max_prompt_tokens`: optional extra cap on prompt tokens per model.
    * `max_field_chars`: a text field longer than this is a bad row (reason `too_long`) before tokenising;
      at least 1 (0 or less would refuse every row).
    * `s3_endpoint_url`: for MinIO and other S3-compatible stores; default: `AWS_ENDPOINT_URL` or AWS.
    * `subset`: the hub data set's configuration name, for data sets that have several.
    """

    task: str = "dialogsum"
    source: str = "../shared/data/dialogsum"
    revision: str | None = None
    split: str = "train"
    limit: int | None = None
    on_error: OnError = "fail"
    max_length: int = 1024
    max_prompt_tokens: int | None = None
    max_field_chars: int = 200_000
    s3_endpoint_url: str | None = None
    subset: str | None = None
    task_spec: dict[str, Any] | None = field(default=None)

    def __post_init__(self) -> None:
        if self.on_error not in ("fail", "skip"):
            raise ValueError(f"DataConfig.on_error must be 'fail' or 'skip', got {self.on_error!r}")
        check_row_limit("DataConfig.limit", self.limit)
        if self.max_field_chars < 1:
            raise ValueError(f"DataConfig.max_field_chars must be >= 1, got {self.max_field_chars}")
        if self.max_length < 2:
            raise ValueError(f"DataConfig.max_length must be >= 2, got {self.max_length}")
        if self.max_prompt_tokens is not None and self.max_prompt_tokens < 1:
            raise ValueError(
                f"DataConfig.max_prompt_tokens must be >= 1 or None, got {self.max_prompt_tokens}"
            )
        if self.task_spec is not None and self.task_spec.get("name", self.task) != self.task:
            raise ValueError(
                f"DataConfig.task_spec defines task {self.task_spec.get('name')!r} but task is {self.task!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


TargetSource = Literal["gold", "teacher"]


@dataclass
class TargetsConfig:
    """What the students learn to answer: the gold responses, or the teacher's own answers (the authors'
    recipe).

    * `source`: "gold" (default) trains every student on the data set's responses; "teacher" first lets the
      teacher answer every training row (greedy, `otdistill.steps.teacher_answers`) and trains the teacher
      cache, the SFT baseline and every distilled student on those answers.
    * `few_shot`: how many training rows the teacher's prompt shows as solved examples (with their gold
      answers) before the row it answers; 0: zero-shot (a teacher tuned by `teacher_sft`). The shots are
      not training rows themselves. The teacher's logits in the cache are taken with the same prompt; the
      student's prompt stays zero-shot.
    * `seed`: which training rows are the shots (a fixed draw per seed).
    * `max_new_tokens`: the answer's budget in teacher tokens; None: `eval.max_new_tokens`.

    Cross-section rules (`RunConfig.check_whole`): "teacher" needs a teacher that can answer (few-shot or
    tuned); shots only with "teacher".
    """

    source: TargetSource = "gold"
    few_shot: int = 0
    seed: int = 0
    max_new_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.source not in ("gold", "teacher"):
            raise ValueError(f"targets.source must be 'gold' or 'teacher', got {self.source!r}")
        if self.few_shot < 0:
            raise ValueError(f"targets.few_shot must be >= 0, got {self.few_shot}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError(f"targets.max_new_tokens must be >= 1 or null, got {self.max_new_tokens}")

    @property
    def from_teacher(self) -> bool:
        return self.source == "teacher"
